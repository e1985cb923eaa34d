"""How :class:`veilpix.Client` turns a vendor's error answer into a :class:`~veilpix.VendorError`.

The message and code are read from the error body in whichever of the vendors' shapes it
comes (``error.message`` for OpenAI, Gemini and Anthropic; an ``error`` string for Replicate
and fal; RFC 7807 ``detail`` for BFL, fal and Replicate; ``errors`` for Stability); the HTTP
status picks the subclass, and ``Retry-After`` says when a 429 may be retried.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from veilpix._errors import (
    VendorAuthError,
    VendorBadRequest,
    VendorError,
    VendorRateLimited,
    VendorUnavailable,
)

if TYPE_CHECKING:
    from veilpix.client._steps import Call

__all__ = ["error_for", "message_in", "request_id", "retry_after", "vendor_message"]

_REQUEST_ID_HEADERS = (
    "x-request-id",
    "request-id",
    "x-fal-request-id",
    "x-goog-request-id",
    "x-amzn-requestid",
)
_MODERATION_CODES = frozenset(
    {"content_moderation", "moderation_blocked", "content_policy_violation", "content_filter"}
)


def request_id(headers: Mapping[str, str]) -> str | None:
    """The request id a vendor put in its answer headers (lower-case names), if any."""
    return next((headers[h] for h in _REQUEST_ID_HEADERS if h in headers), None)


def message_in(doc: Any) -> tuple[str | None, str | None]:
    """The vendor's message and error code in an error body of any of the vendors."""
    if not isinstance(doc, dict):
        return (str(doc)[:500] if doc not in (None, "") else None), None
    err = doc.get("error")
    code: Any = None
    message: Any = None
    if isinstance(err, dict):  # OpenAI, Gemini, Anthropic
        message = err.get("message") or err.get("detail")
        code = err.get("code") if isinstance(err.get("code"), str) else None
        code = code or err.get("status") or err.get("type")
    elif isinstance(err, str) and err:  # Replicate predictions, fal status
        message, code = err, doc.get("error_type")
    detail = doc.get("detail")
    if message is None and isinstance(detail, str):  # BFL, fal, Replicate (RFC 7807)
        message = detail
        if isinstance(doc.get("title"), str) and doc["title"] not in detail:
            message = f"{doc['title']}: {detail}"
    elif message is None and isinstance(detail, list):  # FastAPI validation errors (BFL, fal)
        bits = []
        for entry in detail[:5]:
            item = entry if isinstance(entry, dict) else {}
            where = ".".join(str(p) for p in item.get("loc") or [] if p != "body")
            bits.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
        message = "; ".join(bits) or None
    if message is None and isinstance(doc.get("errors"), list):  # Stability
        message = "; ".join(str(e) for e in doc["errors"][:5]) or None
        code = code or doc.get("name")
    if message is None:
        message = doc.get("message") or doc.get("title")
    code = code or doc.get("name") or doc.get("code")
    return (str(message)[:2000] if message else None), (str(code) if code else None)


def vendor_message(body: bytes) -> tuple[str | None, str | None]:
    """The message and code in an error body: JSON of any vendor's shape, or plain text."""
    try:
        doc = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        if text.lstrip()[:1] == "<":  # an HTML error page from a load balancer
            return None, None
        return (text[:500] or None), None
    return message_in(doc)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (OpenAI) or ``Retry-After`` (RFC 9110:
    seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def error_for(call: Call, status: int, headers: Mapping[str, str], body: bytes) -> VendorError:
    """The :class:`VendorError` for an HTTP error answer, with the vendor's own message."""
    message, code = vendor_message(body)
    rid = request_id(headers)
    text = f"{call.display} answered HTTP {status}" + (f": {message}" if message else "")
    moderated = code is not None and code.lower() in _MODERATION_CODES
    common: dict[str, Any] = {
        "vendor": call.vendor,
        "status": status,
        "vendor_message": message,
        "code": code,
        "request_id": rid,
    }
    if status == 429:
        return VendorRateLimited(text, retry_after=retry_after(headers), **common)
    if status in (401, 403) and not moderated:
        return VendorAuthError(text, **common)
    if status in (400, 404, 413, 422) or moderated:
        return VendorBadRequest(text, **common)
    if status == 408 or status >= 500:
        return VendorUnavailable(text, **common)
    return VendorError(text, **common)
