"""veilpix.proxy: the local gateway (see docs/proxy.md). Needs the 'proxy' extra for serving
(uvicorn); the ASGI app itself only needs veilpix.

The serving side (:func:`build_gateway`, :func:`serve`: the transfer log, the intercept
proxy's CA and door, uvicorn's protocol) is imported on first use, so that an app that only
mounts the :class:`Gateway` does not pay for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from veilpix.proxy._asgi import vendor_error
from veilpix.proxy._gateway import Gateway, Route
from veilpix.proxy._metrics import Metrics
from veilpix.proxy._upstream import UpstreamError, UpstreamPool, UpstreamResponse

if TYPE_CHECKING:
    from veilpix.proxy._serve import build_gateway, serve

__all__ = [
    "Gateway",
    "Metrics",
    "Route",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamResponse",
    "build_gateway",
    "serve",
    "vendor_error",
]

_SERVING = ("build_gateway", "serve")


def __getattr__(name: str) -> Any:
    if name not in _SERVING:
        raise AttributeError(f"module 'veilpix.proxy' has no attribute {name!r}")
    value = getattr(importlib.import_module("veilpix.proxy._serve"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
