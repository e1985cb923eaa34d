"""veilpix.adapters: one module per AI image vendor, and the registry that finds them.

>>> from veilpix.adapters import match
>>> vendor, region = match("eu.api.openai.com")
>>> vendor.name, region.name, region.country
('openai', 'eu', 'IE')

Each module defines ``VENDOR`` (a :class:`~veilpix.adapters.Vendor`). The registry is built
once, on first use. Config can override a vendor's base URL (an Azure resource, an on-prem
gateway, a loopback test server): see :func:`veilpix.Policy` and ``veilpix.toml``. Such hosts
come as a ``vendor_hosts`` mapping, which :func:`resolve` and :func:`vendor_name` ask before
the adapters' own hosts: the one lookup every door uses.

>>> vendor, region = resolve("gw.local", 8443, {"gw.local:8443": "openai"})
>>> vendor.name, region
('openai', None)
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from typing import Any

from veilpix.adapters._base import (
    OPENAI_ERRORS,
    Control,
    Endpoint,
    ErrorShape,
    ImageSlot,
    ModelField,
    Region,
    Vendor,
)

__all__ = [
    "VENDOR_MODULES",
    "Control",
    "Endpoint",
    "ErrorShape",
    "ImageSlot",
    "ModelField",
    "Region",
    "Vendor",
    "error_body",
    "get",
    "match",
    "resolve",
    "vendor_name",
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


def error_body(vendor: str, status: int, message: str, code: str) -> dict[str, Any]:
    """An error body in ``vendor``'s own shape (:class:`ErrorShape`), so its SDK raises its
    usual error type for a call veilpix answers itself; OpenAI's shape, which most SDKs
    read, for a name no adapter has (such as ``"-"`` or ``"unknown"``)."""
    try:
        shape = get(vendor).error_shape
    except KeyError:
        shape = OPENAI_ERRORS
    return shape.render(status, message, code)


def match(host: str) -> tuple[Vendor, Region] | None:
    """The vendor and region serving ``host``, or None for a host no adapter claims."""
    host = host.lower().rstrip(".")
    for vendor in vendors():
        region = vendor.region_for(host)
        if region is not None:
            return vendor, region
    return None


def resolve(
    host: str,
    port: int | None = None,
    vendor_hosts: Mapping[str, str] | None = None,
    *,
    name: str | None = None,
) -> tuple[Vendor, Region | None] | None:
    """The vendor serving ``host`` (at ``port``) and the region that host means, or None for
    a host neither ``vendor_hosts`` nor an adapter claims.

    ``vendor_hosts`` maps lower-case ``host:port`` or ``host`` names to registry names (a
    policy's hosts of Azure resources, gateways and test servers); it is asked first,
    ``host:port`` (when ``port`` is given) before ``host``, and the vendor it names comes
    with its region for ``host`` (None when none of its regions lists the host). Else the
    adapters' own host patterns decide (:func:`match`). ``host`` is compared in lower case.
    ``name``, when a door knows the vendor better than the host does (the gateway routes by
    path), wins over both. A name no adapter has raises ``KeyError`` (as :func:`get`).
    """
    host = host.lower()
    named = name or _named(host, port, vendor_hosts)
    if named is None:
        return match(host)
    vendor = get(named)
    return vendor, vendor.region_for(host)


def vendor_name(
    host: str, port: int | None = None, vendor_hosts: Mapping[str, str] | None = None
) -> str | None:
    """The registry name of the vendor :func:`resolve` finds for ``host`` and ``port``,
    without checking that a name ``vendor_hosts`` gives is registered (a door that hands the
    call to the guard leaves that check, and its refusal, to the guard)."""
    host = host.lower()
    named = _named(host, port, vendor_hosts)
    if named is not None:
        return named
    found = match(host)
    return found[0].name if found is not None else None


def _named(host: str, port: int | None, vendor_hosts: Mapping[str, str] | None) -> str | None:
    """What ``vendor_hosts`` says of ``host`` (lower case): ``host:port``, then ``host``."""
    if not vendor_hosts:
        return None
    by_port = vendor_hosts.get(f"{host}:{port}") if port is not None else None
    return by_port or vendor_hosts.get(host)
