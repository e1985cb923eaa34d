"""Ready-made httpx2 clients with veilpix in front, for SDKs that take ``http_client=``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from veilpix.transports._guarded import OnBlock
from veilpix.transports.httpx2 import AsyncGuardTransport, GuardTransport

if TYPE_CHECKING:
    import httpx2

    from veilpix._policy import Policy
    from veilpix.audit._log import AuditLog
    from veilpix.guard import Context

__all__ = ["async_http_client", "http_client"]

# Image generation and editing calls take tens of seconds; httpx2's 5 s default would cut them.
_TIMEOUT = {"timeout": 600.0, "connect": 15.0}


def http_client(
    *,
    policy: Policy | None = None,
    log: AuditLog | str | os.PathLike[str] | None = None,
    context: Context | None = None,
    transport: httpx2.BaseTransport | None = None,
    on_block: OnBlock = "respond",
    **kwargs: Any,
) -> httpx2.Client:
    """An ``httpx2.Client`` whose every request goes through veilpix:

    >>> client = openai.OpenAI(http_client=veilpix.http_client(policy=veilpix.Policy(faces="blur")))

    ``transport`` is the inner transport that finally sends (default httpx2's own);
    other keyword arguments go to ``httpx2.Client``.

    A request veilpix blocks is answered the way the gateway answers it
    (``on_block="respond"``): the vendor's own 403 error, so the SDK raises its permission
    error (``openai.PermissionDeniedError``, ``anthropic.PermissionDeniedError``, ...) once,
    without retrying; the response's ``x-veilpix-blocked`` header names the rule. Pass
    ``on_block="raise"`` to get :class:`veilpix.RequestBlocked` instead (the SDKs wrap it in
    their connection error and retry it)."""
    import httpx2

    kwargs.setdefault("timeout", httpx2.Timeout(_TIMEOUT["timeout"], connect=_TIMEOUT["connect"]))
    guard = GuardTransport(transport, policy=policy, log=log, context=context, on_block=on_block)
    return httpx2.Client(transport=guard, **kwargs)


def async_http_client(
    *,
    policy: Policy | None = None,
    log: AuditLog | str | os.PathLike[str] | None = None,
    context: Context | None = None,
    transport: httpx2.AsyncBaseTransport | None = None,
    on_block: OnBlock = "respond",
    **kwargs: Any,
) -> httpx2.AsyncClient:
    """The ``httpx2.AsyncClient`` counterpart of :func:`http_client`."""
    import httpx2

    kwargs.setdefault("timeout", httpx2.Timeout(_TIMEOUT["timeout"], connect=_TIMEOUT["connect"]))
    guard = AsyncGuardTransport(
        transport, policy=policy, log=log, context=context, on_block=on_block
    )
    return httpx2.AsyncClient(transport=guard, **kwargs)
