"""The veilpix transport step, written once for httpx and httpx2, sync and async.

Both libraries have the same request and transport API, so one definition serves both: each
library's module (``veilpix.transports.httpx``, ``veilpix.transports.httpx2``) declares its
``GuardTransport`` as ``GuardedSync`` over its own request and response types and its own
transport base class, and names the two classes of its library the step needs (its
``Request``, to carry the sanitized body, and its default inner transport). The protocols
below say what the step uses of a request, a response and an inner transport.

The step: read the body, let the guard prepare the request (destination policy, sanitizing,
privacy controls, the write-ahead record), send the rebuilt request with the inner
transport, then complete the record from the response head; a failure to send is recorded
too. The async twin runs the guard's CPU work and SQLite commits in a worker thread.

A blocked request raises :class:`~veilpix.RequestBlocked` (``on_block="raise"``, the
default of the transport classes) or is answered the way the gateway answers it
(``on_block="respond"``, the default of :func:`veilpix.http_client`): the vendor's own 403
error, which its SDK raises as its permission error without retrying, with the rule in the
``x-veilpix-blocked`` header and the receipt in the response's ``veilpix_receipt``
extension. Either way not a byte was sent and the block is logged once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

from veilpix._errors import ConfigError, RequestBlocked
from veilpix.guard import Guard, Outbound, Prepared, refusal

if TYPE_CHECKING:
    from veilpix._policy import Policy
    from veilpix.audit._log import AuditLog
    from veilpix.guard import Context

__all__ = ["CONTEXT", "RECEIPT", "GuardedAsync", "GuardedSync", "OnBlock"]

OnBlock = Literal["raise", "respond"]

# A request extension carrying a per-call ``veilpix.Context`` (who, why, model, prompt), for
# callers that share one transport between calls of different purposes (veilpix.Client does).
CONTEXT = "veilpix_context"
# The response extension the guard's :class:`~veilpix.Receipt` is put in.
RECEIPT = "veilpix_receipt"

# Recomputed by the library for the rebuilt request (the host may change with the region).
_DROP = ("host", "content-length", "transfer-encoding", "content-encoding")
_REQUEST_IDS = ("x-request-id", "request-id", "x-goog-request-id", "x-amzn-requestid", "cf-ray")


class _Headers(Protocol):
    def multi_items(self) -> list[tuple[str, str]]: ...


class Request(Protocol):
    """What the step reads of an ``httpx.Request`` or ``httpx2.Request``."""

    @property
    def method(self) -> str: ...
    @property
    def url(self) -> object: ...
    @property
    def headers(self) -> _Headers: ...
    @property
    def extensions(self) -> MutableMapping[str, Any]: ...
    def read(self) -> bytes: ...
    async def aread(self) -> bytes: ...


class Response(Protocol):
    """What the step reads (and marks) of an ``httpx.Response`` or ``httpx2.Response``."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def extensions(self) -> MutableMapping[str, Any]: ...


Req = TypeVar("Req", bound=Request)
Resp = TypeVar("Resp", bound=Response)
_Req_contra = TypeVar("_Req_contra", contravariant=True)
_Resp_co = TypeVar("_Resp_co", covariant=True)


class Sender(Protocol[_Req_contra, _Resp_co]):
    """An inner synchronous transport (``httpx2.HTTPTransport``, ``MockTransport``, ...)."""

    def handle_request(self, request: _Req_contra) -> _Resp_co: ...
    def close(self) -> None: ...


class AsyncSender(Protocol[_Req_contra, _Resp_co]):
    """An inner asynchronous transport (``httpx2.AsyncHTTPTransport``, ...)."""

    async def handle_async_request(self, request: _Req_contra) -> _Resp_co: ...
    async def aclose(self) -> None: ...


def _outbound(request: Request, body: bytes) -> Outbound:
    """The door-neutral form of a request whose body has been read."""
    return Outbound(request.method, str(request.url), list(request.headers.multi_items()), body)


def _rebuild(new: Callable[..., Req], request: Req, prepared: Prepared) -> Req:
    """A new library request carrying the sanitized body; timeouts and other extensions kept."""
    out = prepared.request
    headers = [(k, v) for k, v in out.headers if k.lower() not in _DROP]
    extensions = {k: v for k, v in request.extensions.items() if k != CONTEXT}
    return new(out.method, out.url, headers=headers, content=out.body, extensions=extensions)


def _finish_facts(response: Response) -> dict[str, Any]:
    """What the transfer record's finish takes from the response head (the body may still
    stream)."""
    headers = response.headers
    length = headers.get("content-length")
    return {
        "status": response.status_code,
        "response_bytes": int(length) if length and length.isdigit() else None,
        "vendor_request_id": next((headers[h] for h in _REQUEST_IDS if h in headers), None),
    }


def _finish(prepared: Prepared, response: Response) -> None:
    """Complete the transfer record from the response head."""
    prepared.finish(**_finish_facts(response))
    response.extensions[RECEIPT] = prepared.receipt


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _answer(new: Callable[..., Resp], request: Request, exc: RequestBlocked) -> Resp:
    """The vendor-shaped answer to a blocked request (see the module docstring)."""
    answer = refusal(exc)
    return new(
        answer.status,
        headers=list(answer.headers),
        json=answer.body,
        request=request,
        extensions={RECEIPT: exc.receipt},
    )


def _on_block(value: str) -> OnBlock:
    if value not in ("raise", "respond"):
        raise ConfigError(
            f"on_block must be 'raise' or 'respond', got {value!r}",
            hint="'raise' raises veilpix.RequestBlocked; 'respond' answers with the vendor's "
            "own 403 error",
        )
    return "raise" if value == "raise" else "respond"


def _guard(
    guard: Guard | None,
    policy: Policy | None,
    log: AuditLog | str | os.PathLike[str] | None,
    context: Context | None,
) -> Guard:
    return guard if guard is not None else Guard(policy, log, context=context)


class GuardedSync(Generic[Req, Resp]):
    """The synchronous step: the core, then the inner transport, then the record.

    ``transport`` is the inner transport that finally sends (default: the library's own);
    ``guard`` shares one core between transports, else one is made from ``policy``, ``log``
    and ``context``; ``on_block`` says how a blocked request ends (module docstring)."""

    # set by each library's transport class
    _request_class: Callable[..., Req]
    _response_class: Callable[..., Resp]
    _default_transport: Callable[[], Sender[Req, Resp]]

    def __init__(
        self,
        transport: Sender[Req, Resp] | None = None,
        *,
        policy: Policy | None = None,
        log: AuditLog | str | os.PathLike[str] | None = None,
        context: Context | None = None,
        guard: Guard | None = None,
        on_block: OnBlock = "raise",
    ) -> None:
        self._inner = transport if transport is not None else self._default_transport()
        self.guard = _guard(guard, policy, log, context)
        self.on_block = _on_block(on_block)

    def handle_request(self, request: Req) -> Resp:
        context = request.extensions.get(CONTEXT)
        try:
            prepared = self.guard.prepare(_outbound(request, request.read()), context=context)
        except RequestBlocked as exc:
            if self.on_block == "raise":
                raise
            return _answer(self._response_class, request, exc)
        try:
            response = self._inner.handle_request(_rebuild(self._request_class, request, prepared))
        except BaseException as exc:
            prepared.fail(_failure(exc))
            raise
        _finish(prepared, response)
        return response

    def close(self) -> None:
        self._inner.close()


class GuardedAsync(Generic[Req, Resp]):
    """The async twin of :class:`GuardedSync`, on the core's async route
    (:meth:`Guard.aprepare`): light checks on the event loop, images on a worker thread."""

    _request_class: Callable[..., Req]
    _response_class: Callable[..., Resp]
    _default_transport: Callable[[], AsyncSender[Req, Resp]]

    def __init__(
        self,
        transport: AsyncSender[Req, Resp] | None = None,
        *,
        policy: Policy | None = None,
        log: AuditLog | str | os.PathLike[str] | None = None,
        context: Context | None = None,
        guard: Guard | None = None,
        on_block: OnBlock = "raise",
    ) -> None:
        self._inner = transport if transport is not None else self._default_transport()
        self.guard = _guard(guard, policy, log, context)
        self.on_block = _on_block(on_block)

    async def handle_async_request(self, request: Req) -> Resp:
        body = await request.aread()
        context = request.extensions.get(CONTEXT)
        try:
            prepared = await self.guard.aprepare(_outbound(request, body), context=context)
        except RequestBlocked as exc:
            if self.on_block == "raise":
                raise
            return _answer(self._response_class, request, exc)
        try:
            response = await self._inner.handle_async_request(
                _rebuild(self._request_class, request, prepared)
            )
        except BaseException as exc:
            await prepared.afail(_failure(exc))
            raise
        await prepared.afinish(**_finish_facts(response))
        response.extensions[RECEIPT] = prepared.receipt
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
