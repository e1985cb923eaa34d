"""``veilpix.toml``: the settings file shared by the SDK, the CLI and the proxy.

So far it configures the transfer log and what the log records per vendor::

    [log]
    path = "/var/lib/veilpix/audit.db"   # --log and $VEILPIX_LOG win; default: user data folder
    key = "/etc/veilpix/audit.key"       # the key file (default: the log's path + ".key")
    checkpoint_every = 1000              # sign the chain head every N entries ...
    checkpoint_seconds = 60              # ... and every T seconds while writing
    encrypt_prompts = false              # also keep prompts, encrypted (erasable per subject)
    retention = "180d"                   # default age for `veilpix audit prune`

    [vendors.openai]
    transfer_mechanism = "EU-US Data Privacy Framework (adequacy decision)"

    [vendors.azure]
    base_url = "https://my-resource.openai.azure.com/openai/v1"  # Azure resource, gateway, test server

Unknown sections and keys are errors, not silently ignored: a typo in a privacy setting must
not quietly fall back to a default. The file is found at ``--config``, else ``$VEILPIX_CONFIG``;
nothing is read from the working folder unless named.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from veilpix._errors import ConfigError

__all__ = ["Config", "LogConfig", "VendorConfig", "load_config"]


@dataclass(frozen=True, kw_only=True)
class LogConfig:
    path: Path | None = None
    key: Path | None = None
    checkpoint_every: int = 1000
    checkpoint_seconds: float = 60.0
    encrypt_prompts: bool = False
    retention: str | None = None


@dataclass(frozen=True, kw_only=True)
class VendorConfig:
    transfer_mechanism: str | None = None
    base_url: str | None = None


@dataclass(frozen=True, kw_only=True)
class Config:
    """A parsed ``veilpix.toml``. ``source`` is the file it came from (None: built-in)."""

    log: LogConfig = field(default_factory=LogConfig)
    vendors: Mapping[str, VendorConfig] = field(default_factory=dict)
    source: Path | None = None

    @property
    def mechanisms(self) -> dict[str, str]:
        return {k: v.transfer_mechanism for k, v in self.vendors.items() if v.transfer_mechanism}

    @property
    def base_urls(self) -> dict[str, str]:
        """Vendor name -> base URL override, for the Client and the proxy."""
        return {k: v.base_url for k, v in self.vendors.items() if v.base_url}

    @property
    def vendor_hosts(self) -> dict[str, str]:
        """Host of each overridden base URL -> vendor, for ``Policy(vendor_hosts=...)``, so
        the guard knows whose host an Azure resource or a gateway is."""
        from urllib.parse import urlsplit

        return {
            (urlsplit(url).hostname or "").lower(): name for name, url in self.base_urls.items()
        }


def _check_keys(
    where: str, table: Mapping[str, Any], known: dict[str, type | tuple[type, ...]]
) -> None:
    for key, value in table.items():
        if key not in known:
            raise ConfigError(
                f"unknown setting {where}.{key}",
                hint=f"{where} takes: {', '.join(sorted(known))}",
            )
        want = known[key]
        if isinstance(value, bool) and want in (int, float, (int, float)):
            raise ConfigError(f"{where}.{key} must be a number, not {value!r}")
        if not isinstance(value, want):
            names = " or ".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))
            raise ConfigError(f"{where}.{key} must be a {names}, not {value!r}")


def _log(table: Mapping[str, Any], base: Path) -> LogConfig:
    _check_keys("log", table, {
        "path": str, "key": str, "checkpoint_every": int, "checkpoint_seconds": (int, float),
        "encrypt_prompts": bool, "retention": str,
    })  # fmt: skip

    def where(name: str) -> Path | None:
        if name not in table:
            return None
        path = Path(os.path.expandvars(table[name])).expanduser()
        return path if path.is_absolute() else base / path  # relative to the config file

    out = LogConfig(
        path=where("path"),
        key=where("key"),
        checkpoint_every=table.get("checkpoint_every", 1000),
        checkpoint_seconds=float(table.get("checkpoint_seconds", 60.0)),
        encrypt_prompts=table.get("encrypt_prompts", False),
        retention=table.get("retention"),
    )
    if out.checkpoint_every < 1 or out.checkpoint_seconds <= 0:
        raise ConfigError("log.checkpoint_every and log.checkpoint_seconds must be above 0")
    if out.retention is not None:
        from veilpix._audit import parse_age

        parse_age(out.retention)
    return out


def _check_vendor(name: str, table: Mapping[str, Any]) -> None:
    from urllib.parse import urlsplit

    from veilpix import adapters

    try:
        adapters.get(name)
    except KeyError as exc:
        raise ConfigError(
            f"[vendors.{name}] names no vendor veilpix knows",
            hint=f"known: {', '.join(v.name for v in adapters.vendors())}",
        ) from exc
    url = table.get("base_url")
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"vendors.{name}.base_url must be an http(s) URL, not {url!r}")


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read ``path`` (else ``$VEILPIX_CONFIG``; else the built-in defaults)."""
    if path is None:
        path = os.environ.get("VEILPIX_CONFIG") or None
    if path is None:
        return Config()
    file = Path(path).expanduser()
    try:
        doc = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {str(file)!r}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{str(file)!r} is not valid TOML: {exc}") from exc
    _check_keys("veilpix.toml", doc, {"log": dict, "vendors": dict})
    vendors: dict[str, VendorConfig] = {}
    for name, table in doc.get("vendors", {}).items():
        if not isinstance(table, dict):
            raise ConfigError(f"vendors.{name} must be a table ([vendors.{name}])")
        _check_keys(f"vendors.{name}", table, {"transfer_mechanism": str, "base_url": str})
        _check_vendor(name, table)
        vendors[name] = VendorConfig(**table)
    return Config(
        log=_log(doc.get("log", {}), file.absolute().parent), vendors=vendors, source=file
    )
