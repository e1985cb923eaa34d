"""How a door answers a request veilpix blocked, when it answers instead of raising: the
gateway always, the transports when asked to (``on_block="respond"``, the default of
:func:`veilpix.http_client`).

The answer is the vendor's own error (its :class:`~veilpix.adapters.ErrorShape`, status 403,
or 400 for a refused record header), so the vendor's SDK raises its usual permission error
and does not retry; the headers say which rule stopped the call and under which record it
is logged, and ``x-should-retry: false`` tells the SDKs that honour it (OpenAI's,
Anthropic's) not to try again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from veilpix import adapters
from veilpix._errors import RequestBlocked

__all__ = ["BLOCKED_HEADER", "RECORD_HEADER", "Refusal", "refusal"]

BLOCKED_HEADER = "x-veilpix-blocked"  # the rule that stopped the request
RECORD_HEADER = "x-veilpix-record"  # the transfer-log record of the block


@dataclass(frozen=True)
class Refusal:
    """A blocked request's answer: status, JSON body and headers (names in lower case)."""

    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...]


def refusal(exc: RequestBlocked, vendor: str | None = None) -> Refusal:
    """The answer to a request stopped by ``exc``, in the error shape of ``vendor`` (default:
    the vendor the receipt names; OpenAI's shape when none is known)."""
    status = 400 if exc.rule == "record.header" else 403
    text = f"blocked by veilpix: {exc.message}"
    if exc.hint and "pip install" in exc.hint:
        # an install hint names where this copy of veilpix lives: not the caller's business
        text = f"{text} (an optional part of veilpix is missing where it runs)"
    elif exc.hint:
        text = f"{text} ({exc.hint})"
    name = vendor or (exc.receipt.vendor if exc.receipt is not None else "-")
    headers = [(BLOCKED_HEADER, exc.rule), ("x-should-retry", "false")]
    if exc.record_id:
        headers.append((RECORD_HEADER, exc.record_id))
    return Refusal(status, adapters.error_body(name, status, text, exc.rule), tuple(headers))
