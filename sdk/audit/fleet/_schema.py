"""The fleet log's tables in PostgreSQL (schema ``veilpix``), opening and creating them, and
registering a writer.

Tables: ``meta`` (the fleet's id, its public key, its signed founding statement, schema
version), ``writers`` (the registry: one row per writer, chained and signed), ``entries``
(every writer's chain; ``pos``, an identity, orders them for readers), ``checkpoints``
(every writer's, in one line across the fleet: ``fid``) and ``subject_keys`` (shared: a
subject is the same person whichever machine sent their photo).

The fleet's key file (the same format as a file log's, :mod:`veilpix.audit._keys`) is
copied to every machine that writes or erases: its fingerprint key makes fingerprints
comparable across the fleet, its wrap key opens the subject keys, its signing key registers
writers. Only a machine holding it can register a writer; verify needs only the public key.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from veilpix._errors import AuditLogError, LogIntegrityError
from veilpix._install import install_command
from veilpix.audit._chain import founding_statement, genesis, now_text
from veilpix.audit._keys import KeyFile, verify_signature
from veilpix.audit._store import founding_meta
from veilpix.audit.fleet._chain import LOCK_REGISTRY, LOCK_WRITER, WriterKey, registration
from veilpix.audit.fleet._url import describe, redact

__all__ = [
    "SCHEMA_VERSION",
    "FleetMeta",
    "Registered",
    "check_meta",
    "connect",
    "create_or_open",
    "read_meta",
    "register",
]

SCHEMA_VERSION = 1

_DDL = (
    "CREATE SCHEMA IF NOT EXISTS veilpix",
    "CREATE TABLE veilpix.meta (key text PRIMARY KEY, value text NOT NULL)",
    "CREATE TABLE veilpix.writers ("
    " id integer PRIMARY KEY, name text NOT NULL, registered text NOT NULL,"
    " public_key bytea NOT NULL, prev bytea NOT NULL, hash bytea NOT NULL,"
    " fleet_signature bytea NOT NULL, writer_signature bytea NOT NULL)",
    "CREATE TABLE veilpix.entries ("
    " pos bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " writer integer NOT NULL, seq bigint NOT NULL, kind text NOT NULL, record text,"
    " ts text NOT NULL, subject text, body text NOT NULL,"
    " prev bytea NOT NULL, hash bytea NOT NULL, mac bytea NOT NULL,"
    " UNIQUE (writer, seq))",
    "CREATE INDEX entries_record ON veilpix.entries (record)",
    # one finish per transfer, whichever writers finish it at once
    "CREATE UNIQUE INDEX entries_one_finish ON veilpix.entries (record) WHERE kind = 'finish'",
    # (the rare kinds only: every index costs each of the many begins and finishes an insert)
    "CREATE INDEX entries_rare ON veilpix.entries (kind, pos)"
    " WHERE kind NOT IN ('begin', 'finish')",
    "CREATE INDEX entries_subject ON veilpix.entries (subject) WHERE subject IS NOT NULL",
    "CREATE TABLE veilpix.checkpoints ("
    " fid bigint PRIMARY KEY, writer integer NOT NULL, id integer NOT NULL,"
    " seq bigint NOT NULL, hash bytea NOT NULL, ts text NOT NULL, reason text NOT NULL,"
    " signer integer NOT NULL, fleet_prev bytea NOT NULL, signature bytea NOT NULL,"
    " UNIQUE (writer, id))",
    "CREATE TABLE veilpix.subject_keys ("
    " kid text PRIMARY KEY, tag text NOT NULL UNIQUE, wrapped bytea NOT NULL,"
    " created text NOT NULL)",
)


class FleetMeta:
    """What ``veilpix.meta`` says about the fleet."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.fleet_id = str(values.get("log_id", ""))
        self.created = str(values.get("created", ""))
        self.problem: str | None = None  # a value veilpix never writes (verify reports it)
        try:
            self.public_key = bytes.fromhex(values.get("public_key", ""))
            self.checkpoint_every = int(values.get("checkpoint_every") or 0)
            self.schema = int(values.get("schema") or 0)
        except (ValueError, TypeError) as exc:
            self.public_key, self.checkpoint_every, self.schema = b"", 0, 0
            self.problem = f"its settings hold values veilpix never writes ({exc})"


def connect(url: str, *, name: str) -> Any:
    """A connection of the driver to ``url`` (autocommit: transactions are explicit),
    durable commits (``synchronous_commit=on`` whatever the server's default), named
    ``name`` in ``pg_stat_activity``. AuditLogError, without credentials, when it fails."""
    try:
        import psycopg  # noqa: PLC0415 - only a fleet log needs the driver
    except ImportError as exc:
        raise AuditLogError(
            "a transfer log on PostgreSQL needs the psycopg driver",
            hint=f"install it: {install_command('postgres')}",
        ) from exc
    try:
        conn = psycopg.connect(
            url,
            autocommit=True,
            application_name=name[:63],
            connect_timeout=10,
            prepare_threshold=2,
        )
        conn.execute("SET synchronous_commit = on")
        conn.execute("SET statement_timeout = '60s'")
        # a writer stuck inside a transaction must not hold the checkpoints' lock for long
        conn.execute("SET idle_in_transaction_session_timeout = '60s'")
    except psycopg.Error as exc:
        raise describe(exc, url, "be reached") from None
    return conn


def read_meta(db: Any, url: str) -> FleetMeta | None:
    """The fleet's meta, or None when the database holds no fleet log (no schema)."""
    row = db.execute("SELECT to_regclass('veilpix.meta') IS NOT NULL").fetchone()
    if not row[0]:
        return None
    values = dict(db.execute("SELECT key, value FROM veilpix.meta").fetchall())
    if "log_id" not in values:
        raise LogIntegrityError(
            f"the transfer log at {redact(url)} has lost its settings (veilpix.meta is empty)",
            found="emptied",
            hint="restore the database from a backup",
        )
    return FleetMeta(values)


def check_meta(meta: FleetMeta, url: str) -> None:
    """Raise unless the founding statement carries the fleet key's signature, and the
    schema is one this veilpix knows."""
    if meta.problem is not None:
        raise LogIntegrityError(
            f"the transfer log at {redact(url)} is damaged: {meta.problem}; nothing was written",
            found="changed",
            hint="run: veilpix audit verify --log URL",
        )
    version = meta.schema
    if version > SCHEMA_VERSION:
        raise AuditLogError(
            f"the transfer log at {redact(url)} was made by a newer veilpix (schema {version})",
            hint=f"upgrade veilpix: {install_command(upgrade=True)}",
        )
    founding = founding_statement(meta.fleet_id, meta.checkpoint_every, meta.created)
    try:
        signature = bytes.fromhex(meta.values.get("founding_signature", ""))
    except ValueError:
        signature = b""
    if not verify_signature(meta.public_key, signature, founding):
        raise LogIntegrityError(
            f"the transfer log at {redact(url)} is damaged: its founding statement (id, "
            "checkpoint interval) is not signed; nothing was written",
            found="changed",
            hint="run: veilpix audit verify --log URL",
        )


def create_or_open(
    db: Any,
    url: str,
    key_path: Path,
    *,
    create: bool,
    every: int,
    clock: Callable[[], datetime],
) -> tuple[FleetMeta, KeyFile]:
    """The fleet in the database at ``url`` and its key file, creating both when neither
    exists yet (``create``). Refused: a database without a fleet when the key file has
    recorded one (it was emptied or replaced), a fleet without its key file here, a key
    file of another fleet."""
    meta = read_meta(db, url)
    if meta is None:
        if not create:
            raise AuditLogError(
                f"there is no transfer log at {redact(url)}",
                hint="open it for writing once (a door, or veilpix audit verify after a first "
                "call) to create it, or check the URL's database",
            )
        meta = _create(db, url, key_path, every, clock)
    check_meta(meta, url)
    if not key_path.is_file():
        raise AuditLogError(
            f"this machine has no key file for the fleet log at {redact(url)} "
            f"(looked for {str(key_path)!r})",
            hint="copy the fleet's key file (mode 0600) from the machine that created the log "
            "and point [log] key, --key or VEILPIX_LOG_KEY at it; each machine that writes "
            "needs it",
        )
    keys = KeyFile.read(key_path)
    if keys.log_id == meta.fleet_id and keys.public_raw != meta.public_key:
        raise LogIntegrityError(
            f"the fleet log at {redact(url)} names another signing key than its key file "
            f"{str(key_path)!r} holds: the fleet's key was replaced in the database; nothing "
            "was written",
            found="changed",
            hint="run veilpix audit verify --log URL with the key file at hand",
        )
    if keys.log_id != meta.fleet_id:
        raise AuditLogError(
            f"the key file {str(key_path)!r} belongs to another log than the one at {redact(url)}",
            hint="use the key file of this fleet (veilpix audit verify names its id)",
        )
    return meta, keys


def _create(
    db: Any, url: str, key_path: Path, every: int, clock: Callable[[], datetime]
) -> FleetMeta:
    import psycopg  # noqa: PLC0415 - only a fleet log needs the driver

    if key_path.is_file():
        keys = KeyFile.read(key_path)
        if keys.state is not None:
            raise LogIntegrityError(
                f"the database at {redact(url)} holds no transfer log, but the key file "
                f"{str(key_path)!r} belongs to fleet log {keys.log_id}, last known at "
                f"checkpoint {keys.state.get('checkpoint')}: the log was dropped, emptied "
                "or this is another database; nothing was written",
                found="missing",
                hint="restore the database from a backup, or point --log at the right one",
            )
    else:
        keys = KeyFile.create_or_read(key_path, str(uuid.uuid4()))
    now = now_text(clock())
    try:
        with db.transaction():
            # several machines may create it at once: the first one does, the others find it
            db.execute("SELECT pg_advisory_xact_lock(%s, 1)", (LOCK_REGISTRY,))
            existing = read_meta(db, url)
            if existing is not None:
                return existing
            for statement in _DDL:
                db.execute(statement)
            rows = founding_meta(keys, every, now, SCHEMA_VERSION)
            with db.cursor() as cur:
                cur.executemany(
                    "INSERT INTO veilpix.meta (key, value) VALUES (%s, %s)",
                    [*rows, ("storage", "postgresql")],
                )
    except psycopg.Error as exc:
        raise describe(exc, url, "create its tables") from None
    created = read_meta(db, url)
    assert created is not None
    return created


class Registered:
    """A writer as registered: its number, its key, its name."""

    def __init__(self, writer: int, key: WriterKey, name: str) -> None:
        self.writer, self.key, self.name = writer, key, name


def writer_name() -> str:
    """How a writer is named in the registry: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def register(
    db: Any, url: str, meta: FleetMeta, keys: KeyFile, clock: Callable[[], datetime]
) -> Registered:
    """Register a new writer with a new key, next in the registry, and hold its session lock
    (so nobody takes its chain for a dead writer's while this session lives)."""
    import psycopg  # noqa: PLC0415 - only a fleet log needs the driver

    key = WriterKey()
    name = writer_name()
    try:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_REGISTRY,))
            last = db.execute(
                "SELECT id, hash FROM veilpix.writers ORDER BY id DESC LIMIT 1"
            ).fetchone()
            writer = 1 if last is None else int(last[0]) + 1
            prev = genesis(meta.fleet_id) if last is None else bytes(last[1])
            now = now_text(clock())
            statement = registration(meta.fleet_id, writer, name, now, key.public_raw, prev)
            db.execute(
                "INSERT INTO veilpix.writers (id, name, registered, public_key, prev, hash,"
                " fleet_signature, writer_signature) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    writer,
                    name,
                    now,
                    key.public_raw,
                    prev,
                    hashlib.sha256(statement).digest(),
                    keys.sign(statement),
                    key.sign(statement),
                ),
            )
            # (a session lock taken inside the transaction outlives it)
            db.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_WRITER, writer))
    except psycopg.Error as exc:
        raise describe(exc, url, "register this writer") from None
    return Registered(writer, key, name)
