"""veilpix.adapters: one module per AI image vendor, and the registry that finds them.

>>> from veilpix.adapters import match
>>> vendor, region = match("eu.api.openai.com")
>>> vendor.name, region.name, region.country
('openai', 'eu', 'IE')

Each module defines ``VENDOR`` (a :class:`~veilpix.adapters.Vendor`). The registry is built
once, on first use. Config can override a vendor's base URL (an Azure resource, an on-prem
gateway, a loopback test server): see :func:`veilpix.Policy` and ``veilpix.toml``.
"""

from __future__ import annotations

import importlib
from functools import cache

from veilpix.adapters._base import Control, Endpoint, ImageSlot, ModelField, Region, Vendor

__all__ = [
    "VENDOR_MODULES",
    "Control",
    "Endpoint",
    "ImageSlot",
    "ModelField",
    "Region",
    "Vendor",
    "get",
    "match",
    "vendors",
]

VENDOR_MODULES = (
    "openai",
    "azure_openai",
    "gemini",
    "vertex",
    "anthropic",
    "stability",
    "replicate",
    "fal",
    "bfl",
    "ideogram",
    "mistral",
)


@cache
def vendors() -> tuple[Vendor, ...]:
    """Every registered vendor, in registry order."""
    out = []
    for name in VENDOR_MODULES:
        module = importlib.import_module(f"veilpix.adapters.{name}")
        out.append(module.VENDOR)
    return tuple(out)


def get(name: str) -> Vendor:
    """The vendor registered as ``name`` (``KeyError`` with the known names otherwise)."""
    for vendor in vendors():
        if vendor.name == name:
            return vendor
    known = ", ".join(v.name for v in vendors())
    raise KeyError(f"no vendor {name!r}; known: {known}")


def match(host: str) -> tuple[Vendor, Region] | None:
    """The vendor and region serving ``host``, or None for a host no adapter claims."""
    host = host.lower().rstrip(".")
    for vendor in vendors():
        region = vendor.region_for(host)
        if region is not None:
            return vendor, region
    return None
