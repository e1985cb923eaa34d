"""``GuardTransport`` / ``AsyncGuardTransport`` for httpx (replicate, fal-client, google-genai with httpx). Every request goes
through the veilpix core before the inner transport sends it; a blocked request raises
:class:`veilpix.RequestBlocked` before any byte is sent (or, with ``on_block="respond"``, is
answered with the vendor's own 403 error, as the gateway answers it).

    import httpx, veilpix
    from veilpix.transports.httpx import GuardTransport

    http = httpx.Client(transport=GuardTransport(policy=veilpix.Policy(faces="blur"), log="audit.db"))

Both classes are the one step of :mod:`veilpix.transports._guarded`, over httpx's types.
"""

from __future__ import annotations

import httpx  # noqa: TID253 - this module is the httpx-facing door: reached only with the library in use

from veilpix.transports._guarded import GuardedAsync, GuardedSync

__all__ = ["AsyncGuardTransport", "GuardTransport"]


class GuardTransport(GuardedSync[httpx.Request, httpx.Response], httpx.BaseTransport):
    """Sanitize, apply policy and privacy controls, log, then send with ``transport``
    (default: httpx's own ``HTTPTransport``). ``guard`` shares one core between transports."""

    _request_class = httpx.Request
    _response_class = httpx.Response
    _default_transport = httpx.HTTPTransport


class AsyncGuardTransport(GuardedAsync[httpx.Request, httpx.Response], httpx.AsyncBaseTransport):
    """The async twin of :class:`GuardTransport`; the core runs in a worker thread."""

    _request_class = httpx.Request
    _response_class = httpx.Response
    _default_transport = httpx.AsyncHTTPTransport
