"""``veilpix.toml``: the settings file shared by the SDK, the CLI and the proxy.

It configures the transfer log, the policy (default, per vendor, per app), the proxy and what
the transfer register says about the controller::

    [log]
    path = "/var/lib/veilpix/audit.db"   # --log and $VEILPIX_LOG win; default: user data folder
    key = "/etc/veilpix/audit.key"       # the key file (default: the log's path + ".key")
    checkpoint_every = 1000              # sign the chain head every N entries ...
    checkpoint_seconds = 60              # ... and every T seconds while writing
    encrypt_prompts = false              # also keep prompts, encrypted (erasable per subject)
    retention = "180d"                   # default age for `veilpix audit prune`
    durability = "disk"                  # "os": no fsync per call (survives a veilpix crash,
                                         # not a power loss); see docs/benchmarks.md

    [vendors.openai]
    transfer_mechanism = "EU-US Data Privacy Framework (adequacy decision)"
    purpose = "support chat"             # this vendor's calls: over [record], under [apps.*]

    [vendors.openai.policy]              # this vendor's own policy, on top of [policy]
    region = "eu"

    [vendors.azure]
    base_url = "https://my-resource.openai.azure.com/openai/v1"  # Azure resource, gateway, test server

    [policy]                             # the default Policy (SDK doors that load it, the proxy)
    faces = "blur"
    allowed_countries = "EEA"            # or a list of ISO codes: ["DE", "FR"]
    allowed_vendors = ["openai", "anthropic"]

    [record]                             # what the calls are recorded as doing (the register)
    purpose = "product photos for the shop"
    legal_basis = "contract"             # one of GDPR Art. 6(1)'s six lawful bases
    headers = []                         # X-Veilpix-* headers a proxied request may set them
                                         # with: "purpose", "legal_basis", "subject", "consent"

    [apps.marketing]                     # requests carrying ``X-Veilpix-App: marketing``
    faces = "off"                        # overrides on top of [policy]
    require_consent_for_faces = true
    purpose = "campaign images"          # and of [record]
    legal_basis = "consent"
    record_headers = ["subject", "consent"]  # instead of [record] headers, for this app

    [proxy]
    host = "127.0.0.1"                   # a non-loopback host also needs allow_remote = true
    port = 8787
    max_body = 67108864
    max_connections = 256                # at this many open connections, requests get a 503
    max_connections_per_client = 32      # open connections from one address; more: a quick 503
    header_timeout = 10                  # seconds from the accept to a complete request head
    idle_timeout = 30                    # seconds a kept-alive connection or a body may pause
    min_body_rate = 8192                 # bytes/s a body must average after idle_timeout
    max_image_memory = 536870912         # bytes requests in progress may hold; more: 503
    workers = 1                          # processes on the one port; 0 = one per core
    allow_remote = false
    token_env = "VEILPIX_PROXY_TOKEN"    # the environment variable holding the client token

    [intercept]                          # the HTTPS_PROXY mode and its local CA (docs/intercept.md)
    port = 8788
    ca_dir = "/etc/veilpix/ca"           # --dir and $VEILPIX_CA_DIR win; default: user data folder
    extra_domains = ["gateway.corp.example"]  # names the CA may also sign for (with subdomains)
    only_vendors = false                 # true: refuse other hosts instead of tunnelling them
    upstream_ca = "/etc/veilpix/corp-root.pem"  # also trust this CA for upstream connections
    upstream_hosts = { "api.openai.com" = "127.0.0.1:9443" }  # dial here instead (tests, air gaps)

    [register]                           # the controller's side of the register (Art. 30)
    controller = "Example Shop GmbH"
    address = "Hauptstrasse 1, 10115 Berlin, Germany"
    contact = "privacy@shop.example"
    representative = "not needed: established in the EU"  # Art. 27 EU representative
    dpo = "Dr. Jane Doe, dpo@shop.example"
    data_subjects = ["customers", "employees"]
    security_measures = ["log readable by the privacy team only", "disk encryption"]
    retention = { "product photos for the shop" = "6 months after contract end", "*" = "180d" }

Unknown sections and keys are errors, not silently ignored: a typo in a privacy setting must
not quietly fall back to a default. The file is found at ``--config``, else ``$VEILPIX_CONFIG``;
nothing is read from the working folder unless named. Secrets never live in the file: the
proxy token comes from the environment variable ``[proxy] token_env`` names.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from platformdirs import user_data_path

from veilpix import adapters
from veilpix._config_doors import (
    InterceptConfig,
    ProxyConfig,
    check_keys,
    intercept_table,
    proxy_table,
    strings,
    table_path,
)
from veilpix._config_review import (
    ConsoleConfig,
    RegisterConfig,
    console_table,
    register_table,
)
from veilpix._errors import ConfigError
from veilpix._net import check_domain
from veilpix._policy import EEA, Policy

__all__ = [
    "Config",
    "InterceptConfig",
    "LogConfig",
    "ProxyConfig",
    "RecordSettings",
    "RegisterConfig",
    "VendorConfig",
    "check_domain",
    "load_config",
]


@dataclass(frozen=True, kw_only=True)
class LogConfig:
    path: Path | None = None
    url: str | None = None  # a fleet log on PostgreSQL (postgresql://...), instead of path
    key: Path | None = None
    checkpoint_every: int = 1000
    checkpoint_seconds: float = 60.0
    encrypt_prompts: bool = False
    retention: str | None = None
    durability: str = "disk"  # "disk": each begin is fsynced before the call leaves; "os"


@dataclass(frozen=True, kw_only=True)
class VendorConfig:
    transfer_mechanism: str | None = None
    base_url: str | None = None
    policy_settings: Mapping[str, Any] = field(default_factory=dict)  # [vendors.<name>.policy]
    record: Mapping[str, str] = field(default_factory=dict)  # its purpose, legal_basis


@dataclass(frozen=True, kw_only=True)
class RecordSettings:
    """What one app's proxied calls are recorded as doing: ``purpose`` and ``legal_basis``
    (``[record]``, then ``[apps.<app>]``), per vendor where ``[vendors.<name>]`` says
    otherwise (``vendors``: vendor -> the merged values), and which ``X-Veilpix-*`` record
    headers its requests may set fields with (``headers``: ``purpose``, ``legal_basis``,
    ``subject``, ``consent``; none by default)."""

    purpose: str | None = None
    legal_basis: str | None = None
    headers: frozenset[str] = frozenset()
    vendors: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def for_vendor(self, vendor: str) -> dict[str, str]:
        """``purpose`` and ``legal_basis`` (those set) for a call to ``vendor``."""
        found = self.vendors.get(vendor)
        if found is not None:
            return dict(found)
        pairs = (("purpose", self.purpose), ("legal_basis", self.legal_basis))
        return {k: v for k, v in pairs if v is not None}


@dataclass(frozen=True, kw_only=True)
class Config:
    """A parsed ``veilpix.toml``. ``source`` is the file it came from (None: built-in).
    ``policy_settings`` are the ``[policy]`` keyword arguments, ``apps`` each app's overrides;
    :meth:`policy` builds the :class:`~veilpix.Policy` from them. ``register`` is what the
    transfer register says about the controller (``[register]``; empty: every field flagged)."""

    log: LogConfig = field(default_factory=LogConfig)
    vendors: Mapping[str, VendorConfig] = field(default_factory=dict)
    policy_settings: Mapping[str, Any] = field(default_factory=dict)
    apps: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # what each app's calls are recorded as doing ("" : the default): purpose, legal_basis
    records: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # the X-Veilpix-* record headers requests may send ("": [record] headers; an app listed
    # here has its own record_headers instead)
    record_headers: Mapping[str, frozenset[str]] = field(default_factory=dict)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    intercept: InterceptConfig = field(default_factory=InterceptConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)  # the register's header
    console: ConsoleConfig = field(default_factory=ConsoleConfig)  # veilpix audit serve
    source: Path | None = None

    def record(self, app: str | None = None, *, vendor: str | None = None) -> dict[str, str]:
        """What calls of ``app`` (None: the default) are recorded as doing: ``purpose`` and
        ``legal_basis`` from ``[record]``, then ``[vendors.<vendor>]`` when ``vendor`` is
        given, then ``[apps.<app>]`` on top (the app has the last word, as for policies)."""
        out = dict(self.records.get("", {}))
        if vendor is not None and vendor in self.vendors:
            out.update(self.vendors[vendor].record)
        if app:
            out.update(self.records.get(app, {}))
        return out

    def allowed_record_headers(self, app: str | None = None) -> frozenset[str]:
        """The record fields requests of ``app`` may set with ``X-Veilpix-*`` headers: the
        app's ``record_headers`` when it has them, else ``[record] headers`` (else none)."""
        if app and app in self.record_headers:
            return self.record_headers[app]
        return self.record_headers.get("", frozenset())

    def record_settings(self, app: str | None = None) -> RecordSettings:
        """Everything the proxy needs to record ``app``'s calls (see :class:`RecordSettings`)."""
        base = self.record(app)
        return RecordSettings(
            purpose=base.get("purpose"),
            legal_basis=base.get("legal_basis"),
            headers=self.allowed_record_headers(app),
            vendors={
                name: self.record(app, vendor=name) for name, v in self.vendors.items() if v.record
            },
        )

    def vendor_policies(self, app: str | None = None) -> dict[str, Policy]:
        """Vendor -> Policy for vendors with ``[vendors.<name>.policy]``: ``[policy]``, then
        the vendor's settings, then ``[apps.<app>]`` (the app has the last word)."""
        return {
            name: self.policy(app, vendor=name)
            for name, v in self.vendors.items()
            if v.policy_settings
        }

    def policy(self, app: str | None = None, *, vendor: str | None = None) -> Policy:
        """The Policy for ``app`` (None: the default): ``[policy]``, then the vendor's
        ``[vendors.<vendor>.policy]`` when ``vendor`` is given, then ``[apps.<app>]`` on top,
        with ``vendor_hosts`` extended by the hosts of the configured base URLs."""
        if app is not None and app not in self.apps:
            raise ConfigError(
                f"no [apps.{app}] in the config",
                hint=f"apps: {', '.join(sorted(self.apps)) or 'none configured'}",
            )
        settings = dict(self.policy_settings)
        where = "policy"
        if vendor is not None and vendor in self.vendors:
            settings.update(self.vendors[vendor].policy_settings)
            where = f"vendors.{vendor}.policy"
        if app is not None:
            settings.update(self.apps[app])
            where = f"apps.{app}"
        hosts = dict(self.vendor_hosts)
        hosts.update(settings.get("vendor_hosts", {}))
        settings["vendor_hosts"] = hosts
        try:
            return Policy(**settings)
        except ConfigError as exc:
            message = exc.message
            if message.startswith("Policy."):  # name the key as the file spells it
                message = f"{where}.{message.removeprefix('Policy.')}"
            raise ConfigError(message, hint=exc.hint) from exc

    def log_path(self, path: str | os.PathLike[str] | None = None) -> Path | str:
        """Where the log is: ``path``, else ``$VEILPIX_LOG``, else ``[log] url`` or ``[log]
        path``, else the default (as :meth:`AuditLog.from_config` chooses it). A fleet log's
        URL is returned as it is given (str); show it with ``redact``, without its password."""
        chosen = path or os.environ.get("VEILPIX_LOG") or self.log.url or self.log.path
        if is_log_url(chosen):
            return str(chosen).strip()
        if chosen:
            return Path(chosen).expanduser()
        return default_log_path()

    def ca_dir(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Where the intercept CA lives: ``path``, else ``$VEILPIX_CA_DIR``, else
        ``[intercept] ca_dir``, else ``ca`` in the user data folder."""
        chosen = path or os.environ.get("VEILPIX_CA_DIR") or self.intercept.ca_dir
        if chosen:
            return Path(chosen).expanduser()
        return user_data_path("veilpix", appauthor=False) / "ca"

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
        the guard knows whose host an Azure resource or a gateway is. ``host:port`` when the
        URL names a port, so two vendors served from one test host (127.0.0.1:9000,
        127.0.0.1:9001) stay apart."""
        out: dict[str, str] = {}
        for name, url in self.base_urls.items():
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
            out[f"{host}:{parts.port}" if parts.port else host] = name
        return out


def _log(table: Mapping[str, Any], base: Path) -> LogConfig:
    check_keys(
        "log",
        table,
        {
            "path": str,
            "url": str,
            "key": str,
            "checkpoint_every": int,
            "checkpoint_seconds": (int, float),
            "encrypt_prompts": bool,
            "retention": str,
            "durability": str,
        },
    )

    def where(name: str) -> Path | None:
        return table_path(table, name, base)

    url = table.get("url")
    if url is not None and not is_log_url(url):
        raise ConfigError(
            "log.url must be a PostgreSQL URL (postgresql://USER@HOST:PORT/DATABASE)",
            hint="a log file is [log] path; [log] url names a fleet's database",
        )
    if url is not None and "path" in table:
        raise ConfigError(
            "[log] has both path and url: give one (a file, or a fleet's database)",
        )
    out = LogConfig(
        path=where("path"),
        url=url.strip() if url is not None else None,
        key=where("key"),
        checkpoint_every=table.get("checkpoint_every", 1000),
        checkpoint_seconds=float(table.get("checkpoint_seconds", 60.0)),
        encrypt_prompts=table.get("encrypt_prompts", False),
        retention=table.get("retention"),
        durability=table.get("durability", "disk"),
    )
    if out.durability not in ("disk", "os"):
        raise ConfigError(
            f"log.durability must be 'disk' or 'os', got {out.durability!r}",
            hint="'disk' (the default) waits for the disk before a call leaves; 'os' hands the "
            "record to the operating system, which survives a crash of veilpix, not of the machine",
        )
    if out.checkpoint_every < 1 or out.checkpoint_seconds <= 0:
        raise ConfigError("log.checkpoint_every and log.checkpoint_seconds must be above 0")
    if out.retention is not None:
        parse_age(out.retention)
    return out


def _check_vendor(name: str, table: Mapping[str, Any]) -> None:

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


_POLICY_KEYS: dict[str, type | tuple[type, ...]] = {
    "faces": str,
    "face_padding": (int, float),
    "face_rotations": bool,
    "require_consent_for_faces": bool,
    "max_side": int,
    "max_pixels": int,
    "output_format": str,
    "quality": int,
    "keep_standard_icc": bool,
    "verify_decode": bool,
    "max_bytes": int,
    "max_input_pixels": int,
    "max_frames": int,
    "max_total_pixels": int,
    "max_work_seconds": (int, float),
    "max_memory": int,
    "allowed_vendors": list,
    "allowed_countries": (list, str),
    "region": str,
    "https_only": bool,
    "vendor_hosts": dict,
    "host_countries": dict,
    "remote_images": str,
    "remote_max_bytes": int,
    "remote_timeout": (int, float),
    "privacy_controls": bool,
    "content_usage": (str, bool),
    "sec_gpc": bool,
    "require_controls": list,
    "max_request_bytes": int,
    "documents": str,
}
_COUNTRY = re.compile(r"[A-Z]{2}")
_APP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


_RECORD_KEYS = ("purpose", "legal_basis")
# Record fields a request may set with an X-Veilpix-* header, where the config allows it.
# The record field each header sets, by the name used in veilpix.toml ([record] headers).
RECORD_HEADERS: Mapping[str, str] = {
    "purpose": "x-veilpix-purpose",
    "legal_basis": "x-veilpix-legal-basis",
    "subject": "x-veilpix-subject",
    "consent": "x-veilpix-consent",
}
_AGE = re.compile(r"^\s*(\d+)\s*(h|d|w|y)\s*$", re.I)
_AGE_UNIT = {
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
    "y": timedelta(days=365),
}


def parse_age(text: str) -> timedelta:
    """``"180d"``, ``"26w"``, ``"12h"`` or ``"1y"`` (365 days) as a timedelta."""
    m = _AGE.match(text)
    if not m or int(m.group(1)) <= 0:
        raise ConfigError(
            f"cannot read the age {text!r}",
            hint="write a whole number and a unit: 12h, 180d, 26w or 2y",
        )
    return int(m.group(1)) * _AGE_UNIT[m.group(2).lower()]


LOG_URL_SCHEMES = ("postgresql://", "postgres://")


def is_log_url(location: object) -> bool:
    """Whether a log location (``--log``, ``[log] url``, ``$VEILPIX_LOG``) names a fleet log
    on PostgreSQL rather than a file: it starts with ``postgresql://`` or ``postgres://``."""
    return isinstance(location, str) and location.strip().lower().startswith(LOG_URL_SCHEMES)


def default_log_path() -> Path:
    """``$VEILPIX_LOG`` if set, else ``audit.db`` in the user data folder (platformdirs)."""
    env = os.environ.get("VEILPIX_LOG")
    if env:
        return Path(env).expanduser()
    return user_data_path("veilpix", appauthor=False) / "audit.db"


RECORD_HEADER_FIELDS = tuple(RECORD_HEADERS)
# GDPR Art. 6(1): the six lawful bases
LEGAL_BASES = frozenset(
    {
        "consent",
        "contract",
        "legal_obligation",
        "vital_interests",
        "public_task",
        "legitimate_interests",
    }
)


def _record_headers(where: str, value: Any) -> frozenset[str]:
    """A ``headers`` / ``record_headers`` list: names from RECORD_HEADER_FIELDS."""
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list, not {value!r}")
    for name in strings(where, value):
        if name not in RECORD_HEADER_FIELDS:
            raise ConfigError(
                f"{where} names no record header: {name!r}",
                hint=f"choose from {', '.join(RECORD_HEADER_FIELDS)}",
            )
    return frozenset(value)


def _record_settings(where: str, table: dict[str, Any], *, whole: bool = False) -> dict[str, str]:
    """Take ``purpose`` and ``legal_basis`` out of ``table`` (``whole``: nothing else may be
    in it), checked: non-empty text, and one of the six lawful bases of GDPR Art. 6(1)."""
    if whole:
        check_keys(where, table, dict.fromkeys(_RECORD_KEYS, str))
    out: dict[str, str] = {}
    for key in _RECORD_KEYS:
        if key not in table:
            continue
        value = table.pop(key)
        if not isinstance(value, str) or not value.strip() or len(value) > 200:
            raise ConfigError(f"{where}.{key} must be a short text, not {value!r}")
        out[key] = value.strip()
    basis = out.get("legal_basis")
    if basis is not None and basis not in LEGAL_BASES:
        raise ConfigError(
            f"{where}.legal_basis must be one of GDPR Art. 6(1)'s bases, not {basis!r}",
            hint=", ".join(sorted(LEGAL_BASES)),
        )
    return out


def _policy_settings(where: str, table: Mapping[str, Any]) -> dict[str, Any]:
    """Check a [policy] or [apps.x] table and return Policy keyword arguments."""
    check_keys(where, table, _POLICY_KEYS)
    out = dict(table)
    if "allowed_vendors" in out:
        names = [n.lower() for n in strings(f"{where}.allowed_vendors", out["allowed_vendors"])]
        known = {v.name for v in adapters.vendors()}
        for name in names:
            if name not in known:
                raise ConfigError(
                    f"{where}.allowed_vendors names no vendor veilpix knows: {name!r}",
                    hint=f"known: {', '.join(sorted(known))}",
                )
        out["allowed_vendors"] = frozenset(names)
    if "allowed_countries" in out:
        value = out["allowed_countries"]
        if isinstance(value, str):
            if value.upper() != "EEA":
                raise ConfigError(
                    f'{where}.allowed_countries must be "EEA" or a list of ISO codes, '
                    f"not {value!r}",
                    hint='for example allowed_countries = ["DE", "FR"]',
                )
            out["allowed_countries"] = EEA
        else:
            codes = [c.upper() for c in strings(f"{where}.allowed_countries", value)]
            for code in codes:
                if not _COUNTRY.fullmatch(code):
                    raise ConfigError(
                        f"{where}.allowed_countries: {code!r} is not a two-letter ISO country code",
                        hint='for example "DE", "FR", or allowed_countries = "EEA"',
                    )
            out["allowed_countries"] = frozenset(codes)
    if "require_controls" in out:
        out["require_controls"] = frozenset(
            strings(f"{where}.require_controls", out["require_controls"])
        )
    for name in ("vendor_hosts", "host_countries"):
        for host, value in out.get(name, {}).items():
            if not isinstance(value, str):
                raise ConfigError(f"{where}.{name}.{host} must be a string, not {value!r}")
    for host, vendor in out.get("vendor_hosts", {}).items():
        try:
            adapters.get(vendor)
        except KeyError as exc:
            raise ConfigError(
                f"{where}.vendor_hosts.{host}: {vendor!r} names no vendor veilpix knows"
            ) from exc
    for host, code in out.get("host_countries", {}).items():
        if not _COUNTRY.fullmatch(code.upper()):
            raise ConfigError(
                f"{where}.host_countries.{host}: {code!r} is not a two-letter ISO country code"
            )
    if "content_usage" in out and isinstance(out["content_usage"], bool):
        if out["content_usage"]:
            raise ConfigError(
                f"{where}.content_usage must be a header value or false, not true",
                hint='for example content_usage = "train-ai=n"',
            )
        out["content_usage"] = None  # false: send no Content-Usage header
    return out


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
    check_keys(
        "veilpix.toml",
        doc,
        {
            "log": dict,
            "vendors": dict,
            "policy": dict,
            "apps": dict,
            "record": dict,
            "proxy": dict,
            "intercept": dict,
            "register": dict,
            "console": dict,
        },
    )
    vendors: dict[str, VendorConfig] = {}
    for name, table in doc.get("vendors", {}).items():
        if not isinstance(table, dict):
            raise ConfigError(f"vendors.{name} must be a table ([vendors.{name}])")
        check_keys(
            f"vendors.{name}",
            table,
            {
                "transfer_mechanism": str,
                "base_url": str,
                "policy": dict,
                "purpose": str,
                "legal_basis": str,
            },
        )
        _check_vendor(name, table)
        settings = _policy_settings(f"vendors.{name}.policy", table.get("policy", {}))
        vendors[name] = VendorConfig(
            transfer_mechanism=table.get("transfer_mechanism"),
            base_url=table.get("base_url"),
            policy_settings=settings,
            record=_record_settings(f"vendors.{name}", dict(table)),
        )
    apps: dict[str, dict[str, Any]] = {}
    record_table = dict(doc.get("record", {}))
    record_headers: dict[str, frozenset[str]] = {}
    if "headers" in record_table:
        record_headers[""] = _record_headers("record.headers", record_table.pop("headers"))
    records = {"": _record_settings("record", record_table, whole=True)}
    for name, table in doc.get("apps", {}).items():
        if not isinstance(table, dict):
            raise ConfigError(f"apps.{name} must be a table ([apps.{name}])")
        if not _APP.fullmatch(name):
            raise ConfigError(
                f"[apps.{name}]: app names are letters, digits, '.', '_' and '-' (up to 64)",
                hint="the name is what clients send in the X-Veilpix-App header",
            )
        settings = dict(table)
        records[name] = _record_settings(f"apps.{name}", settings)  # takes its keys out
        if "record_headers" in settings:
            record_headers[name] = _record_headers(
                f"apps.{name}.record_headers", settings.pop("record_headers")
            )
        apps[name] = _policy_settings(f"apps.{name}", settings)
    config = Config(
        log=_log(doc.get("log", {}), file.absolute().parent),
        vendors=vendors,
        policy_settings=_policy_settings("policy", doc.get("policy", {})),
        apps=apps,
        records={k: v for k, v in records.items() if v},
        record_headers=record_headers,
        proxy=proxy_table(doc.get("proxy", {})),
        intercept=intercept_table(doc.get("intercept", {}), file.absolute().parent),
        register=register_table(doc.get("register", {})),
        console=console_table(doc.get("console", {})),
        source=file,
    )
    for app in (None, *apps):  # every Policy is built once here, so errors surface on load
        config.policy(app)
        config.vendor_policies(app)
    return config
