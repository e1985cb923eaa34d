"""What :class:`veilpix.Client` sends to each vendor and how it reads the answers: one module
per vendor, each declaring its :class:`~veilpix.client._steps.VendorSpec` as ``SPEC``.

A vendor module holds everything the Client knows of that vendor: where its API is, how the
key is read and sent, the names it goes by in ``vendor/model`` strings, and a *plan* for each
operation it supports (see :mod:`veilpix.client._steps`). Adding a vendor's Client support
is one new module here, listed in ``VENDORS`` under its adapter name
(``veilpix.adapters``), plus its tests. Request shapes follow the vendors' own SDKs and API
references, as collected in the project's vendor research notes (and the adapters'
``sources``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from veilpix._errors import ConfigError
from veilpix.client._steps import VendorSpec
from veilpix.client.plans import anthropic, bfl, fal, gemini, openai, replicate, stability

__all__ = ["VENDORS", "spec_for", "supported"]

# Keyed by adapter name, in the order error messages list them.
VENDORS: Mapping[str, VendorSpec] = MappingProxyType(
    {
        module.SPEC.name: module.SPEC
        for module in (openai, gemini, anthropic, stability, bfl, replicate, fal)
    }
)
# Every spelling of a vendor in a model name (its name, aliases and own model-id prefixes)
_NAMES = {
    name: spec
    for spec in VENDORS.values()
    for name in (spec.name, *spec.aliases, *spec.model_prefixes)
}
_MODEL_PREFIXES = frozenset(p for spec in VENDORS.values() for p in spec.model_prefixes)


def supported(operation: str) -> list[str]:
    """The vendors that support ``operation`` ("generate", "edit" or "describe")."""
    return [name for name, spec in VENDORS.items() if operation in spec.plans]


def spec_for(model: str, operation: str) -> tuple[VendorSpec, str]:
    """The vendor spec and the vendor's model name for a ``vendor/model`` string."""
    prefix, slash, rest = model.partition("/") if isinstance(model, str) else ("", "", "")
    vendors = ", ".join(supported(operation))
    if not slash or not rest:
        raise ConfigError(
            f"model {model!r} does not name its vendor",
            hint=f"write it as 'vendor/model'; {operation} supports: {vendors}",
        )
    if prefix.lower() in _MODEL_PREFIXES:
        rest = model
    spec = _NAMES.get(prefix.lower())
    if spec is None:
        raise ConfigError(
            f"veilpix.Client has no vendor {prefix!r}",
            hint=f"{operation} supports: {vendors}",
        )
    if operation not in spec.plans:
        raise ConfigError(
            f"{prefix} does not support {operation} in veilpix.Client",
            hint=f"{operation} supports: {vendors}",
        )
    return spec, rest
