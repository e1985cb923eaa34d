"""``GuardTransport`` / ``AsyncGuardTransport`` for httpx2 (openai 3.x, anthropic, google-genai, mistralai). Every request goes
through the veilpix core before the inner transport sends it; a blocked request raises
:class:`veilpix.RequestBlocked` before any byte is sent (or, with ``on_block="respond"``, is
answered with the vendor's own 403 error, as the gateway answers it).

    import httpx2, veilpix
    from veilpix.transports.httpx2 import GuardTransport

    http = httpx2.Client(transport=GuardTransport(policy=veilpix.Policy(faces="blur"), log="audit.db"))

Both classes are the one step of :mod:`veilpix.transports._guarded`, over httpx2's types.
"""

from __future__ import annotations

import httpx2  # noqa: TID253 - this module is the httpx-facing door: reached only with the library in use

from veilpix.transports._guarded import GuardedAsync, GuardedSync

__all__ = ["AsyncGuardTransport", "GuardTransport"]


class GuardTransport(GuardedSync[httpx2.Request, httpx2.Response], httpx2.BaseTransport):
    """Sanitize, apply policy and privacy controls, log, then send with ``transport``
    (default: httpx2's own ``HTTPTransport``). ``guard`` shares one core between transports."""

    _request_class = httpx2.Request
    _response_class = httpx2.Response
    _default_transport = httpx2.HTTPTransport


class AsyncGuardTransport(GuardedAsync[httpx2.Request, httpx2.Response], httpx2.AsyncBaseTransport):
    """The async twin of :class:`GuardTransport`; the core runs in a worker thread."""

    _request_class = httpx2.Request
    _response_class = httpx2.Response
    _default_transport = httpx2.AsyncHTTPTransport
