"""The log's SQLite file: its schema, opening (for review or for writing), creating, upgrading,
and the files a writer keeps open beside it.

A log is one SQLite file in WAL mode (created 0600, its folder 0700) with the tables ``meta``,
``entries``, ``checkpoints`` and ``subject_keys``, plus its key file (:mod:`veilpix.audit._keys`).
:func:`open_reader` opens an existing log read-only, with its key file when that can be read;
:func:`open_writer` opens or creates a log for writing and checks it belongs to its key file
(same log, same signing key, a writable folder), upgrading an older schema in place.
:class:`LogFiles` holds what a writer needs besides the connection: the cross-process write
lock, the fsync of the WAL, and the checks that the files are still the ones it opened.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from veilpix._errors import AuditLogError, ConfigError, LogIntegrityError
from veilpix._install import install_command
from veilpix.audit._chain import founding_statement, now_text
from veilpix.audit._checks import check_tail
from veilpix.audit._keys import KeyFile, check_private, key_id, verify_signature

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: SQLite's own locking only
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "INSERT_ENTRY",
    "SCHEMA_VERSION",
    "LogFiles",
    "Meta",
    "Opened",
    "Signed",
    "check_founding",
    "check_schema",
    "connect",
    "damaged",
    "error",
    "founding_meta",
    "key_path_for",
    "meta",
    "newest_checkpoint",
    "next_state",
    "open_reader",
    "open_writer",
    "read_meta",
]

SCHEMA_VERSION = 2
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT",
        "CREATE TABLE entries ("
        " seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, record TEXT, ts TEXT NOT NULL,"
        " subject TEXT, body TEXT NOT NULL, prev BLOB NOT NULL, hash BLOB NOT NULL) STRICT",
        "CREATE INDEX entries_record ON entries(record, kind)",
        "CREATE INDEX entries_subject ON entries(subject) WHERE subject IS NOT NULL",
        "CREATE INDEX entries_kind_ts ON entries(kind, ts)",
        "CREATE TABLE checkpoints ("
        " id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, hash BLOB NOT NULL, ts TEXT NOT NULL,"
        " reason TEXT NOT NULL, key_id TEXT NOT NULL, signature BLOB NOT NULL) STRICT",
        "CREATE TABLE subject_keys ("
        " kid TEXT PRIMARY KEY, tag TEXT NOT NULL UNIQUE, wrapped BLOB NOT NULL,"
        " created TEXT NOT NULL) STRICT",
    ),
    # every entry carries a MAC under the key file's entry key (KeyFile.entry_mac)
    2: ("ALTER TABLE entries ADD COLUMN mac BLOB",),
}
INSERT_ENTRY = (
    "INSERT INTO entries(seq, kind, record, ts, subject, body, prev, hash, mac)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# a checkpoint as the key file records it: (id, entry, SHA-256 of the signature, time)
Signed = tuple[int, int, str, str]


def key_path_for(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".key")


@dataclass(frozen=True)
class Meta:
    """What the ``meta`` table says about the log."""

    log_id: str
    public_key: bytes
    checkpoint_every: int  # 0: not readable (read-only; verify reports it)


# -- errors ------------------------------------------------------------------------------------


def error(path: Path, doing: str, exc: BaseException) -> AuditLogError:
    return AuditLogError(f"cannot {doing} the transfer log {str(path)!r}: {exc}")


def _no_log(path: Path) -> AuditLogError:
    return AuditLogError(
        f"there is no transfer log at {str(path)!r}",
        hint="pass --log FILE (or set VEILPIX_LOG) to the log the SDK or proxy writes",
    )


def damaged(path: Path, problem: str) -> LogIntegrityError:
    return LogIntegrityError(
        f"the transfer log {str(path)!r} is damaged or was changed without its key "
        f"file: {problem}; nothing was written",
        found="changed",
        hint=f"see what changed: veilpix audit verify --log {str(path)!r}; keep the "
        "file for investigation; restore it from a backup, or start over and record why: "
        f"veilpix audit restart --log {str(path)!r} --reason TEXT",
    )


def _rollback(db: sqlite3.Connection) -> None:
    try:
        if db.in_transaction:
            db.execute("ROLLBACK")
    except sqlite3.Error:
        pass


# -- opening -----------------------------------------------------------------------------------


def connect(path: Path, *, readonly: bool, busy: float) -> tuple[sqlite3.Connection, bool]:
    """A connection to the log, and whether it runs in WAL mode (then a writer's connection
    commits with ``synchronous=NORMAL`` and a durable commit fsyncs the WAL itself, see
    :meth:`LogFiles.sync`; otherwise ``FULL``)."""
    wal = False
    try:
        if readonly:
            uri = f"{path.absolute().as_uri()}?mode=ro"
            db = sqlite3.connect(
                uri, uri=True, timeout=busy, isolation_level=None, check_same_thread=False
            )
        else:
            db = sqlite3.connect(path, timeout=busy, isolation_level=None, check_same_thread=False)
            mode = _journal_wal(db, busy)
            wal = str(mode).lower() == "wal"
            db.execute(f"PRAGMA synchronous={'NORMAL' if wal else 'FULL'}")
            db.execute("PRAGMA secure_delete=ON")
        db.execute("PRAGMA trusted_schema=OFF")
    except sqlite3.Error as exc:
        raise error(path, "open", exc) from exc
    return db, wal


def _journal_wal(db: sqlite3.Connection, busy: float) -> str:
    """Switch a writer's connection to WAL and return the journal mode it got. Two processes
    that create one log at once both read it under a shared lock and then both want it
    exclusively; SQLite answers one of them "locked" at once, without waiting for the busy
    timeout (it would deadlock otherwise), so that one tries again until ``busy`` runs out."""
    deadline = time.monotonic() + busy
    pause = 0.005
    while True:
        try:
            return str(db.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def open_reader(
    path: Path, key_path: Path, *, busy: float
) -> tuple[sqlite3.Connection, Meta, KeyFile | None, str | None]:
    """(connection, meta, key file, what is wrong with the key file) of the log at ``path``,
    opened read-only. The key file is used when it belongs to this log (or wrote it before a
    restart); a reviewer who may read the log but not its key file reads it without."""
    if not path.is_file():
        raise _no_log(path)
    db, _ = connect(path, readonly=True, busy=busy)
    if check_schema(db, path) < SCHEMA_VERSION:
        raise AuditLogError(
            f"the transfer log {str(path)!r} was written by an older veilpix and has "
            "not been upgraded yet",
            hint="open it for writing once (any veilpix command that writes, or "
            "veilpix audit checkpoint) to upgrade it in place",
        )
    info = read_meta(db, path, readonly=True)
    problem = None
    try:
        keys = KeyFile.read(key_path) if key_path.is_file() else None
    except PermissionError:  # a reviewer who may read the log but not its key file
        keys = None
    except ConfigError as exc:
        keys, problem = None, exc.message
    if keys is not None and keys.knows(info.log_id):
        if keys.log_id != info.log_id:
            problem = (
                f"the key file {str(key_path)!r} has moved on: this log was restarted "
                f"as log {keys.log_id}, and this copy of {info.log_id} is the one left "
                "behind (if it sits where the live log belongs, it was put back)"
            )
        return db, info, keys, problem
    if keys is not None:
        problem = (
            f"the key file {str(key_path)!r} belongs to log {keys.log_id}, not to "
            f"this log ({info.log_id}): this log replaced the one it belongs to, or the "
            "key file is another log's"
        )
    return db, info, None, problem


@dataclass(frozen=True)
class Opened:
    """A log opened for writing: checked against its key file, at the current schema."""

    db: sqlite3.Connection
    files: LogFiles
    meta: Meta
    keys: KeyFile


def open_writer(
    path: Path,
    key_path: Path,
    *,
    create: bool,
    busy: float,
    every: int,
    clock: Callable[[], datetime],
) -> Opened:
    """Open the log at ``path`` for writing, creating it (and its key file) when it does not
    exist and ``create`` allows; ``every`` is the checkpoint interval of a new log."""
    if not create and not path.is_file():
        raise _no_log(path)
    if not path.exists() and key_path.is_file():
        _refuse_new_log(path, key_path, KeyFile.read(key_path), "is missing")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        raise error(path, "create", exc) from exc
    try:
        check_private(path, "transfer log")
    except ConfigError as exc:
        raise AuditLogError(exc.message, hint=exc.hint) from exc
    db, wal = connect(path, readonly=False, busy=busy)
    files = LogFiles(path, wal=wal)
    try:
        db.execute("BEGIN IMMEDIATE")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            _create(db, path, key_path, every, clock)
        db.execute("COMMIT")
        files.sync()
    except sqlite3.Error as exc:
        _rollback(db)
        raise error(path, "initialise", exc) from exc
    except BaseException:
        _rollback(db)
        raise
    version = check_schema(db, path)
    info = read_meta(db, path, readonly=False)
    keys = _writer_keys(path, key_path, info)
    if version < SCHEMA_VERSION:
        _migrate(db, path, files, keys, info, version)
    return Opened(db, files, info, keys)


def _writer_keys(path: Path, key_path: Path, info: Meta) -> KeyFile:
    """The key file of the log at ``path``, which a writer needs: present, of this log (not
    one it left behind at a restart), and in a folder where its state can be recorded."""
    if not key_path.is_file():
        raise AuditLogError(
            f"the key file of the transfer log {str(path)!r} is missing "
            f"(expected {str(key_path)!r})",
            hint="restore it from a backup, or start a new log with --log; the existing log "
            "can still be read and verified with --readonly commands",
        )
    keys = KeyFile.read(key_path)
    if keys.log_id != info.log_id and info.log_id in keys.previous:
        raise LogIntegrityError(
            f"the transfer log {str(path)!r} is log {info.log_id}, which its key file "
            f"left behind when the log was restarted as {keys.log_id}: an abandoned log was "
            "put back in the live log's place; nothing was written",
            found="superseded",
            hint="find the restarted log (veilpix audit verify names it), or start over "
            f"again: veilpix audit restart --log {str(path)!r} --reason TEXT",
        )
    if keys.log_id != info.log_id or keys.public_raw != info.public_key:
        raise AuditLogError(
            f"the key file {str(key_path)!r} belongs to another log",
            hint="each log has its own key file, named after the log with .key appended",
        )
    folder = Path(os.path.realpath(key_path)).parent
    if not os.access(folder, os.W_OK):
        raise AuditLogError(
            f"the key file {str(key_path)!r} is in a folder veilpix cannot write: it "
            "records each checkpoint there (so that a deleted or cut-back log is noticed)",
            hint="keep the key file on a private, writable volume (not a read-only secret "
            "mount); copy it there with mode 0600 and point [log] key or --key at it",
        )
    return keys


def _refuse_new_log(path: Path, key_path: Path, keys: KeyFile, what: str) -> None:
    """A key file that already belongs to a founded log must not found another one under
    the same id: the log it belongs to was deleted, emptied or replaced."""
    state = keys.state
    if state is None:
        return  # never bound (a crash between creating the keys and the log): adopt it
    where = (
        f"checkpoint {state['checkpoint']} (entry {state.get('seq')}, signed {state.get('ts')})"
        if state.get("checkpoint")
        else f"its founding on {state.get('founded')}"
    )
    raise LogIntegrityError(
        f"the transfer log {str(path)!r} {what}, but its key file "
        f"{str(key_path)!r} belongs to log {keys.log_id}, last known at {where}: "
        "the log was deleted, emptied or replaced; nothing was written",
        found="missing" if what == "is missing" else "emptied",
        hint="restore the log from a backup; to start a new log and record why, run: "
        f"veilpix audit restart --log {str(path)!r} --reason TEXT",
    )


def _create(
    db: sqlite3.Connection,
    path: Path,
    key_path: Path,
    every: int,
    clock: Callable[[], datetime],
) -> None:
    # The key file comes first: if we crash before the schema commits, the next opener
    # adopts it (no entry was ever signed with it; its state says so).
    if key_path.is_file():
        keys = KeyFile.read(key_path)
        _refuse_new_log(path, key_path, keys, "is empty")
    else:
        keys = KeyFile.create_or_read(key_path, str(uuid.uuid4()))
    for version in sorted(_MIGRATIONS):
        for stmt in _MIGRATIONS[version]:
            db.execute(stmt)
    meta_rows = founding_meta(keys, every, now_text(clock()), SCHEMA_VERSION)
    db.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", meta_rows)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def founding_meta(keys: KeyFile, every: int, now: str, schema: int) -> list[tuple[str, str]]:
    """A new log's settings, as ``meta`` rows: its id, public key, creation time, checkpoint
    interval and the founding statement's signature over them (a file log's and a fleet's)."""
    founding = founding_statement(keys.log_id, every, now)
    return [
        ("log_id", keys.log_id),
        ("public_key", keys.public_raw.hex()),
        ("key_id", key_id(keys.public_raw)),
        ("created", now),
        ("checkpoint_every", str(every)),
        ("founding_signature", keys.sign(founding).hex()),
        ("schema", str(schema)),
    ]


def check_schema(db: sqlite3.Connection, path: Path) -> int:
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise AuditLogError(
            f"{str(path)!r} is not a veilpix transfer log: {exc}",
            hint="pass --log with the path of a log written by veilpix",
        ) from exc
    if version > SCHEMA_VERSION:
        raise AuditLogError(
            f"the transfer log {str(path)!r} was written by a newer veilpix "
            f"(schema {version}, this version knows {SCHEMA_VERSION})",
            hint=f"upgrade veilpix: {install_command(upgrade=True)}",
        )
    if version == 0:
        raise AuditLogError(
            f"{str(path)!r} is not a veilpix transfer log (an SQLite file of something "
            "else, or empty)",
            hint="pass --log with the path of a log written by veilpix",
        )
    return version


def _migrate(  # noqa: PLR0917 - the log as opened so far
    db: sqlite3.Connection, path: Path, files: LogFiles, keys: KeyFile, info: Meta, version: int
) -> None:
    """Bring an older log up to this schema. Schema 2 adds the entries' MACs: the chain
    as it stands is checked as the older version would have (signatures, the tail's
    links), then every entry gets its MAC, and ``mac_since`` records the first entry that
    got one when it was written (verify says so)."""
    if keys.state is not None or keys.restart is not None or keys.previous:
        # only a key file from before schema 2 has none of these
        raise damaged(
            path,
            f"it claims to be a schema {version} log, older than its key file, which has "
            "recorded it since schema 2 (the schema was set back to have unauthenticated "
            "entries given MACs)",
        )
    check_founding(db, path, info)
    try:
        db.execute("BEGIN IMMEDIATE")
        current = db.execute("PRAGMA user_version").fetchone()[0]
        for v in range(current + 1, SCHEMA_VERSION + 1):
            for stmt in _MIGRATIONS[v]:
                db.execute(stmt)
            db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(v),))
        if current < 2:
            problem = check_tail(db, info.log_id, info.checkpoint_every, info.public_key)
            if problem is not None:
                raise damaged(path, problem.message)
            rows = db.execute("SELECT seq, hash FROM entries").fetchall()
            if not all(isinstance(h, bytes) and type(seq) is int for seq, h in rows):
                raise damaged(path, "it holds entries with values veilpix never writes")
            macs = [(keys.entry_mac(h, info.log_id), seq) for seq, h in rows]
            db.executemany("UPDATE entries SET mac=? WHERE seq=?", macs)
            head = max((seq for seq, _ in rows), default=0)
            db.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('mac_since', ?)",
                (str(head + 1),),
            )
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")
        files.sync()
    except sqlite3.Error as exc:
        _rollback(db)
        raise error(path, "migrate", exc) from exc
    except BaseException:
        _rollback(db)
        raise


def read_meta(db: sqlite3.Connection, path: Path, *, readonly: bool) -> Meta:
    log_id = meta(db, path, "log_id")
    public_key = b""
    try:
        public_key = bytes.fromhex(meta(db, path, "public_key"))
        every = int(meta(db, path, "checkpoint_every"))
    except ValueError as exc:
        if not readonly:
            raise damaged(path, f"its settings hold values veilpix never writes ({exc})") from exc
        every = 0  # verify reports the founding statement as not signed
    return Meta(log_id, public_key, every)


def meta(db: sqlite3.Connection, path: Path, key: str) -> str:
    try:
        row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    except sqlite3.Error as exc:  # its tables were dropped: an emptied log
        raise LogIntegrityError(
            f"the transfer log {str(path)!r} is not readable as a log ({exc}): it "
            "was emptied or damaged; nothing was written",
            found="emptied",
            hint=f"restore it from a backup, or start over and record why: veilpix audit "
            f"restart --log {str(path)!r} --reason TEXT",
        ) from exc
    if row is None:
        raise AuditLogError(
            f"the transfer log {str(path)!r} lacks its {key!r}",
            hint="it is damaged, or was written by a pre-release veilpix whose logs this "
            "version cannot read; start a new log with --log",
        )
    return str(row[0])


def check_founding(db: sqlite3.Connection, path: Path, info: Meta) -> None:
    """Raise unless the founding statement (id, checkpoint interval) carries the log's
    signature."""
    founding = founding_statement(info.log_id, info.checkpoint_every, meta(db, path, "created"))
    try:
        signature = bytes.fromhex(meta(db, path, "founding_signature"))
    except ValueError:
        signature = b""
    if not verify_signature(info.public_key, signature, founding):
        raise damaged(path, "its founding statement (id, checkpoint interval) is not signed")


def newest_checkpoint(db: sqlite3.Connection) -> Signed | None:
    row = db.execute(
        "SELECT id, seq, signature, ts FROM checkpoints ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    return row[0], row[1], hashlib.sha256(row[2]).hexdigest(), str(row[3])


def next_state(
    key_path: Path, keys: KeyFile, founded: Callable[[], str], signed: Signed | None
) -> tuple[KeyFile, bool]:
    """The key file at ``key_path`` with the log's newest durable checkpoint (None: just
    founded) as its state, and whether it must be saved for that: not when the file already
    holds that one or a newer one (writers in several processes race here; the newest wins;
    an older copy put in its place is brought up to date). ``founded`` gives the log's
    creation time. OSError or ConfigError when the file cannot be read, or another key file
    took its place."""
    current = KeyFile.read(key_path)
    if (current.log_id, current.hmac_key, current.signing_seed) != (
        keys.log_id,
        keys.hmac_key,
        keys.signing_seed,
    ):
        raise ConfigError("another key file took its place")
    have = current.state or {}
    newer = signed is not None and int(have.get("checkpoint") or 0) < signed[0]
    if have.get("log_id") == keys.log_id and not newer:
        return current, False
    state: dict[str, Any] = {"log_id": keys.log_id, "founded": founded(), "checkpoint": 0}
    if signed is not None:
        state.update(checkpoint=signed[0], seq=signed[1], signature=signed[2], ts=signed[3])
    return current.evolve(state=state, restart=None), True


# -- a writer's files --------------------------------------------------------------------------


class LogFiles:
    """What a writer holds besides its connection: the log's identity (device, inode) when it
    was opened, an fd of its WAL to fsync, and an fd of ``<log>-lock`` for the writers'
    cross-process lock."""

    def __init__(self, path: Path, *, wal: bool) -> None:
        self.path = path
        self.wal = wal  # WAL mode: a durable commit fsyncs the WAL itself (see sync)
        opened = os.stat(path)
        self.identity = (opened.st_dev, opened.st_ino)
        self.shm = path.with_name(path.name + "-shm")
        self._walfd: int | None = None
        self._lockfd: int | None = None
        self._lock = threading.Lock()  # the writer and the sync thread may both sync

    def sync(self) -> None:
        """Make the committed transactions durable: fsync the WAL (WAL mode; otherwise the
        connection's synchronous=FULL already did)."""
        if not self.wal:
            return
        try:
            with self._lock:
                if self._walfd is None:
                    wal = self.path.with_name(self.path.name + "-wal")
                    self._walfd = os.open(wal, os.O_RDONLY | os.O_CLOEXEC)
                fd = self._walfd
            os.fsync(fd)
        except OSError as exc:
            raise error(self.path, "make durable", exc) from exc

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold ``<log>-lock``, which writers in other processes flock around each write
        transaction. SQLite alone would keep them apart too, but its busy handler polls with
        sleeps of 1 to 100 ms; a waiter on flock is woken the moment the lock is free, which
        matters when several proxy workers append at once. Where the lock file cannot be had,
        nothing is held (the log is still correct without it)."""
        if self._lockfd is None and fcntl is not None:
            lock_path = self.path.with_name(self.path.name + "-lock")
            with suppress(OSError):
                self._lockfd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fd = self._lockfd
        if fd is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def check_present(self) -> None:
        """Raise AuditLogError when the log file was removed or replaced since it was opened:
        SQLite would write to a removed file's inode, and the records would be lost."""
        try:
            now = os.stat(self.path)
        except OSError as exc:
            raise AuditLogError(
                f"the transfer log {str(self.path)!r} is gone ({exc.strerror})",
                hint="restore it (or restart with the log where it belongs); nothing was sent",
            ) from exc
        if (now.st_dev, now.st_ino) != self.identity:
            raise AuditLogError(
                f"the transfer log {str(self.path)!r} was replaced by another file while "
                "veilpix was writing it",
                hint="restart veilpix with the log it should write; nothing was sent",
            )

    def check_shm(self) -> None:
        """Raise AuditLogError when the shared-memory index cannot be written. Only it is
        mapped into memory (a write to it faults, SIGBUS, when the file was made immutable);
        the log and its WAL are written with write(), which fails cleanly."""
        if self.wal and not os.access(self.shm, os.W_OK):
            raise AuditLogError(
                f"the transfer log file {str(self.shm)!r} is missing or cannot be written "
                "(read-only or immutable)",
                hint=f"make the log's files writable again (chmod u+w, chattr -i) in "
                f"{str(self.path.parent)!r}; nothing was sent",
            )

    def close(self) -> None:
        """Close the fds. Also after a fork, where they are the parent's: the child opens its
        own, under a lock of its own (the parent's may have been held by another thread)."""
        for fd in (self._walfd, self._lockfd):
            if fd is not None:
                with suppress(OSError):
                    os.close(fd)
        self._walfd = self._lockfd = None
        self._lock = threading.Lock()
