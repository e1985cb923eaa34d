"""Where a fleet log lives: a PostgreSQL URL, told apart from a file path, shown without its
password, and the errors of its driver turned into veilpix's own without any credential.

A log location is a URL when it starts with ``postgresql://`` or ``postgres://`` (libpq's
two spellings); anything else is a path to an SQLite file. The password may sit in the URL
or come from libpq's own sources (``PGPASSWORD``, ``~/.pgpass``, a service file): veilpix
never prints, logs or records it, and every error names the database as :func:`redact`
shows it (user, host, port and database only).
"""

from __future__ import annotations

import hashlib
import logging
import re
from contextlib import suppress
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from platformdirs import user_data_path

from veilpix._config import LOG_URL_SCHEMES, is_log_url
from veilpix._errors import AuditLogError, ConfigError

__all__ = [
    "SCHEMES",
    "default_key_path",
    "describe",
    "is_url",
    "parse",
    "redact",
    "redact_text",
    "remember_secret",
    "scrub",
]

SCHEMES = LOG_URL_SCHEMES
is_url = is_log_url


_HINT = (
    "write it as postgresql://USER@HOST:PORT/DATABASE and keep the password in PGPASSWORD or "
    "~/.pgpass; in a URL, percent-encode the characters @ : / ? # % and spaces of a password"
)
_SECRETS_SEEN: set[str] = set()  # passwords of URLs this process opened: masked in logs


def _split(url: str) -> dict[str, str]:
    """The URL's parts as Python's URL parser reads them (ConfigError when it cannot)."""
    try:
        split = urlsplit(url.strip())
        port = split.port  # (raises on a port that is not a number)
    except ValueError:
        raise ConfigError(f"{_masked(url)!r} is not a PostgreSQL URL", hint=_HINT) from None
    parts = {
        "user": unquote(split.username or ""),
        "password": unquote(split.password or ""),
        "host": unquote(split.hostname or ""),
        "port": str(port or ""),
        "dbname": unquote(split.path.lstrip("/")),
    }
    return dict(parse_qsl(split.query)) | {k: v for k, v in parts.items() if v}


def _masked(url: str) -> str:
    """A URL libpq may not read, for an error message: everything before its last ``@``
    (user and password, however they are spelt) and any ``password=`` setting masked."""
    scheme, sep, rest = url.strip().partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return redact_text(scheme + sep + rest)


def parse(url: str) -> dict[str, str]:
    """``url`` as libpq reads it (user, password, host, port, dbname, options). ConfigError,
    naming no secret, when libpq cannot read it, or reads it otherwise than a URL parser
    would (an unencoded ``@`` in the password: libpq takes the rest for the host, and would
    name it in its errors)."""
    mine = _split(url)
    try:
        from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 - fleet logs only
    except ImportError:
        return mine
    try:
        theirs = {k: str(v) for k, v in conninfo_to_dict(url.strip()).items()}
    except Exception:  # noqa: BLE001 - its message may quote the password
        raise ConfigError(
            f"{_masked(url)!r} is not a URL the PostgreSQL driver reads", hint=_HINT
        ) from None
    for key in ("user", "password", "host", "port", "dbname"):
        if mine.get(key, "") != theirs.get(key, ""):
            raise ConfigError(
                f"the URL {_masked(url)!r} reads differently to the PostgreSQL driver "
                f"(its {key} is unclear): a character in it needs percent-encoding",
                hint=_HINT,
            )
    return theirs


def remember_secret(url: str) -> None:
    """Mask ``url``'s password wherever the driver's or the pool's loggers might print it."""
    secret = parse(url).get("password")
    if secret:
        _SECRETS_SEEN.add(secret)
        _install_mask()


class _Mask(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS_SEEN:
            text = record.getMessage()
            masked = redact_text(text)
            for secret in _SECRETS_SEEN:
                masked = masked.replace(secret, "***")
            if masked != text:
                record.msg, record.args = masked, ()
        return True


_MASK = _Mask()


def _install_mask() -> None:
    for name in ("psycopg", "psycopg.pool"):
        logger = logging.getLogger(name)
        if _MASK not in logger.filters:
            logger.addFilter(_MASK)


def _parts(url: str) -> tuple[str, str, str, str]:
    """(user, host, port, database) of ``url``, as libpq reads them."""
    d = parse(url)
    return (
        d.get("user", ""),
        d.get("host", "") or "localhost",
        d.get("port") or "5432",
        d.get("dbname", ""),
    )


def redact(url: str) -> str:
    """``url`` without its password (nor any other query parameter): how veilpix names a
    database in messages, logs and records."""
    user, host, port, db = _parts(url)
    who = f"{user}@" if user else ""
    return f"postgresql://{who}{host}:{port}/{db}"


_SECRETS = re.compile(r"(://[^:/@\s]*:)[^@\s]*@|(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


def redact_text(text: str) -> str:
    """``text`` with anything shaped like a URL password or a ``password=`` setting masked."""
    return _SECRETS.sub(lambda m: (m[1] + "***@") if m[1] else (m[2] + "***"), text)


def scrub(text: str, url: str) -> str:
    """A driver's message with the URL's password (as written, and as libpq reads it) masked,
    should the driver ever repeat it, and anything else password-shaped too."""
    try:
        secret = urlsplit(url.strip()).password
    except ValueError:
        secret = None
    values = {secret, unquote(secret or ""), *_SECRETS_SEEN}
    with suppress(ConfigError):
        values.add(parse(url).get("password"))
    out = redact_text(text)
    for value in values - {None, ""}:
        out = out.replace(str(value), "***")
    return out


def describe(exc: BaseException, url: str, action: str) -> AuditLogError:
    """The AuditLogError for a driver error while ``action``: what PostgreSQL said (first line,
    no credentials) and what to do, by its kind."""
    state = getattr(exc, "sqlstate", None) or ""
    first = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, url)
    where = redact(url)
    if state == "25006" or "read-only" in first:
        hint = "the database (or this connection) is read-only: point the writers at the primary"
    elif state.startswith("53"):
        hint = "the database server is out of space or resources: free some, writing resumes"
    elif state.startswith("42501") or state == "42501":
        hint = (
            "this database role may not do that: writers need the grants in "
            "docs/many-machines.md (veilpix audit grants prints them)"
        )
    elif state.startswith("28"):
        hint = "the user or password was refused: check the URL's user, PGPASSWORD or ~/.pgpass"
    elif state.startswith("08") or not state:
        hint = "the database cannot be reached: check it is running and the URL's host and port"
    else:
        hint = "see the database server's log"
    return AuditLogError(
        f"the transfer log at {where} could not {action}: {first}", hint=f"{hint}; nothing was sent"
    )


def default_key_path(url: str) -> Path:
    """Where a fleet's key file is looked for when none is given: in the user data folder,
    named after the database (``fleet-HOST-PORT-DB-<8 hex>.key``; the hex tells apart
    databases whose names only differ in characters a file name cannot hold)."""
    user, host, port, db = _parts(url)
    plain = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{host}-{port}-{db}")[:80]
    tag = hashlib.sha256(f"{host}\0{port}\0{db}".encode()).hexdigest()[:8]
    del user  # (one key file per database, whoever connects)
    return user_data_path("veilpix", appauthor=False) / f"fleet-{plain}-{tag}.key"
