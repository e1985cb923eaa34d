"""What the httpx2 and httpx transports share: both libraries have the same request and
transport API, so one set of functions serves both (``lib`` is the module)."""

from __future__ import annotations

from typing import Any

from veilpix.guard._guard import Guard, Outbound, Prepared

__all__ = ["CONTEXT", "ahandle", "guard_for", "handle"]

# A request extension carrying a per-call ``veilpix.Context`` (who, why, model, prompt), for
# callers that share one transport between calls of different purposes (veilpix.Client does).
CONTEXT = "veilpix_context"

# Recomputed by the library for the rebuilt request (the host may change with the region).
_DROP = ("host", "content-length", "transfer-encoding", "content-encoding")


def outbound(request: Any, body: bytes) -> Outbound:
    """The door-neutral form of an httpx/httpx2 request whose body has been read."""
    return Outbound(request.method, str(request.url), list(request.headers.multi_items()), body)


def rebuild(lib: Any, request: Any, prepared: Prepared) -> Any:
    """A new library request carrying the sanitized body; timeouts and other extensions kept."""
    out = prepared.request
    headers = [(k, v) for k, v in out.headers if k.lower() not in _DROP]
    extensions = {k: v for k, v in request.extensions.items() if k != CONTEXT}
    return lib.Request(
        out.method, out.url, headers=headers, content=out.body, extensions=extensions
    )


def finish(prepared: Prepared, response: Any) -> None:
    """Complete the transfer record from the response head (the body may still stream)."""
    length = response.headers.get("content-length")
    prepared.finish(
        status=response.status_code,
        response_bytes=int(length) if length and length.isdigit() else None,
        vendor_request_id=next(
            (response.headers[h] for h in _REQUEST_IDS if h in response.headers), None
        ),
    )
    response.extensions["veilpix_receipt"] = prepared.receipt


_REQUEST_IDS = ("x-request-id", "request-id", "x-goog-request-id", "x-amzn-requestid", "cf-ray")


def guard_for(guard: Guard | None, policy: Any, log: Any, context: Any) -> Guard:
    if guard is not None:
        return guard
    return Guard(policy, log, context=context)


def handle(lib: Any, guard: Guard, inner: Any, request: Any) -> Any:
    """The synchronous transport step: core, then the inner transport, then the record."""
    context = request.extensions.get(CONTEXT)
    prepared = guard.prepare(outbound(request, request.read()), context=context)
    try:
        response = inner.handle_request(rebuild(lib, request, prepared))
    except BaseException as exc:
        prepared.fail(f"{type(exc).__name__}: {exc}")
        raise
    finish(prepared, response)
    return response


async def ahandle(lib: Any, guard: Guard, inner: Any, request: Any) -> Any:
    """The async step; the core (CPU work, SQLite commits) runs in a worker thread."""
    import anyio.to_thread

    body = await request.aread()
    context = request.extensions.get(CONTEXT)
    prepared = await anyio.to_thread.run_sync(
        lambda: guard.prepare(outbound(request, body), context=context)
    )
    try:
        response = await inner.handle_async_request(rebuild(lib, request, prepared))
    except BaseException as exc:
        await anyio.to_thread.run_sync(prepared.fail, f"{type(exc).__name__}: {exc}")
        raise
    await anyio.to_thread.run_sync(finish, prepared, response)
    return response
