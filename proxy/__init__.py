"""veilpix.proxy: the local gateway (see docs/proxy.md). Needs the 'proxy' extra for serving
(uvicorn); the ASGI app itself only needs veilpix."""

from __future__ import annotations

from veilpix.proxy._gateway import Gateway, vendor_error
from veilpix.proxy._metrics import Metrics
from veilpix.proxy._serve import build_gateway, serve
from veilpix.proxy._upstream import UpstreamError, UpstreamPool, UpstreamResponse

__all__ = [
    "Gateway",
    "Metrics",
    "UpstreamError",
    "UpstreamPool",
    "UpstreamResponse",
    "build_gateway",
    "serve",
    "vendor_error",
]
