"""The sections of ``veilpix.toml`` for the people who review the records: ``[register]``,
what the transfer register says about the controller beyond what the transfer log records,
and ``[console]``, how the compliance console (``veilpix audit serve``) runs.

The register (``veilpix audit report``) is a GDPR Art. 30 style record of processing. The log
knows the purposes, the categories of personal data, the recipients, the countries and the
transfer mechanisms; it cannot know who the controller is, whom the data is about, how long
it is kept or which organisational measures protect it. ``[register]`` says so::

    [register]
    controller = "Example Shop GmbH"
    address = "Hauptstrasse 1, 10115 Berlin, Germany"
    contact = "privacy@shop.example, +49 30 1234567"
    representative = "not needed: established in the EU"   # Art. 27
    dpo = "Dr. Jane Doe, dpo@shop.example"
    data_subjects = ["customers", "employees"]
    security_measures = ["access to the log limited to the privacy team", "disk encryption"]

    [register.retention]                 # purpose -> period ("*" or "default": the rest)
    "product photos for the shop" = "6 months after contract end"
    "*" = "180d"

Every key is optional: the register flags each one that is missing. Unknown keys are errors.

``[console]``::

    [console]
    host = "127.0.0.1"                   # a non-loopback host also needs allow_remote = true
    port = 8790
    allow_remote = false                 # and then [console.users], and TLS
    public_url = "https://console.example.com"  # behind a TLS proxy: what browsers use
    show_subjects = false                # true, or a list of user names: who sees subject
                                         # references (else sealed, as in exports)

    [console.users]                      # remote sign-in; hashes from
    alice = "scrypt$32768$8$1$..."       # `veilpix audit serve --hash-password`
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from veilpix._config_doors import check_keys
from veilpix._errors import ConfigError
from veilpix._passwords import parse_hash

__all__ = [
    "DEFAULT_RETENTION_KEYS",
    "REGISTER_KEYS",
    "REGISTER_TEXTS",
    "ConsoleConfig",
    "RegisterConfig",
    "console_table",
    "register_table",
]

# The keys of [register.retention] that name the period of every purpose not listed.
DEFAULT_RETENTION_KEYS = ("*", "default")
# The single texts of [register] (an address may span lines), in the order shown.
REGISTER_TEXTS = ("controller", "address", "contact", "representative", "dpo")
# Every key of [register], in the order the register shows them.
REGISTER_KEYS = (*REGISTER_TEXTS, "data_subjects", "retention", "security_measures")
_MAX_TEXT = 1000  # characters of one value: an address, not a document
_MAX_ITEMS = 100  # entries of one list or table


@dataclass(frozen=True, kw_only=True)
class RegisterConfig:
    """``[register]``: the controller's side of the Art. 30 record (None or empty: not set).

    ``controller``, ``address``, ``contact``: who is responsible and how to reach them
    (Art. 30(1)(a)); ``representative``: the EU representative (Art. 27); ``dpo``: the data
    protection officer's name and contact. ``data_subjects``: categories of data subjects
    (Art. 30(1)(c)). ``retention``: purpose -> period, as free text ("180d", "6 months after
    contract end"); the key ``"*"`` or ``"default"`` holds the period of every other purpose
    (Art. 30(1)(f)). ``security_measures``: technical and organisational measures
    (Art. 30(1)(g), Art. 32)."""

    controller: str | None = None
    address: str | None = None
    contact: str | None = None
    representative: str | None = None
    dpo: str | None = None
    data_subjects: tuple[str, ...] = ()
    retention: Mapping[str, str] = field(default_factory=dict)
    security_measures: tuple[str, ...] = ()

    @property
    def default_retention(self) -> str | None:
        """The period for purposes ``retention`` does not name (its ``"*"`` or ``"default"``)."""
        for key in DEFAULT_RETENTION_KEYS:
            if key in self.retention:
                return self.retention[key]
        return None

    def retention_for(self, purpose: str) -> str | None:
        """The period for ``purpose``: its own, else the default, else None."""
        return self.retention.get(purpose) or self.default_retention

    @property
    def unset(self) -> tuple[str, ...]:
        """The keys of ``[register]`` that are not set, in the order of the file."""
        return tuple(name for name in REGISTER_KEYS if not getattr(self, name))


def _text(where: str, value: Any) -> str:
    """A non-empty text of at most ``_MAX_TEXT`` characters, stripped."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty text, not {value!r}")
    if len(value) > _MAX_TEXT:
        raise ConfigError(
            f"{where} is {len(value)} characters long; at most {_MAX_TEXT} fit the register",
            hint="shorten it, or point to a document that says more",
        )
    return value.strip()


def _texts(where: str, values: list[Any]) -> tuple[str, ...]:
    """A list of texts, each checked as :func:`_text`; repeats dropped, order kept."""
    if len(values) > _MAX_ITEMS:
        raise ConfigError(f"{where} lists {len(values)} entries; at most {_MAX_ITEMS} fit")
    out: list[str] = []
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a list of texts, not {values!r}")
        text = _text(f"{where}[{i}]", value)
        if text not in out:
            out.append(text)
    return tuple(out)


def _retention(where: str, table: Mapping[str, Any]) -> dict[str, str]:
    """Purpose -> period text; at most one of the default keys."""
    if len(table) > _MAX_ITEMS:
        raise ConfigError(f"{where} lists {len(table)} purposes; at most {_MAX_ITEMS} fit")
    defaults = [key for key in DEFAULT_RETENTION_KEYS if key in table]
    if len(defaults) > 1:
        raise ConfigError(
            f'{where} sets the default period twice ("*" and "default")',
            hint="keep one of them",
        )
    out: dict[str, str] = {}
    for purpose, period in table.items():
        if not purpose.strip():
            raise ConfigError(f"{where} has an empty purpose", hint='write "*" for the default')
        if not isinstance(period, str):
            raise ConfigError(
                f"{where}.{purpose} must be a period as text, not {period!r}",
                hint='for example "180d" or "6 months after contract end"',
            )
        out[purpose.strip()] = _text(f"{where}.{purpose}", period)
    return out


def register_table(table: Mapping[str, Any]) -> RegisterConfig:
    """``[register]`` as a :class:`RegisterConfig`, checked."""
    if "retention" in table and not isinstance(table["retention"], dict):
        raise ConfigError(
            f"register.retention must be a table of purpose = period, not {table['retention']!r}",
            hint='for example retention = { "support chat" = "30d", "*" = "180d" }',
        )
    check_keys(
        "register",
        table,
        {
            **dict.fromkeys(REGISTER_TEXTS, str),
            "data_subjects": list,
            "retention": dict,
            "security_measures": list,
        },
    )

    def text(name: str) -> str | None:
        return _text(f"register.{name}", table[name]) if name in table else None

    return RegisterConfig(
        controller=text("controller"),
        address=text("address"),
        contact=text("contact"),
        representative=text("representative"),
        dpo=text("dpo"),
        data_subjects=_texts("register.data_subjects", table.get("data_subjects", [])),
        retention=_retention("register.retention", table.get("retention", {})),
        security_measures=_texts("register.security_measures", table.get("security_measures", [])),
    )


@dataclass(frozen=True, kw_only=True)
class ConsoleConfig:
    """``[console]``: where ``veilpix audit serve`` listens (``host``, ``port``; a host off
    loopback needs ``allow_remote`` and ``users``), the address browsers use behind a TLS
    proxy (``public_url``: forms must come from it, and only its host name is answered), who
    signs in with a password (``users``:
    name -> scrypt hash) and who sees subject references (``show_subjects``: True for every
    viewer, a set of user names, or False: sealed for all)."""

    host: str = "127.0.0.1"
    port: int = 8790
    allow_remote: bool = False
    public_url: str | None = None
    show_subjects: bool | frozenset[str] = False
    users: Mapping[str, str] = field(default_factory=dict)


def console_table(table: Mapping[str, Any]) -> ConsoleConfig:
    """``[console]`` as a :class:`ConsoleConfig`, checked (password hashes too)."""
    check_keys(
        "console",
        table,
        {
            "host": str,
            "port": int,
            "allow_remote": bool,
            "public_url": str,
            "show_subjects": (bool, list),
            "users": dict,
        },
    )
    port = table.get("port", 8790)
    if not 0 <= port <= 65535 or isinstance(port, bool):
        raise ConfigError(f"console.port must be from 0 to 65535, not {port!r}")
    shown = table.get("show_subjects", False)
    if isinstance(shown, list):
        names = _texts("console.show_subjects", shown)
        show: bool | frozenset[str] = frozenset(names)
    elif isinstance(shown, bool):
        show = shown
    else:
        raise ConfigError(
            f"console.show_subjects must be true, false or a list of user names, not {shown!r}"
        )
    users: dict[str, str] = {}
    for name, stored in table.get("users", {}).items():
        where = f"console.users.{name}"
        if not isinstance(stored, str):
            raise ConfigError(f"{where} must be a password hash (text), not {stored!r}")
        if not name or len(name) > 64 or not name.isprintable():
            raise ConfigError(f"{where}: a user name is 1 to 64 printable characters")
        parse_hash(stored, where)
        users[name] = stored
    public = table.get("public_url")
    if public is not None:
        parts = urlsplit(public)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
        ):
            raise ConfigError(
                f"console.public_url must be a site's address, not {public!r}",
                hint='for example public_url = "https://console.example.com"',
            )
        default = 443 if parts.scheme == "https" else 80
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        netloc = host if parts.port in (None, default) else parts.netloc
        public = f"{parts.scheme}://{netloc}".lower()
    return ConsoleConfig(
        host=table.get("host", "127.0.0.1"),
        public_url=public,
        port=port,
        allow_remote=table.get("allow_remote", False),
        show_subjects=show,
        users=users,
    )
