"""What both proxy doors and the server protocol say the same way: the ASGI message types,
veilpix's own header and route names, the vendor-shaped error body (:func:`vendor_error`,
from each adapter's :class:`~veilpix.adapters.ErrorShape`) and the small JSON and text
answers the doors give themselves.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from veilpix import adapters

__all__ = [
    "APP_HEADER",
    "DISCONNECT",
    "HEALTH_PATH",
    "METRICS_PATH",
    "METRICS_TYPE",
    "OWN_PREFIX",
    "TOKEN_HEADER",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "reply",
    "reply_text",
    "vendor_error",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# The request headers veilpix reads itself and never forwards (names in lower case).
TOKEN_HEADER = "x-veilpix-token"  # noqa: S105 - a header name, not a secret
APP_HEADER = "x-veilpix-app"
OWN_PREFIX = "x-veilpix-"  # every header of veilpix's own begins so (record headers too)

# veilpix's own routes, answered on both doors' addresses.
HEALTH_PATH = "/_veilpix/health"
METRICS_PATH = "/_veilpix/metrics"
METRICS_TYPE = "text/plain; version=0.0.4"  # Prometheus' text format

# The scope extension through which veilpix's uvicorn protocol reports a lost connection: a
# list of callbacks the app may append to (and remove from); see veilpix.proxy._http.
DISCONNECT = "veilpix.disconnect"


vendor_error = adapters.error_body  # (its name in the proxy's API)


async def reply(
    send: Send, status: int, body: Any, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """A whole JSON answer (``headers`` come after the content type and length)."""
    await reply_text(send, status, json.dumps(body), "application/json", headers)


async def reply_text(
    send: Send,
    status: int,
    text: str,
    content_type: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """A whole answer of ``text`` as ``content_type``."""
    data = text.encode()
    fields = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": status, "headers": [*fields, *headers]})
    await send({"type": "http.response.body", "body": data, "more_body": False})
