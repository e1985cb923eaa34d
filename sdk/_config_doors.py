"""The ``[proxy]`` and ``[intercept]`` sections of ``veilpix.toml`` (the two doors that
listen), and the checks every section of the file uses."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from veilpix._errors import ConfigError
from veilpix._net import check_domain, covered, is_dns_name, permitted_domains

__all__ = [
    "DEFAULT_INTERCEPT_PORT",
    "DEFAULT_TOKEN_ENV",
    "InterceptConfig",
    "ProxyConfig",
    "check_keys",
    "intercept_table",
    "proxy_table",
    "strings",
    "table_path",
]

DEFAULT_TOKEN_ENV = "VEILPIX_PROXY_TOKEN"  # noqa: S105 - the name of a variable, not a secret
DEFAULT_INTERCEPT_PORT = 8788


@dataclass(frozen=True, kw_only=True)
class ProxyConfig:
    host: str = "127.0.0.1"
    port: int = 8787
    max_body: int = 64 * 1024 * 1024
    max_connections: int = 256  # open connections at which requests get 503 (health: answered)
    max_connections_per_client: int = 32  # per client address (IPv6: /64); more: a quick 503
    header_timeout: float = 10.0  # from the accept (or a kept-alive request's first byte)
    idle_timeout: float = 30.0  # kept-alive connection between requests; a pause in a body
    min_body_rate: int = 8192  # bytes/s a request body must average after idle_timeout
    max_image_memory: int = 512 * 1024 * 1024  # estimated bytes of requests in progress
    workers: int = 1  # processes serving the one port (0: one per core)
    allow_remote: bool = False
    token_env: str = DEFAULT_TOKEN_ENV

    @property
    def token(self) -> str | None:
        """The client token from the environment (``token_env``), or None."""
        return os.environ.get(self.token_env) or None


@dataclass(frozen=True, kw_only=True)
class InterceptConfig:
    """``[intercept]``: the ``HTTPS_PROXY`` mode and its name-constrained local CA.

    ``extra_domains`` are DNS names the CA may sign for besides the vendors' (each with its
    subdomains; baked into the CA certificate, so a change needs ``veilpix ca rotate``).
    ``only_vendors`` refuses CONNECT to hosts the CA does not cover instead of tunnelling
    them untouched. ``upstream_ca`` is a PEM file trusted for upstream connections besides the
    system roots; ``upstream_hosts`` maps a vendor host to the ``(host, port)`` to dial instead
    (tests, air-gapped mirrors); TLS to it is still verified for the vendor's name."""

    port: int = DEFAULT_INTERCEPT_PORT
    ca_dir: Path | None = None
    extra_domains: tuple[str, ...] = ()
    only_vendors: bool = False
    upstream_ca: Path | None = None
    upstream_hosts: Mapping[str, tuple[str, int]] = field(default_factory=dict)


def check_keys(
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


def table_path(table: Mapping[str, Any], name: str, base: Path) -> Path | None:
    """The path ``table[name]`` names ($VARS and ~ expanded), relative to the config file's
    folder; None when the key is absent."""
    if name not in table:
        return None
    path = Path(os.path.expandvars(table[name])).expanduser()
    return path if path.is_absolute() else base / path


def strings(where: str, values: list[Any]) -> list[str]:
    for value in values:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a list of strings, not {values!r}")
    return values


def proxy_table(table: Mapping[str, Any]) -> ProxyConfig:
    check_keys(
        "proxy",
        table,
        {
            "host": str,
            "port": int,
            "max_body": int,
            "allow_remote": bool,
            "token_env": str,
            "max_connections": int,
            "workers": int,
            "max_connections_per_client": int,
            "header_timeout": (int, float),
            "idle_timeout": (int, float),
            "min_body_rate": int,
            "max_image_memory": int,
        },
    )
    values = dict(table)
    for name in ("header_timeout", "idle_timeout"):
        if name in values:
            values[name] = float(values[name])
    out = ProxyConfig(**values)
    if not 0 <= out.port <= 65535:
        raise ConfigError(f"proxy.port must be from 0 to 65535, not {out.port}")
    if out.max_body <= 0:
        raise ConfigError(f"proxy.max_body must be above 0, not {out.max_body}")
    for name in (
        "max_connections",
        "max_connections_per_client",
        "min_body_rate",
        "max_image_memory",
    ):
        if getattr(out, name) <= 0:
            raise ConfigError(f"proxy.{name} must be above 0, not {getattr(out, name)}")
    for name in ("header_timeout", "idle_timeout"):
        seconds = getattr(out, name)
        if not 0 < seconds <= 3600:
            raise ConfigError(
                f"proxy.{name} must be over 0 and at most 3600 seconds, not {seconds:g}"
            )
    if not 0 <= out.workers <= 64:
        raise ConfigError(
            f"proxy.workers must be from 1 to 64 (or 0 for one per core), not {out.workers}"
        )
    if not out.host:
        raise ConfigError("proxy.host must not be empty")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", out.token_env):
        raise ConfigError(
            f"proxy.token_env must name an environment variable, not {out.token_env!r}"
        )
    return out


def _address(where: str, value: Any) -> tuple[str, int]:
    """A "host:port" (or "[v6]:port") upstream address."""
    if not isinstance(value, str):
        raise ConfigError(f'{where} must be a "host:port" string, not {value!r}')
    host, sep, port = value.lower().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        try:
            host = str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            host = ""
    else:
        try:
            host = str(ipaddress.IPv4Address(host))
        except ValueError:
            host = host if host and is_dns_name(host) else ""
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigError(
            f'{where} must be "host:port" with a port from 1 to 65535, not {value!r}',
            hint='for example "127.0.0.1:9443", "[::1]:9443" or "mirror.corp.example:443"',
        )
    return host, int(port)


def intercept_table(table: Mapping[str, Any], base: Path) -> InterceptConfig:
    check_keys(
        "intercept",
        table,
        {
            "port": int,
            "ca_dir": str,
            "extra_domains": list,
            "only_vendors": bool,
            "upstream_ca": str,
            "upstream_hosts": dict,
        },
    )

    def where(name: str) -> Path | None:
        return table_path(table, name, base)

    port = table.get("port", DEFAULT_INTERCEPT_PORT)
    if not 0 <= port <= 65535:
        raise ConfigError(f"intercept.port must be from 0 to 65535, not {port}")
    extra: list[str] = []
    for name in table.get("extra_domains", []):
        host = check_domain(name)
        if host not in extra:
            extra.append(host)
    upstream_ca = where("upstream_ca")
    if upstream_ca is not None:
        try:
            text = upstream_ca.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"intercept.upstream_ca: cannot read {str(upstream_ca)!r}: {exc.strerror}"
            ) from exc
        if b"-----BEGIN CERTIFICATE-----" not in text:
            raise ConfigError(
                f"intercept.upstream_ca: {str(upstream_ca)!r} holds no PEM certificate",
                hint="name a PEM file (-----BEGIN CERTIFICATE-----)",
            )
    upstream: dict[str, tuple[str, int]] = {}
    for host, value in table.get("upstream_hosts", {}).items():
        key = check_domain(host, f"intercept.upstream_hosts.{host}")
        upstream[key] = _address(f"intercept.upstream_hosts.{host}", value)
    if upstream:
        permitted = permitted_domains(extra)
        for host in upstream:
            if not covered(host, permitted):
                raise ConfigError(
                    f"intercept.upstream_hosts.{host}: not a vendor host or an extra domain, "
                    "so the proxy never intercepts it",
                    hint="add it to intercept.extra_domains, or check the spelling",
                )
    return InterceptConfig(
        port=port,
        ca_dir=where("ca_dir"),
        extra_domains=tuple(extra),
        only_vendors=table.get("only_vendors", False),
        upstream_ca=upstream_ca,
        upstream_hosts=upstream,
    )
