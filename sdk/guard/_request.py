"""What a door and the core hand each other: the request (:class:`Outbound`), who sends it
and why (:class:`Context`), the request ready to send with its record begun
(:class:`Prepared`), and what veilpix did to it (:class:`Receipt`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from veilpix.audit._log import PendingTransfer
    from veilpix.image._report import ImageReport

__all__ = ["Context", "Outbound", "Prepared", "Receipt"]


@dataclass
class Outbound:
    """A door-neutral HTTP request. Header names keep their case; lookups ignore it."""

    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        low = name.lower()
        for key, value in self.headers:
            if key.lower() == low:
                return value
        return None

    def set_header(self, name: str, value: str) -> None:
        self.set_headers([(name, value)])

    def set_headers(self, pairs: Iterable[tuple[str, str]], *, drop: Iterable[str] = ()) -> None:
        """Drop the headers named in ``drop``, then :meth:`set_header` each pair in turn
        (a later pair replaces an earlier one of the same name), in one pass."""
        final: dict[str, tuple[str, str]] = {}
        for name, value in pairs:
            low = name.lower()
            final.pop(low, None)  # re-inserted last, as a second set_header would put it
            final[low] = (name, value)
        gone = final.keys() | {n.lower() for n in drop}
        self.headers = [(k, v) for k, v in self.headers if k.lower() not in gone]
        self.headers.extend(final.values())

    def drop_header(self, *names: str) -> None:
        self.set_headers((), drop=names)


@dataclass(frozen=True, kw_only=True)
class Context:
    """Who is calling and why: recorded with every transfer (see ``veilpix.Transfer``).

    ``model`` and ``prompt``, when the door knows them, win over what the request says.
    ``record_headers`` names the record fields (``purpose``, ``legal_basis``, ``subject``,
    ``consent``) a request may set itself with ``X-Veilpix-Purpose``,
    ``X-Veilpix-Legal-Basis``, ``X-Veilpix-Subject`` and ``X-Veilpix-Consent``; a request
    carrying any other of them is refused (by default: all of them)."""

    app: str | None = None
    actor: str | None = None
    client: str | None = None
    purpose: str | None = None
    legal_basis: str | None = None
    consent_ref: str | None = None
    subject_ref: str | None = None
    retention: str = "standard"
    door: str = "transport"
    model: str | None = None
    prompt: str | None = field(default=None, repr=False)
    record_headers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Receipt:
    """What veilpix did to one request: where it went, what it removed, which controls."""

    record_id: str | None
    vendor: str
    operation: str | None
    host: str
    region: str | None
    country: str | None
    legal_entity: str | None
    images: tuple[ImageReport, ...] = ()
    controls_applied: tuple[str, ...] = ()
    controls_account_level: tuple[str, ...] = ()
    controls_unavailable: tuple[str, ...] = ()
    remote_images: tuple[tuple[str, str], ...] = ()  # (URL without credentials, what was done)
    blocked: str | None = None  # the rule that stopped the request (nothing was sent), else None

    @property
    def removed(self) -> dict[str, int]:
        """Metadata categories found (and removed) across the request's images."""
        out: dict[str, int] = {}
        for report in self.images:
            for cat, n in report.categories().items():
                out[cat] = out.get(cat, 0) + n
        return out


class Prepared:
    """A request ready to send, with its transfer record begun. Call :meth:`finish` (or
    :meth:`fail`) once the call is over."""

    def __init__(self, request: Outbound, receipt: Receipt, pending: PendingTransfer) -> None:
        self.request = request
        self.receipt = receipt
        self._pending = pending

    def finish(
        self,
        *,
        status: int | None,
        response_bytes: int | None = None,
        vendor_request_id: str | None = None,
    ) -> None:
        self._pending.finish(
            status=status,
            response_bytes=response_bytes,
            request_bytes=len(self.request.body),
            vendor_request_id=vendor_request_id,
        )

    def fail(self, reason: str) -> None:
        if not self._pending.finished:
            self._pending.fail(reason[:500])

    def finish_nowait(self, *, status: int | None, vendor_request_id: str | None = None) -> None:
        """:meth:`finish` queued for the log's writer thread, returning at once: what async
        doors use (see :meth:`veilpix.PendingTransfer.finish_nowait`)."""
        self._pending.finish_nowait(
            status=status,
            request_bytes=len(self.request.body),
            vendor_request_id=vendor_request_id,
        )

    async def afinish(
        self,
        *,
        status: int | None,
        response_bytes: int | None = None,
        vendor_request_id: str | None = None,
    ) -> None:
        """:meth:`finish` for async code: committed by the log's writer thread while the
        event loop goes on."""
        await self._pending.afinish(
            status=status,
            response_bytes=response_bytes,
            request_bytes=len(self.request.body),
            vendor_request_id=vendor_request_id,
        )

    async def afail(self, reason: str) -> None:
        if not self._pending.finished:
            await self._pending.afail(reason[:500])
