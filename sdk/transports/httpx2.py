"""``GuardTransport`` / ``AsyncGuardTransport`` for httpx2 (openai 3.x, anthropic, google-genai, mistralai). Every request goes
through the veilpix core before the inner transport sends it; a blocked request raises
:class:`veilpix.RequestBlocked` before any byte is sent.

    import httpx2, veilpix
    from veilpix.transports.httpx2 import GuardTransport

    http = httpx2.Client(transport=GuardTransport(policy=veilpix.Policy(faces="blur"), log="audit.db"))
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import httpx2

from veilpix.transports._common import ahandle, guard_for, handle

if TYPE_CHECKING:
    from veilpix._policy import Policy
    from veilpix.audit._log import AuditLog
    from veilpix.guard._guard import Context, Guard

__all__ = ["AsyncGuardTransport", "GuardTransport"]


class GuardTransport(httpx2.BaseTransport):
    """Sanitize, apply policy and privacy controls, log, then send with ``transport``
    (default: httpx2's own ``HTTPTransport``). ``guard`` shares one core between transports."""

    def __init__(
        self,
        transport: httpx2.BaseTransport | None = None,
        *,
        policy: Policy | None = None,
        log: AuditLog | str | os.PathLike[str] | None = None,
        context: Context | None = None,
        guard: Guard | None = None,
    ) -> None:
        self._inner = transport if transport is not None else httpx2.HTTPTransport()
        self.guard = guard_for(guard, policy, log, context)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response: httpx2.Response = handle(httpx2, self.guard, self._inner, request)
        return response

    def close(self) -> None:
        self._inner.close()


class AsyncGuardTransport(httpx2.AsyncBaseTransport):
    """The async twin of :class:`GuardTransport`; the core runs in a worker thread."""

    def __init__(
        self,
        transport: httpx2.AsyncBaseTransport | None = None,
        *,
        policy: Policy | None = None,
        log: AuditLog | str | os.PathLike[str] | None = None,
        context: Context | None = None,
        guard: Guard | None = None,
    ) -> None:
        self._inner = transport if transport is not None else httpx2.AsyncHTTPTransport()
        self.guard = guard_for(guard, policy, log, context)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response: httpx2.Response = await ahandle(httpx2, self.guard, self._inner, request)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
