"""The transfer log: what was sent where, written before it is sent, tamper-evident.

Storage is one SQLite file in WAL mode (created 0600) plus a key file beside it
(:mod:`veilpix.audit._keys`). The log is an append-only chain of *entries*:

- ``begin``: written and committed (``synchronous=FULL``) before a byte leaves; a transfer
  whose ``begin`` has no ``finish`` is shown as "outcome unknown", never lost;
- ``finish``: outcome (sent / failed / blocked), HTTP status, sizes, latency, reason;
  committed without waiting for the disk (``synchronous=NORMAL``), and made durable by the
  next ``begin``, checkpoint or close: a crash can lose the latest finishes, whose
  transfers then show as "outcome unknown" (never a finish without its begin);
- ``erase``: tombstone of a subject erasure; ``prune``: the bridge over a retention cut.

Each entry's hash covers the previous entry's hash, its sequence number, kind, record id, time,
subject key id and canonical JSON body. Checkpoints sign (Ed25519) the head of the chain every
``checkpoint_every`` entries, every ``checkpoint_seconds`` while a writer is open, on close,
on open when a crashed writer left an unsigned tail, and after every erasure or prune.

Writers in several threads and several processes append under SQLite's write lock
(``BEGIN IMMEDIATE``): each append reads the head inside the transaction, so the chain stays
one line whoever writes.

Group commit: ``begin``, ``finish`` and ``block`` calls that arrive from several threads while
a commit is under way are written together in the next transaction, one ``SAVEPOINT`` each,
and made durable by one fsync. Each caller still returns only after the commit that holds its
entry, so "committed before a byte leaves" is unchanged; a failing call (a finish for an
unknown record, say) is rolled back to its savepoint without touching the others.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import stat
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from veilpix._config import Config, default_log_path, load_config, parse_age
from veilpix._errors import AuditLogError, ConfigError, LogIntegrityError
from veilpix.audit._keys import (
    KeyFile,
    SealError,
    check_private,
    key_id,
    open_sealed,
    seal,
    verify_signature,
)
from veilpix.audit._record import (
    OutboundImage,
    Outcome,
    Transfer,
    clip_text,
    data_categories,
    image_facts,
    redact_headers,
    redact_url,
    scrub_secrets,
)

_T = TypeVar("_T")

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: SQLite's own locking only
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from veilpix.audit._verify import VerifyResult

__all__ = [
    "AuditLog",
    "Erasure",
    "PendingTransfer",
    "Pruned",
    "StatsRow",
    "TransferRecord",
    "canonical",
    "checkpoint_message",
    "entry_hash",
    "founding_statement",
    "genesis",
    "key_path_for",
    "summarize",
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
_ENTRY_DOMAIN = b"veilpix-audit-entry/1\0"
_CHECKPOINT_DOMAIN = b"veilpix-audit-checkpoint/1\0"
_FOUNDING_DOMAIN = b"veilpix-audit-founding/1\0"
_PERIODIC = ("every", "interval")
KINDS = ("begin", "finish", "erase", "prune", "restart")


# -- chain primitives (shared with the verifier) ---------------------------------------------


def canonical(obj: Any) -> str:
    """The one JSON text of ``obj`` that is hashed: sorted keys, no spaces, UTF-8."""
    return _CANONICAL.encode(obj)


# json.dumps with these options would build an encoder per call; one is enough (it keeps no
# state between calls).
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def genesis(log_id: str) -> bytes:
    """The ``prev`` of the first entry and the ``prev`` signature of the first checkpoint."""
    return hashlib.sha256(b"veilpix-audit-genesis\0" + log_id.encode()).digest()


def entry_hash(  # noqa: PLR0917 - one argument per hashed column
    prev: bytes, seq: int, kind: str, record: str | None, ts: str, subject: str | None, body: str
) -> bytes:
    fields = canonical([seq, kind, record, ts, subject, body]).encode()
    return hashlib.sha256(_ENTRY_DOMAIN + prev + fields).digest()


def founding_statement(log_id: str, every: int, created: str) -> bytes:
    """What the signature made when a log is created covers: its id and its checkpoint
    interval. Verify trusts the interval only through this signature, so nobody can claim a
    log that "never needed" the checkpoints they deleted."""
    doc = {"log": log_id, "checkpoint_every": every, "created": created}
    return _FOUNDING_DOMAIN + canonical(doc).encode()


def checkpoint_message(  # noqa: PLR0917 - one argument per signed field
    log_id: str, cp_id: int, seq: int, head: bytes, ts: str, reason: str, prev_sig: bytes
) -> bytes:
    """What a checkpoint's Ed25519 signature covers. ``prev_sig`` is SHA-256 of the previous
    checkpoint's signature (genesis for the first), so checkpoints form a chain of their own."""
    doc = {"log": log_id, "id": cp_id, "seq": seq, "head": head.hex(), "ts": ts,
           "reason": reason, "prev": prev_sig.hex()}  # fmt: skip
    return _CHECKPOINT_DOMAIN + canonical(doc).encode()


def _now_text(now: datetime) -> str:
    """``2026-11-26T12:45:00.123456Z`` (what strftime("%Y-%m-%dT%H:%M:%S.%fZ") gives, faster)."""
    return now.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _new_record_id() -> str:
    """A random UUID: unique without coordination between processes, and any 8 leading
    characters are as good as the whole for finding it (order comes from the chain)."""
    return str(uuid.uuid4())


def key_path_for(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".key")


# -- records as read back ---------------------------------------------------------------------


@dataclass(frozen=True)
class TransferRecord:
    """One transfer as read back: the ``begin`` facts and, once known, the ``finish`` facts.

    ``outcome`` is ``sent``, ``failed``, ``blocked`` or ``unknown`` (begun, never finished:
    the process died or is still waiting for the vendor). ``subject`` is ``none`` (no subject
    linked), ``open`` (linked; sealed fields decrypted), ``sealed`` (linked; no key file at
    hand) or ``erased`` (the subject's key was destroyed; those fields are gone).
    """

    id: str
    seq: int
    begun: str
    begin: Mapping[str, Any]
    finished: str | None = None
    finish: Mapping[str, Any] | None = None
    subject: str = "none"
    sealed: Mapping[str, Any] | None = None

    @property
    def outcome(self) -> str:
        return "unknown" if self.finish is None else str(self.finish.get("outcome", "unknown"))

    @property
    def where(self) -> Mapping[str, Any]:
        return self.begin.get("where", {})  # type: ignore[no-any-return]

    @property
    def what(self) -> Mapping[str, Any]:
        return self.begin.get("what", {})  # type: ignore[no-any-return]

    @property
    def who(self) -> Mapping[str, Any]:
        return self.begin.get("who", {})  # type: ignore[no-any-return]

    @property
    def why(self) -> Mapping[str, Any]:
        return self.begin.get("why", {})  # type: ignore[no-any-return]

    @property
    def month(self) -> str:
        return self.begun[:7]

    @property
    def faces_unblurred(self) -> int:
        return sum(int(i.get("faces_unblurred") or 0) for i in self.what.get("images", ()))

    @property
    def faces_unchecked(self) -> int:
        """Images sent without a face check (their faces, if any, are not counted)."""
        return sum(1 for i in self.what.get("images", ()) if i.get("faces_checked") is False)

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON shape used by ``--json``, JSON Lines export and the HTML report."""
        b, f = self.begin, self.finish or {}
        why = dict(self.why)
        images = [dict(i) for i in self.what.get("images", ())]
        if self.sealed is not None:
            why["subject_ref"] = self.sealed.get("subject_ref")
            why["consent_ref"] = self.sealed.get("consent_ref")
            for img, fps in zip(images, self.sealed.get("fingerprints", ()), strict=False):
                img["fingerprint_before"], img["fingerprint_after"] = fps
        elif self.subject in ("sealed", "erased"):
            why["subject_ref"] = why["consent_ref"] = f"[{self.subject}]"
        what = dict(self.what, images=images)
        if self.sealed is not None and self.sealed.get("prompt_fingerprint"):
            what["prompt"] = dict(what.get("prompt") or {},
                                  fingerprint=self.sealed["prompt_fingerprint"])  # fmt: skip
        return {
            "id": self.id,
            "seq": self.seq,
            "begun": self.begun,
            "finished": self.finished,
            "outcome": self.outcome,
            "status": f.get("status"),
            "reason": f.get("reason"),
            "rule": f.get("rule") or b.get("rule"),
            "latency_ms": f.get("latency_ms"),
            "request_bytes": f.get("request_bytes") or self.what.get("request_bytes"),
            "response_bytes": f.get("response_bytes"),
            "vendor_request_id": f.get("vendor_request_id"),
            "who": dict(self.who),
            "what": what,
            "where": dict(self.where),
            "why": why,
            "subject": self.subject,
            "controls": dict(b.get("controls", {})),
            "headers": dict(b.get("headers", {})),
            "retention": b.get("retention"),
        }


@dataclass(frozen=True)
class Erasure:
    """What ``AuditLog.erase`` did: records whose subject-linked fields are now unreadable."""

    records: int
    tombstone_seq: int | None
    physically_overwritten: bool


@dataclass(frozen=True)
class Pruned:
    """What ``AuditLog.prune`` removed, and the prune entry that bridges the cut."""

    entries: int
    records: int
    through_seq: int | None
    cutoff: str
    prune_seq: int | None


class PendingTransfer:
    """A begun transfer. Call :meth:`finish` (or :meth:`fail`) once the call is over."""

    def __init__(self, log: AuditLog, record_id: str) -> None:
        self.id = record_id
        self._log = log
        self._t0 = time.perf_counter()
        self.finished = False

    def finish(
        self,
        *,
        status: int | None = None,
        outcome: Outcome = "sent",
        response_bytes: int | None = None,
        request_bytes: int | None = None,
        reason: str | None = None,
        vendor_request_id: str | None = None,
    ) -> None:
        """Record how the call ended. ``outcome="sent"`` means the request left (whatever the
        HTTP status); ``failed`` means it may not have arrived (connection error, timeout)."""
        latency = (time.perf_counter() - self._t0) * 1000
        self._log.finish(
            self.id,
            status=status,
            outcome=outcome,
            response_bytes=response_bytes,
            request_bytes=request_bytes,
            reason=reason,
            vendor_request_id=vendor_request_id,
            latency_ms=latency,
        )
        self.finished = True

    async def afinish(
        self,
        *,
        status: int | None = None,
        outcome: Outcome = "sent",
        response_bytes: int | None = None,
        request_bytes: int | None = None,
        reason: str | None = None,
        vendor_request_id: str | None = None,
    ) -> None:
        """:meth:`finish` for asyncio code (see :meth:`AuditLog.abegin`)."""
        latency = (time.perf_counter() - self._t0) * 1000
        self.finished = True  # claimed now: a concurrent afail must not finish it twice
        try:
            await self._log.afinish(
                self.id,
                status=status,
                outcome=outcome,
                response_bytes=response_bytes,
                request_bytes=request_bytes,
                reason=reason,
                vendor_request_id=vendor_request_id,
                latency_ms=latency,
            )
        except Exception:  # not on cancellation: the shielded commit still goes ahead
            self.finished = False
            raise

    def finish_nowait(
        self,
        *,
        status: int | None = None,
        outcome: Outcome = "sent",
        response_bytes: int | None = None,
        request_bytes: int | None = None,
        reason: str | None = None,
        vendor_request_id: str | None = None,
    ) -> None:
        """:meth:`finish` without waiting: the finish is queued for the log's writer thread,
        which commits it with whatever else is waiting (for the proxy, whose answer to the
        app need not wait for the record of it). Readers of this handle see it; a finish
        that cannot be written is reported on the ``veilpix.audit`` logger, and the record
        then shows the outcome as unknown."""
        latency = (time.perf_counter() - self._t0) * 1000
        self.finished = True
        log = self._log
        op = log._finish_op(self.id, outcome, status, response_bytes, request_bytes, reason,
                            vendor_request_id, latency)  # fmt: skip
        log._enqueue(_Ticket(op, durable=False))

    def fail(self, reason: str) -> None:
        self.finish(outcome="failed", reason=reason)

    async def afail(self, reason: str) -> None:
        await self.afinish(outcome="failed", reason=reason)


# -- the log ------------------------------------------------------------------------------------


class AuditLog:
    """The transfer log at ``path`` (default :func:`default_log_path`).

    Opening creates the file (0600), its folder (0700) and the key file beside it when they do
    not exist. ``readonly=True`` opens an existing log for review and verification without
    touching it; the key file is then optional (without it, subject-linked fields stay sealed).
    ``checkpoint_every`` is fixed when the log is created (and signed, so verify can insist on
    a checkpoint at every multiple of it); opening an existing log uses the log's own value.
    ``mechanisms`` maps a vendor name to the transfer mechanism recorded when the door does not
    give one. ``encrypt_prompts=True`` stores each prompt encrypted (under the subject's key
    when the call names a subject, so erasure covers it) in addition to length and fingerprint.
    ``clock`` replaces the wall clock (for imports and tests); times are stored in UTC.
    ``create=False`` opens an existing log for writing and never creates one.

    Every write error becomes :class:`~veilpix.AuditLogError`; a door that gets one does not
    send. Thread-safe; several processes may write the same file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        key_path: str | os.PathLike[str] | None = None,
        readonly: bool = False,
        create: bool = True,
        checkpoint_every: int = 1000,
        checkpoint_seconds: float = 60.0,
        mechanisms: Mapping[str, str] | None = None,
        encrypt_prompts: bool = False,
        busy_timeout: float = 30.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if checkpoint_every < 1 or checkpoint_seconds <= 0:
            raise ConfigError("checkpoint_every and checkpoint_seconds must be above 0")
        self.path = Path(path).expanduser() if path is not None else default_log_path()
        key_path = key_path if key_path is not None else os.environ.get("VEILPIX_LOG_KEY") or None
        self.key_path = (
            Path(key_path).expanduser() if key_path is not None else key_path_for(self.path)
        )
        self.readonly = readonly
        self._create_missing = create
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.mechanisms = dict(mechanisms or {})
        self.encrypt_prompts = encrypt_prompts
        self._busy = busy_timeout
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._identity: tuple[int, int] | None = None  # the log file's (device, inode)
        self._queue: list[_Ticket] = []  # group commit: appends waiting for the next commit
        self._queue_lock = threading.Lock()
        self._drainer: ThreadPoolExecutor | None = None  # commits the async callers' appends
        self._drain_due = False
        # ... and another thread makes them durable (fsync) while the writer goes on
        self._syncer: ThreadPoolExecutor | None = None
        self._carried: list[_FinishOp] = []  # finishes waiting for a transaction that succeeds
        self._unsynced: list[list[_Ticket]] = []
        self._sync_due = False
        self._sync_lock = threading.Lock()
        self._lockfd: int | None = None  # see _writer_lock
        # WAL mode: the connection runs synchronous=NORMAL and a durable commit fsyncs the WAL
        # itself, after giving up the cross-process lock (see _write); otherwise FULL.
        self._wal_sync = False
        self._walfd: int | None = None
        # inside _run_batch: entry rows not inserted yet, and the head after them
        self._rows: list[tuple[Any, ...]] | None = None
        self._head: tuple[int, bytes, str] | None = None
        # The newest entry this handle has authenticated (written itself, or checked the MAC
        # and links of): a writer extends only that, or what it can authenticate from there.
        self._trusted: tuple[int, bytes] | None = None
        self._txn_head: tuple[int, bytes] | None = None  # ... once this transaction commits
        # the checkpoint this transaction signed (id, entry, SHA-256 of the signature, time):
        # the key file's state follows it once it is on disk
        self._signed_pending: tuple[int, int, str, str] | None = None
        # a state the key file could not record yet (the next write tries again first)
        self._state_due: tuple[tuple[int, int, str, str] | None] | None = None
        self._key_problem: str | None = None  # read-only: what is wrong with the key file
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        self._closed = False
        self._wrote = False
        self._pid = os.getpid()
        self._db: sqlite3.Connection | None = None
        self.keys: KeyFile | None = None
        if readonly:
            self._open_readonly()
        else:
            self._open_writable()

    @classmethod
    def from_config(
        cls,
        config: Config | str | os.PathLike[str] | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        key_path: str | os.PathLike[str] | None = None,
        readonly: bool = False,
        create: bool = True,
    ) -> AuditLog:
        """The log a ``veilpix.toml`` describes (see :func:`veilpix.load_config`). The path is
        ``path`` if given, else ``$VEILPIX_LOG``, else ``[log] path``, else the default; the
        key file ``key_path``, else ``$VEILPIX_LOG_KEY``, else ``[log] key``, else beside the
        log."""
        cfg = config if isinstance(config, Config) else load_config(config)
        chosen, key = cls.locate(cfg, path=path, key_path=key_path)
        return cls(
            chosen,
            key_path=key,
            readonly=readonly,
            create=create,
            checkpoint_every=cfg.log.checkpoint_every,
            checkpoint_seconds=cfg.log.checkpoint_seconds,
            encrypt_prompts=cfg.log.encrypt_prompts,
            mechanisms=cfg.mechanisms,
        )

    @staticmethod
    def locate(
        config: Config | str | os.PathLike[str] | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        key_path: str | os.PathLike[str] | None = None,
    ) -> tuple[Path, Path]:
        """(log, key file) as :meth:`from_config` chooses them, without opening anything."""
        cfg = config if isinstance(config, Config) else load_config(config)
        chosen = path or os.environ.get("VEILPIX_LOG") or cfg.log.path
        log = Path(chosen).expanduser() if chosen else default_log_path()
        key = key_path or os.environ.get("VEILPIX_LOG_KEY") or cfg.log.key
        return log, Path(key).expanduser() if key else key_path_for(log)

    # -- opening ------------------------------------------------------------------------------

    def _connect(self, *, readonly: bool) -> sqlite3.Connection:
        try:
            if readonly:
                uri = f"{self.path.absolute().as_uri()}?mode=ro"
                db = sqlite3.connect(uri, uri=True, timeout=self._busy,
                                     isolation_level=None, check_same_thread=False)  # fmt: skip
            else:
                db = sqlite3.connect(self.path, timeout=self._busy, isolation_level=None,
                                     check_same_thread=False)  # fmt: skip
                mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                self._wal_sync = str(mode).lower() == "wal"
                db.execute(f"PRAGMA synchronous={'NORMAL' if self._wal_sync else 'FULL'}")
                db.execute("PRAGMA secure_delete=ON")
            db.execute("PRAGMA trusted_schema=OFF")
            return db
        except sqlite3.Error as exc:
            raise self._error("open", exc) from exc

    def _error(self, doing: str, exc: BaseException) -> AuditLogError:
        return AuditLogError(f"cannot {doing} the transfer log {str(self.path)!r}: {exc}")

    def _no_log(self) -> AuditLogError:
        return AuditLogError(
            f"there is no transfer log at {str(self.path)!r}",
            hint="pass --log FILE (or set VEILPIX_LOG) to the log the SDK or proxy writes",
        )

    def _open_readonly(self) -> None:
        if not self.path.is_file():
            raise self._no_log()
        self._db = self._connect(readonly=True)
        if self._check_schema(self._db) < SCHEMA_VERSION:
            raise AuditLogError(
                f"the transfer log {str(self.path)!r} was written by an older veilpix and has "
                "not been upgraded yet",
                hint="open it for writing once (any veilpix command that writes, or "
                "veilpix audit checkpoint) to upgrade it in place",
            )
        self._read_meta()
        self._key_problem = None
        try:
            keys = KeyFile.read(self.key_path) if self.key_path.is_file() else None
        except PermissionError:  # a reviewer who may read the log but not its key file
            keys = None
        except ConfigError as exc:
            keys, self._key_problem = None, exc.message
        if keys is not None and keys.knows(self.log_id):
            self.keys = keys
            if keys.log_id != self.log_id:
                self._key_problem = (
                    f"the key file {str(self.key_path)!r} has moved on: this log was restarted "
                    f"as log {keys.log_id}, and this copy of {self.log_id} is the one left "
                    "behind (if it sits where the live log belongs, it was put back)"
                )
        elif keys is not None:
            self._key_problem = (
                f"the key file {str(self.key_path)!r} belongs to log {keys.log_id}, not to "
                f"this log ({self.log_id}): this log replaced the one it belongs to, or the "
                "key file is another log's"
            )

    def _open_writable(self) -> None:
        if not self._create_missing and not self.path.is_file():
            raise self._no_log()
        if not self.path.exists() and self.key_path.is_file():
            self._refuse_new_log(KeyFile.read(self.key_path), "is missing")
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as exc:
            raise self._error("create", exc) from exc
        try:
            check_private(self.path, "transfer log")
        except ConfigError as exc:
            raise AuditLogError(exc.message, hint=exc.hint) from exc
        db = self._db = self._connect(readonly=False)
        opened = os.stat(self.path)
        self._identity = (opened.st_dev, opened.st_ino)
        self._shm = self.path.with_name(self.path.name + "-shm")
        try:
            db.execute("BEGIN IMMEDIATE")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self._create(db)
            db.execute("COMMIT")
            self._sync()
        except sqlite3.Error as exc:
            self._rollback()
            raise self._error("initialise", exc) from exc
        except BaseException:
            self._rollback()
            raise
        version = self._check_schema(db)
        self._read_meta()
        if not self.key_path.is_file():
            raise AuditLogError(
                f"the key file of the transfer log {str(self.path)!r} is missing "
                f"(expected {str(self.key_path)!r})",
                hint="restore it from a backup, or start a new log with --log; the existing log "
                "can still be read and verified with --readonly commands",
            )
        keys = KeyFile.read(self.key_path)
        if keys.log_id != self.log_id and self.log_id in keys.previous:
            raise LogIntegrityError(
                f"the transfer log {str(self.path)!r} is log {self.log_id}, which its key file "
                f"left behind when the log was restarted as {keys.log_id}: an abandoned log was "
                "put back in the live log's place; nothing was written",
                found="superseded",
                hint="find the restarted log (veilpix audit verify names it), or start over "
                f"again: veilpix audit restart --log {str(self.path)!r} --reason TEXT",
            )
        if keys.log_id != self.log_id or keys.public_raw != self.public_key:
            raise AuditLogError(
                f"the key file {str(self.key_path)!r} belongs to another log",
                hint="each log has its own key file, named after the log with .key appended",
            )
        folder = Path(os.path.realpath(self.key_path)).parent
        if not os.access(folder, os.W_OK):
            raise AuditLogError(
                f"the key file {str(self.key_path)!r} is in a folder veilpix cannot write: it "
                "records each checkpoint there (so that a deleted or cut-back log is noticed)",
                hint="keep the key file on a private, writable volume (not a read-only secret "
                "mount); copy it there with mode 0600 and point [log] key or --key at it",
            )
        self.keys = keys
        if version < SCHEMA_VERSION:
            self._migrate(db, version)
        self._recover()

    def _refuse_new_log(self, keys: KeyFile, what: str) -> None:
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
            f"the transfer log {str(self.path)!r} {what}, but its key file "
            f"{str(self.key_path)!r} belongs to log {keys.log_id}, last known at {where}: "
            "the log was deleted, emptied or replaced; nothing was written",
            found="missing" if what == "is missing" else "emptied",
            hint="restore the log from a backup; to start a new log and record why, run: "
            f"veilpix audit restart --log {str(self.path)!r} --reason TEXT",
        )

    def _create(self, db: sqlite3.Connection) -> None:
        # The key file comes first: if we crash before the schema commits, the next opener
        # adopts it (no entry was ever signed with it; its state says so).
        if self.key_path.is_file():
            keys = KeyFile.read(self.key_path)
            self._refuse_new_log(keys, "is empty")
        else:
            keys = KeyFile.create_or_read(self.key_path, str(uuid.uuid4()))
        for version in sorted(_MIGRATIONS):
            for stmt in _MIGRATIONS[version]:
                db.execute(stmt)
        now = _now_text(self._clock())
        every = self.checkpoint_every
        founding = founding_statement(keys.log_id, every, now)
        db.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?)",
            [
                ("log_id", keys.log_id),
                ("public_key", keys.public_raw.hex()),
                ("key_id", key_id(keys.public_raw)),
                ("created", now),
                ("checkpoint_every", str(every)),
                ("founding_signature", keys.sign(founding).hex()),
                ("schema", str(SCHEMA_VERSION)),
            ],
        )
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _check_schema(self, db: sqlite3.Connection) -> int:
        try:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise AuditLogError(
                f"{str(self.path)!r} is not a veilpix transfer log: {exc}",
                hint="pass --log with the path of a log written by veilpix",
            ) from exc
        if version > SCHEMA_VERSION:
            raise AuditLogError(
                f"the transfer log {str(self.path)!r} was written by a newer veilpix "
                f"(schema {version}, this version knows {SCHEMA_VERSION})",
                hint="upgrade veilpix: pip install -U veilpix",
            )
        if version == 0:
            raise AuditLogError(
                f"{str(self.path)!r} is not a veilpix transfer log (an SQLite file of something "
                "else, or empty)",
                hint="pass --log with the path of a log written by veilpix",
            )
        return version

    def _migrate(self, db: sqlite3.Connection, version: int) -> None:
        """Bring an older log up to this schema. Schema 2 adds the entries' MACs: the chain
        as it stands is checked as the older version would have (signatures, the tail's
        links), then every entry gets its MAC, and ``mac_since`` records the first entry that
        got one when it was written (verify says so)."""
        from veilpix.audit._verify import check_tail

        assert self.keys is not None
        if self.keys.state is not None or self.keys.restart is not None or self.keys.previous:
            # only a key file from before schema 2 has none of these
            raise self._damaged(
                f"it claims to be a schema {version} log, older than its key file, which has "
                "recorded it since schema 2 (the schema was set back to have unauthenticated "
                "entries given MACs)"
            )
        self._check_founding()
        try:
            db.execute("BEGIN IMMEDIATE")
            current = db.execute("PRAGMA user_version").fetchone()[0]
            for v in range(current + 1, SCHEMA_VERSION + 1):
                for stmt in _MIGRATIONS[v]:
                    db.execute(stmt)
                db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(v),))
            if current < 2:
                problem = check_tail(db, self.log_id, self.checkpoint_every, self.public_key)
                if problem is not None:
                    raise self._damaged(problem.message)
                rows = db.execute("SELECT seq, hash FROM entries").fetchall()
                if not all(isinstance(h, bytes) and type(seq) is int for seq, h in rows):
                    raise self._damaged("it holds entries with values veilpix never writes")
                macs = [(self.keys.entry_mac(h, self.log_id), seq) for seq, h in rows]
                db.executemany("UPDATE entries SET mac=? WHERE seq=?", macs)
                head = max((seq for seq, _ in rows), default=0)
                db.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('mac_since', ?)",
                    (str(head + 1),),
                )
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
            self._sync()
        except sqlite3.Error as exc:
            self._rollback()
            raise self._error("migrate", exc) from exc
        except BaseException:
            self._rollback()
            raise

    def _read_meta(self) -> None:
        self.log_id = self._meta("log_id")
        try:
            self.public_key = bytes.fromhex(self._meta("public_key"))
            self.checkpoint_every = int(self._meta("checkpoint_every"))
        except ValueError as exc:
            if not self.readonly:
                raise self._damaged(
                    f"its settings hold values veilpix never writes ({exc})"
                ) from exc
            self.checkpoint_every = 0  # verify reports the founding statement as not signed
            self.public_key = getattr(self, "public_key", b"")

    def _meta(self, key: str) -> str:
        try:
            row = self._conn().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        except sqlite3.Error as exc:  # its tables were dropped: an emptied log
            raise LogIntegrityError(
                f"the transfer log {str(self.path)!r} is not readable as a log ({exc}): it "
                "was emptied or damaged; nothing was written",
                found="emptied",
                hint=f"restore it from a backup, or start over and record why: veilpix audit "
                f"restart --log {str(self.path)!r} --reason TEXT",
            ) from exc
        if row is None:
            raise AuditLogError(
                f"the transfer log {str(self.path)!r} lacks its {key!r}",
                hint="it is damaged, or was written by a pre-release veilpix whose logs this "
                "version cannot read; start a new log with --log",
            )
        return str(row[0])

    def _damaged(self, problem: str) -> LogIntegrityError:
        return LogIntegrityError(
            f"the transfer log {str(self.path)!r} is damaged or was changed without its key "
            f"file: {problem}; nothing was written",
            found="changed",
            hint=f"see what changed: veilpix audit verify --log {str(self.path)!r}; keep the "
            "file for investigation; restore it from a backup, or start over and record why: "
            f"veilpix audit restart --log {str(self.path)!r} --reason TEXT",
        )

    def _check_founding(self) -> None:
        founding = founding_statement(self.log_id, self.checkpoint_every, self._meta("created"))
        try:
            signature = bytes.fromhex(self._meta("founding_signature"))
        except ValueError:
            signature = b""
        if not verify_signature(self.public_key, signature, founding):
            raise self._damaged("its founding statement (id, checkpoint interval) is not signed")

    def _recover(self) -> None:
        """Before the first write: check the log against its founding statement and its key
        file's state, authenticate the tail after the last checkpoint (links and MACs), then
        sign that tail (a crashed writer's) and write a pending restart statement."""
        from veilpix.audit._verify import check_tail

        assert self.keys is not None
        with self._write() as db:
            self._check_founding()
            problem = check_tail(
                db, self.log_id, self.checkpoint_every, self.public_key,
                keys=self.keys,
            )  # fmt: skip
            if problem is not None:
                raise self._damaged(problem.message)
            head = db.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
            self._trusted = None if head is None else (head[0], head[1])
            spilled = self._unspill(db)
            if (
                self.keys.restart is not None
                and not db.execute("SELECT 1 FROM entries WHERE kind='restart' LIMIT 1").fetchone()
            ):
                self._append(db, "restart", None, self.keys.restart)
                self._checkpoint(db, "restart")
            else:
                self._checkpoint(db, "open", only_if_unsigned=True)
        if spilled >= 0 and self._spill_path().exists():
            with suppress(OSError):  # read and written: done with it
                self._spill_path().unlink()
        state = self.keys.state or {}
        if state.get("log_id") != self.log_id or self.keys.restart is not None:
            self._save_state(self._newest_checkpoint())  # (keys from before the state)

    # -- plumbing ------------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise AuditLogError(f"the transfer log {str(self.path)!r} is closed")
        if self._pid != os.getpid():  # forked: SQLite connections must not cross a fork
            self._pid = os.getpid()
            self._db = self._connect(readonly=self.readonly)
            self._timer = None
            self._stop = threading.Event()
            self._lock = threading.RLock()
            self._queue, self._queue_lock = [], threading.Lock()
            self._drainer, self._drain_due = None, False
            self._syncer, self._unsynced, self._sync_due = None, [], False
            self._carried = []  # the parent's to write, not a second copy here
            self._sync_lock = threading.Lock()
            if self._walfd is not None:
                with suppress(OSError):
                    os.close(self._walfd)
                self._walfd = None
            if self._lockfd is not None:  # shared with the parent: a lock of our own
                with suppress(OSError):
                    os.close(self._lockfd)
                self._lockfd = None
        assert self._db is not None
        return self._db

    def _rollback(self) -> None:
        try:
            if self._db is not None and self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction. Durable by default: it returns once the commit is on disk.
        ``durable=False`` does not wait for the disk (consistent after a crash, but the last
        such commits may be lost); the next durable commit makes them durable too.

        In WAL mode the connection commits with ``synchronous=NORMAL`` (no fsync) and a durable
        commit then fsyncs the WAL file itself, which is what ``synchronous=FULL`` does, but
        after the lock other processes wait on is released: their commits need not queue
        behind this disk flush."""
        if self.readonly or self.keys is None:
            raise AuditLogError(f"the transfer log {str(self.path)!r} is open read-only")
        with self._lock:
            db = self._conn()
            lockfd = self._writer_lock()
            carried: list[_FinishOp] = []
            try:
                if lockfd is not None:
                    fcntl.flock(lockfd, fcntl.LOCK_EX)
                self._still_writable()
                self._fresh_transaction()
                db.execute("BEGIN IMMEDIATE")
                carried = self._write_carried(db) if self._carried else []
                yield db
                db.execute("COMMIT")
                if self._txn_head is not None:
                    self._trusted = self._txn_head
            except sqlite3.Error as exc:
                self._rollback()
                self._carry_again(carried)
                raise self._error("write", exc) from exc
            except BaseException:
                self._rollback()
                self._carry_again(carried)
                raise
            finally:
                self._txn_head = None
                if lockfd is not None:
                    fcntl.flock(lockfd, fcntl.LOCK_UN)
            signed, self._signed_pending = self._signed_pending, None
            if durable or signed is not None:
                self._sync()
            if signed is not None:
                self._save_state(signed)
        self._wrote = True
        self._start_timer()

    def _fresh_transaction(self) -> None:
        self._txn_head = self._signed_pending = None

    def _newest_checkpoint(self) -> tuple[int, int, str, str] | None:
        row = (
            self._conn()
            .execute("SELECT id, seq, signature, ts FROM checkpoints ORDER BY id DESC LIMIT 1")
            .fetchone()
        )
        if row is None:
            return None
        return row[0], row[1], hashlib.sha256(row[2]).hexdigest(), str(row[3])

    def _save_state(
        self, signed: tuple[int, int, str, str] | None, *, locked: bool = False
    ) -> bool:
        """Write the log's newest durable checkpoint (None: just founded) into the key file,
        unless the file already holds a newer one (writers in several processes race here;
        the newest wins; an older copy put in its place is brought up to date). ``locked``:
        the caller holds the writers' lock already. A failure (the key file moved away,
        another key file in its place, its folder not writable) is logged and remembered,
        not raised (the entry is committed): the next write tries again first, and is
        refused while the key file cannot record the log's state. Someone who moves the key
        file aside can therefore not keep the writers going past the next checkpoint with a
        key file that forgets them."""
        assert self.keys is not None
        lockfd = None if locked else self._writer_lock()
        try:
            if lockfd is not None:
                fcntl.flock(lockfd, fcntl.LOCK_EX)
            current = KeyFile.read(self.key_path)
            if (current.log_id, current.hmac_key, current.signing_seed) != (
                self.log_id,
                self.keys.hmac_key,
                self.keys.signing_seed,
            ):
                raise ConfigError("another key file took its place")
            have = current.state or {}
            newer = signed is not None and int(have.get("checkpoint") or 0) < signed[0]
            if have.get("log_id") == self.log_id and not newer:
                self.keys = current
            else:
                state: dict[str, Any] = {"log_id": self.log_id, "founded": self._meta("created"),
                                         "checkpoint": 0}  # fmt: skip
                if signed is not None:
                    state.update(checkpoint=signed[0], seq=signed[1], signature=signed[2],
                                 ts=signed[3])  # fmt: skip
                self.keys = current.evolve(state=state, restart=None)
                self.keys.save(self.key_path)
            self._state_due = None
            return True
        except (OSError, ConfigError) as exc:
            if self._state_due is None:
                _log.error(
                    "the key file %s could not record checkpoint %s of the transfer log (%s); "
                    "writes are refused until it can", self.key_path,
                    None if signed is None else signed[0], exc,
                )  # fmt: skip
            self._state_due = (signed,)
            return False
        finally:
            if lockfd is not None:
                fcntl.flock(lockfd, fcntl.LOCK_UN)

    def _still_writable(self) -> None:
        """Raise AuditLogError when the log's files were removed, replaced, or made
        read-only or immutable since it was opened. SQLite would write to a removed file's
        inode (the records lost) and, touching its shared-memory index of an immutable file,
        crash the process (SIGBUS); checked before every write transaction, so the call is
        refused instead (a 503 at the proxy), and writing resumes when the files are back."""
        try:
            now = os.stat(self.path)
        except OSError as exc:
            raise AuditLogError(
                f"the transfer log {str(self.path)!r} is gone ({exc.strerror})",
                hint="restore it (or restart with the log where it belongs); nothing was sent",
            ) from exc
        if self._identity is not None and (now.st_dev, now.st_ino) != self._identity:
            raise AuditLogError(
                f"the transfer log {str(self.path)!r} was replaced by another file while "
                "veilpix was writing it",
                hint="restart veilpix with the log it should write; nothing was sent",
            )
        # Only the shared-memory index is mapped into memory (a write to it faults); the
        # log and its WAL are written with write(), which fails cleanly (sqlite3.Error).
        if self._state_due is not None and not self._save_state(self._state_due[0], locked=True):
            raise AuditLogError(
                f"the key file {str(self.key_path)!r} cannot record the transfer log's newest "
                "checkpoint (moved away, replaced, or its folder not writable); nothing was sent",
                hint="put the key file back as it was and check its folder is writable and the "
                "disk has space; writing resumes by itself",
            )
        if self._wal_sync and not os.access(self._shm, os.W_OK):
            raise AuditLogError(
                f"the transfer log file {str(self._shm)!r} is missing or cannot be written "
                "(read-only or immutable)",
                hint=f"make the log's files writable again (chmod u+w, chattr -i) in "
                f"{str(self.path.parent)!r}; nothing was sent",
            )

    def _sync(self) -> None:
        """Make the committed transactions durable: fsync the WAL (WAL mode; otherwise the
        connection's synchronous=FULL already did)."""
        if not self._wal_sync:
            return
        try:
            with self._sync_lock:  # the writer and the sync thread may both get here first
                if self._walfd is None:
                    wal = self.path.with_name(self.path.name + "-wal")
                    self._walfd = os.open(wal, os.O_RDONLY | os.O_CLOEXEC)
                fd = self._walfd
            os.fsync(fd)
        except OSError as exc:
            raise self._error("make durable", exc) from exc

    def _writer_lock(self) -> int | None:
        """An fd of ``<log>-lock`` that writers in other processes flock around each write
        transaction. SQLite alone would keep them apart too, but its busy handler polls with
        sleeps of 1 to 100 ms; a waiter on flock is woken the moment the lock is free, which
        matters when several proxy workers append at once. None where it cannot be had (the
        log is still correct without it)."""
        if self._lockfd is None and fcntl is not None:
            lock_path = self.path.with_name(self.path.name + "-lock")
            with suppress(OSError):
                self._lockfd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._lockfd

    def _grouped(self, op: Callable[[sqlite3.Connection], _T], *, durable: bool = True) -> _T:
        """Run ``op`` inside a write transaction shared with the other threads' appends that
        are waiting at the same time, and return once that transaction is durable.

        The caller queues its op, then takes the writer lock. Whoever gets the lock first
        (the leader) runs every queued op, each in its own savepoint, and commits once; the
        others find their op already done when the lock comes to them."""
        ticket = _Ticket(op, durable=durable)
        ticket.raises = True
        with self._queue_lock:
            self._queue.append(ticket)
        with self._lock:
            if not ticket.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit_batch(batch)
        if ticket.error is not None:
            raise ticket.error
        return ticket.result  # type: ignore[no-any-return]

    def _submit(
        self, op: Callable[[sqlite3.Connection], _T], *, durable: bool = True
    ) -> Future[_T]:
        """Queue ``op`` for the next group commit without waiting: the returned future is
        resolved once the transaction holding it is durable (or failed). One writer thread
        drains the queue, committing whatever has gathered since its last commit."""
        future: Future[_T] = Future()
        self._enqueue(_Ticket(op, future, durable=durable))
        return future

    def _enqueue(self, ticket: _Ticket) -> None:
        with self._queue_lock:
            if self._closed:
                raise AuditLogError(f"the transfer log {str(self.path)!r} is closed")
            self._queue.append(ticket)
            schedule, self._drain_due = not self._drain_due, True
            if self._drainer is None:
                self._drainer = ThreadPoolExecutor(1, thread_name_prefix=_WRITER)
            if schedule:
                self._drainer.submit(self._drain)

    def _drain(self) -> None:
        batch: list[_Ticket] = []
        try:
            with self._lock:
                with self._queue_lock:
                    batch, self._queue, self._drain_due = self._queue, [], False
                if batch:
                    # Appends awaited by asyncio callers are made durable by the sync thread,
                    # so the writer can commit the next batch (finishes, say) during the
                    # fsync. A thread waiting in _grouped needs its append durable when done.
                    later = not any(t.durable and t.waiter is None for t in batch)
                    self._commit_batch(batch, sync_later=later)
        except BaseException as exc:  # nobody would ever wake the waiters otherwise
            for t in batch:
                if not t.done:
                    t.result, t.error = None, AuditLogError(f"the transfer log failed: {exc}")
            self._settle_all([t for t in batch if not t.done])
            raise

    def _caught_up(self) -> None:
        """Wait until what this handle has queued so far (``finish_nowait``) is committed, so
        that a read through it sees that too."""
        with self._queue_lock:
            drainer = self._drainer
        if drainer is None or threading.current_thread().name.startswith(_WRITER):
            return
        with suppress(RuntimeError):  # shut down: close() commits what is queued
            drainer.submit(_nothing).result()

    async def _awaited(self, op: Callable[[sqlite3.Connection], _T], *, durable: bool = True) -> _T:
        import asyncio

        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_T] = loop.create_future()
        self._enqueue(_Ticket(op, durable=durable, waiter=(loop, waiter)))
        # A caller cancelled while waiting does not withdraw the append (it may already be in
        # the transaction being committed); the writer skips settling a cancelled waiter.
        return await waiter

    def _commit_batch(self, batch: list[_Ticket], *, sync_later: bool = False) -> None:
        """Commit ``batch`` in one transaction. An op refused by its own check (a finish of an
        unknown or finished record raises AuditLogError before writing) fails alone; any
        other error rolls the transaction back and the ops are committed one by one, so
        that only the failing one fails. ``sync_later``: when more appends are already waiting,
        the durable ones are settled by the sync thread after its fsync (the writer goes on
        with the next batch) and the others at once; otherwise the fsync happens here."""
        fsync = not sync_later
        try:
            try:
                self._run_batch(batch, fsync=fsync)
            except _Redo:
                for t in batch:
                    t.result, t.error = None, None
                    try:
                        self._run_batch([t], fsync=fsync)
                    except _Redo as redo:
                        t.error = None if self._carry(t, redo.error) else redo.error
        except Exception as exc:  # noqa: BLE001 - the commit failed: nothing is durable
            for t in batch:
                t.result, t.error = None, None if self._carry(t, exc) else exc
        except BaseException:  # interrupted (KeyboardInterrupt in the leader): nothing is
            for t in batch:
                t.result = None
                t.error = AuditLogError("the write was interrupted before it was committed")
            raise
        finally:
            later = [t for t in batch if t.durable and t.error is None] if sync_later else []
            if later and not self._queue:  # nothing to commit meanwhile: no thread hop
                self._sync_for(later)
            elif later:
                self._sync_soon(later)
                batch = [t for t in batch if not (t.durable and t.error is None)]
            self._settle_all(batch)

    def _sync_soon(self, tickets: list[_Ticket]) -> None:
        with self._sync_lock:
            self._unsynced.append(tickets)
            if self._syncer is None:
                self._syncer = ThreadPoolExecutor(1, thread_name_prefix="veilpix-audit-sync")
            if not self._sync_due:
                self._sync_due = True
                self._syncer.submit(self._sync_pending)

    def _sync_pending(self) -> None:
        """One fsync for every batch committed before it started, then their waiters go."""
        with self._sync_lock:
            groups, self._unsynced, self._sync_due = self._unsynced, [], False
        tickets = [t for group in groups for t in group]
        self._sync_for(tickets)
        self._settle_all(tickets)

    def _sync_for(self, tickets: list[_Ticket]) -> None:
        """fsync for ``tickets``; when it fails they fail: committed but not known to be on
        disk, so their callers must not send."""
        try:
            self._sync()
        except AuditLogError as exc:
            for t in tickets:
                t.result, t.error = None, exc

    def _settle_all(self, batch: list[_Ticket]) -> None:
        """Mark ``batch`` done and hand each ticket's outcome to whoever waits for it."""
        waiting: dict[Any, list[_Ticket]] = {}
        for t in batch:
            t.done = True
            if t.error is not None and t.future is None and t.waiter is None and not t.raises:
                what = getattr(t.error, "message", t.error)  # (its hint is for senders)
                _log.error("the transfer log could not record an append: %s", what)
            if t.future is not None and not t.future.done():
                if t.error is not None:
                    t.future.set_exception(t.error)
                else:
                    t.future.set_result(t.result)
            if t.waiter is not None:
                waiting.setdefault(t.waiter[0], []).append(t)
        for loop, tickets in waiting.items():  # one wake-up per event loop and batch
            with suppress(RuntimeError):  # that loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_settle, tickets)

    def _run_batch(self, batch: list[_Ticket], *, fsync: bool = True) -> None:
        """One transaction for the ops of ``batch``. Their entries are computed in Python
        against the head kept in memory and inserted with one ``executemany``: few calls into
        SQLite, each of which gives up the GIL and must win it back from the event loop."""
        with self._write(durable=fsync and any(t.durable for t in batch)) as db:
            self._rows, self._head = [], None
            try:
                for t in batch:
                    mark, head = len(self._rows), self._head
                    try:
                        t.result = t.op(db)
                    except AuditLogError as exc:  # refused by the op's check, nothing written
                        del self._rows[mark:]
                        self._head = head
                        t.error = exc
                    except Exception as exc:
                        error = self._error("write", exc) if isinstance(exc, sqlite3.Error) else exc
                        raise _Redo(error) from exc
                self._flush_rows(db)
            finally:
                self._rows, self._head = None, None

    def _flush_rows(self, db: sqlite3.Connection) -> None:
        if self._rows:
            db.executemany(_INSERT_ENTRY, self._rows)
            self._txn_head = (self._rows[-1][0], self._rows[-1][7])
            self._rows.clear()

    def _append(
        self,
        db: sqlite3.Connection,
        kind: str,
        record: str | None,
        body: Mapping[str, Any],
        subject: str | None = None,
    ) -> int:
        assert self.keys is not None
        if self._head is not None:  # inside a batch, after its first append
            seq, prev, last_ts = self._head
        else:
            head = self._authenticated_head(db)
            if head is None:
                seq, prev, last_ts = 1, genesis(self.log_id), ""
            else:
                seq, prev, last_ts = head[0] + 1, head[1], head[2]
        ts = max(_now_text(self._clock()), last_ts)  # never runs backwards along the chain
        # Mask credential-shaped text anywhere in the body, in one pass over the JSON. Safe on
        # JSON: the patterns cannot match a quote or backslash, so they stay inside strings.
        text = _well_formed(scrub_secrets(canonical(body)))
        digest = entry_hash(prev, seq, kind, record, ts, subject, text)
        mac = self.keys.entry_mac(digest, self.log_id)
        row = (seq, kind, record, ts, subject, text, prev, digest, mac)
        if self._rows is not None:  # a batch: inserted together at its end
            self._rows.append(row)
            self._head = (seq + 1, digest, ts)
        else:
            db.execute(_INSERT_ENTRY, row)
            self._txn_head = (seq, digest)
        if seq % self.checkpoint_every == 0 or seq == 1:
            # (the first entry is signed at once: from then on the key file knows the log
            # has entries, and an emptied log is refused)
            self._flush_rows(db)
            self._checkpoint(db, "every" if seq % self.checkpoint_every == 0 else "first")
        return seq

    def _authenticated_head(self, db: sqlite3.Connection) -> tuple[int, bytes, str] | None:
        """The newest entry, once everything after the last one this handle trusts is
        authenticated (linked, hashed and MACed with the key file's key); AuditLogError
        otherwise: a writer never extends or signs entries someone without the key wrote."""
        row = db.execute("SELECT seq, hash, ts FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        known = self._txn_head or self._trusted
        if row is None:
            if known is not None:
                raise self._damaged(f"its entries are gone (this writer knew entry {known[0]})")
            return None
        seq, digest, ts = row[0], row[1], row[2]
        if type(seq) is not int or not isinstance(digest, bytes) or not isinstance(ts, str):
            raise self._damaged(f"its newest entry holds values veilpix never writes ({row!r:.80})")
        if known != (seq, digest):
            from veilpix.audit._verify import authenticate

            assert self.keys is not None
            problem = authenticate(db, self.log_id, self.keys, known, self.public_key,
                                   self.checkpoint_every)  # fmt: skip
            if problem is not None:
                raise self._damaged(problem.message)
            self._trusted = (seq, digest)
        return seq, digest, ts

    def _pending_kinds(self, record_id: str) -> set[str]:
        """Kinds of the entries of ``record_id`` in the batch not inserted yet."""
        return {row[1] for row in self._rows or () if row[2] == record_id}

    def _checkpoint(
        self, db: sqlite3.Connection, reason: str, *, only_if_unsigned: bool = True
    ) -> int | None:
        assert self.keys is not None
        head = self._authenticated_head(db)
        if head is None:
            return None
        last = db.execute(
            "SELECT id, seq, signature FROM checkpoints ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if last is not None and last[1] == head[0] and only_if_unsigned:
            return None
        cp_id = 1 if last is None else last[0] + 1
        prev_sig = genesis(self.log_id) if last is None else hashlib.sha256(last[2]).digest()
        ts = _now_text(self._clock())
        message = checkpoint_message(self.log_id, cp_id, head[0], head[1], ts, reason, prev_sig)
        signature = self.keys.sign(message)
        db.execute(
            "INSERT INTO checkpoints(id, seq, hash, ts, reason, key_id, signature)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (cp_id, head[0], head[1], ts, reason, key_id(self.public_key), signature),
        )
        self._signed_pending = (cp_id, head[0], hashlib.sha256(signature).hexdigest(), ts)
        return cp_id

    def _start_timer(self) -> None:
        if self._timer is not None or self._closed:
            return
        self._timer = threading.Thread(target=self._tick, name="veilpix-audit-checkpoint",
                                       daemon=True)  # fmt: skip
        self._timer.start()
        # A program that never calls close() still signs its tail when the interpreter exits.
        atexit.register(_close_at_exit, weakref.ref(self))

    def _tick(self) -> None:
        while not self._stop.wait(self.checkpoint_seconds):
            try:
                if self._carried:
                    self._grouped(_nothing_op, durable=False)  # writes them
                self.checkpoint("interval")
            except AuditLogError:  # the next write reports the problem to its caller
                continue

    # -- writing -------------------------------------------------------------------------------

    def fingerprint(self, data: bytes, *, label: str = "image") -> str:
        """The keyed fingerprint this log stores for ``data``: HMAC-SHA256 with the log key
        over the SHA-256 of the data. Without the key file nobody can confirm a guess."""
        return self._keyed(hashlib.sha256(data).digest(), label)

    def _keyed(self, digest: bytes, label: str = "image") -> str:
        if self.keys is None:
            raise AuditLogError(
                f"fingerprints need the key file of the log ({str(self.key_path)!r})",
                hint="run this where the log's key file is readable, or pass --key FILE",
            )
        return self.keys.fingerprint(label.encode(), digest)

    def _image_fingerprints(self, img: OutboundImage) -> list[str | None]:
        """(before, after). The pipeline's report already holds both SHA-256 digests; they are
        used when the sizes agree with the bytes at hand, so a large photo is hashed once."""
        s = img.sanitized
        if s is None:
            return [self.fingerprint(img.original), None]
        r = s.report
        if r.bytes_in == len(img.original) and r.bytes_out == len(s.data):
            return [
                self._keyed(bytes.fromhex(r.sha256_in)),
                self._keyed(bytes.fromhex(r.sha256_out)),
            ]
        return [self.fingerprint(img.original), self.fingerprint(s.data)]

    def _subject_key(self, db: sqlite3.Connection, subject_ref: str) -> tuple[str, bytes]:
        assert self.keys is not None
        tag = self.fingerprint(subject_ref.encode(), label="subject")
        row = db.execute("SELECT kid, wrapped FROM subject_keys WHERE tag=?", (tag,)).fetchone()
        if row is not None:
            return row[0], open_sealed(
                self.keys.wrap_key, row[1], b"subject-key:" + row[0].encode()
            )
        kid = secrets.token_hex(16)
        key = secrets.token_bytes(32)
        wrapped = seal(self.keys.wrap_key, key, b"subject-key:" + kid.encode())
        db.execute(
            "INSERT INTO subject_keys(kid, tag, wrapped, created) VALUES (?, ?, ?, ?)",
            (kid, tag, wrapped, _now_text(self._clock())),
        )
        return kid, key

    def _begin_body(self, t: Transfer) -> tuple[dict[str, Any], dict[str, Any]]:
        """(clear body, subject-linked fields). Computed before the write lock is taken:
        fingerprinting a large image must not hold up other writers."""
        images = [image_facts(img) for img in t.images]
        fps = [self._image_fingerprints(img) for img in t.images]
        prompt: dict[str, Any] | None = None
        linked: dict[str, Any] = {}
        if t.prompt is not None:
            text = _well_formed(t.prompt)
            prompt = {"length": len(text)}
            linked["prompt_fingerprint"] = self.fingerprint(text.encode(), label="prompt")
            if self.encrypt_prompts:
                linked["prompt_text"] = text
        sent = [i.get("bytes_after") for i in images]
        what = {
            "categories": data_categories(t, images),
            "images": images,
            "image_count": len(images),
            "bytes_before": sum(i["bytes_before"] for i in images),
            "bytes_after": sum(int(b or 0) for b in sent),
            "request_bytes": t.request_bytes,
            "prompt": prompt,
        }
        mechanism = clip_text(t.transfer_mechanism or self.mechanisms.get(t.vendor))
        c = clip_text  # every free text a door or an app hands in: short, one line
        body: dict[str, Any] = {
            "v": 1,
            "who": {"app": c(t.app), "actor": c(t.actor), "client": c(t.client), "door": t.door},
            "what": what,
            "where": {
                "vendor": t.vendor,
                "legal_entity": c(t.legal_entity),
                "model": c(t.model),
                "operation": c(t.operation),
                "method": t.method.upper(),
                "url": redact_url(t.url),
                "host": t.host,
                "region": c(t.region),
                "country": t.country.upper() if t.country else None,
                "transfer_mechanism": mechanism,
            },
            "why": {
                "purpose": c(t.purpose),
                "legal_basis": c(t.legal_basis),
                "consent": t.consent_ref is not None,
                "consent_ref": c(t.consent_ref),
                "subject_ref": None,
            },
            "controls": {
                "applied": sorted(t.controls_applied),
                "account_level": sorted(t.controls_account_level),
                "unavailable": sorted(t.controls_unavailable),
            },
            # values scrubbed with the whole entry in _append
            "headers": redact_headers(t.headers or {}, scrub=False),
            "rule": c(t.rule),
            "retention": c(t.retention),
        }
        linked["fingerprints"] = fps
        return body, linked

    def _write_begin(
        self,
        db: sqlite3.Connection,
        t: Transfer,
        rid: str,
        prepared: tuple[dict[str, Any], dict[str, Any]],
    ) -> None:
        assert self.keys is not None
        body, linked = prepared
        subject = None
        if t.subject_ref is not None:
            subject, key = self._subject_key(db, t.subject_ref)
            linked["subject_ref"] = clip_text(t.subject_ref)
            linked["consent_ref"] = clip_text(t.consent_ref)
            body["why"]["consent_ref"] = None
            body["sealed"] = seal(key, canonical(linked).encode(), rid.encode()).hex()
        else:
            for img, (before, after) in zip(
                body["what"]["images"], linked["fingerprints"], strict=True
            ):
                img["fingerprint_before"], img["fingerprint_after"] = before, after
            if body["what"]["prompt"] is not None:
                body["what"]["prompt"]["fingerprint"] = linked["prompt_fingerprint"]
            if "prompt_text" in linked:
                blob = seal(self.keys.wrap_key, linked["prompt_text"].encode(), rid.encode())
                body["what"]["prompt"]["sealed"] = blob.hex()
        self._append(db, "begin", rid, body, subject)

    def begin(self, transfer: Transfer) -> PendingTransfer:
        """Record ``transfer`` as pending and commit it durably. Only after this returns may
        the door send; if it raises :class:`~veilpix.AuditLogError` the door must not send."""
        rid, op = self._begin_op(transfer)
        self._grouped(op)
        return PendingTransfer(self, rid)

    async def abegin(self, transfer: Transfer) -> PendingTransfer:
        """:meth:`begin` for asyncio code: the commit runs on the log's writer thread, shared
        with whatever else is waiting, and the event loop is free meanwhile."""
        rid, op = self._begin_op(transfer)
        await self._awaited(op)
        return PendingTransfer(self, rid)

    def _begin_op(self, transfer: Transfer) -> tuple[str, Callable[[sqlite3.Connection], None]]:
        rid = _new_record_id()
        prepared = self._begin_body(transfer)
        return rid, lambda db: self._write_begin(db, transfer, rid, prepared)

    def finish(
        self,
        record_id: str,
        *,
        outcome: Outcome = "sent",
        status: int | None = None,
        response_bytes: int | None = None,
        request_bytes: int | None = None,
        reason: str | None = None,
        vendor_request_id: str | None = None,
        latency_ms: float | None = None,
    ) -> None:
        """Complete a begun record. A record is finished once; its begin must exist."""
        self._grouped(
            self._finish_op(record_id, outcome, status, response_bytes, request_bytes, reason,
                            vendor_request_id, latency_ms),
            durable=False,
        )  # fmt: skip

    async def afinish(
        self,
        record_id: str,
        *,
        outcome: Outcome = "sent",
        status: int | None = None,
        response_bytes: int | None = None,
        request_bytes: int | None = None,
        reason: str | None = None,
        vendor_request_id: str | None = None,
        latency_ms: float | None = None,
    ) -> None:
        """:meth:`finish` for asyncio code (see :meth:`abegin`)."""
        await self._awaited(
            self._finish_op(record_id, outcome, status, response_bytes, request_bytes, reason,
                            vendor_request_id, latency_ms),
            durable=False,
        )  # fmt: skip

    def _finish_op(  # noqa: PLR0917 - the fields of a finish entry
        self,
        record_id: str,
        outcome: Outcome,
        status: int | None,
        response_bytes: int | None,
        request_bytes: int | None,
        reason: str | None,
        vendor_request_id: str | None,
        latency_ms: float | None,
    ) -> Callable[[sqlite3.Connection], None]:
        if outcome not in ("sent", "failed", "blocked"):
            raise ConfigError(f"outcome must be sent, failed or blocked, not {outcome!r}")
        body = {
            "outcome": outcome,
            "status": status,
            "response_bytes": response_bytes,
            "request_bytes": request_bytes,
            "reason": reason,
            "vendor_request_id": vendor_request_id,
            "latency_ms": None if latency_ms is None else round(latency_ms, 3),
        }
        return _FinishOp(self, record_id, body)

    def _write_finish(
        self, db: sqlite3.Connection, record_id: str, body: Mapping[str, Any]
    ) -> None:
        kinds = {
            r[0] for r in db.execute("SELECT kind FROM entries WHERE record=?", (record_id,))
        } | self._pending_kinds(record_id)
        if "begin" not in kinds:
            raise AuditLogError(f"no begun transfer {record_id!r} in the log")
        if "finish" in kinds:
            raise AuditLogError(f"transfer {record_id!r} is already finished")
        self._append(db, "finish", record_id, body)

    # -- finishes the log could not take when they came ----------------------------------------

    def _carry(self, ticket: _Ticket, error: BaseException) -> bool:
        """Keep a finish whose transaction failed (disk full, files not writable) to write it
        with the next transaction that succeeds, instead of leaving its transfer "outcome
        unknown" for good. The caller is not failed for it: the call is over either way.
        False when ``ticket`` is not a finish, or too many are waiting already."""
        op = ticket.op
        if not isinstance(op, _FinishOp):
            return False
        with self._queue_lock:
            if len(self._carried) >= _CARRY_MAX:
                return False
            if op.late is None:
                what = getattr(error, "message", str(error))
                op.late = {"since": _now_text(self._clock()), "why": str(what)[:300]}
                if not self._carried:
                    _log.warning(
                        "the transfer log cannot take finishes now (%s); they are kept and "
                        "written with the next write that succeeds, or on close", what,
                    )  # fmt: skip
            self._carried.append(op)
        return True

    def _write_carried(self, db: sqlite3.Connection) -> list[_FinishOp]:
        """At the start of a write transaction: write the finishes carried so far (returned,
        to be carried again if the transaction fails). One refused by its own check (its
        transfer was resolved meanwhile) is dropped."""
        with self._queue_lock:
            carried, self._carried = self._carried, []
        for op in carried:
            try:
                op(db)
            except AuditLogError as exc:
                _log.warning("a finish kept for later was not written: %s", exc.message)
        return carried

    def _carry_again(self, carried: list[_FinishOp]) -> None:
        with self._queue_lock:
            self._carried[:0] = carried

    def _spill_path(self) -> Path:
        return self.path.with_name(self.path.name + "-finishes")

    def _spill(self) -> None:
        """On close, finishes the log still cannot take go to ``<log>-finishes`` (0600, one
        MACed JSON line each); the next writer that opens the log writes them."""
        with self._queue_lock:
            carried, self._carried = self._carried, []
        if not carried or self.keys is None:
            return
        lines = []
        for op in carried:
            text = canonical({"record": op.record_id, "body": op.body, "late": op.late})
            mac = self.keys.entry_mac(_spill_digest(text), self.log_id).hex()
            lines.append(f'{{"finish":{text},"mac":"{mac}"}}\n'.encode())
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            fd = os.open(self._spill_path(), flags | os.O_CLOEXEC, 0o600)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise OSError(f"{str(self._spill_path())!r} is not a regular file")
                os.write(fd, b"".join(lines))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            _log.error(
                "%d finishes could not be written to the transfer log or set aside (%s): "
                "their transfers stay 'outcome unknown'", len(lines), exc,
            )  # fmt: skip

    def _unspill(self, db: sqlite3.Connection) -> int:
        """Write the finishes a previous writer set aside (see :meth:`_spill`); how many, or
        -1 when the file is left alone (not a regular file veilpix could have written, too
        large, not readable). Lines whose MAC does not hold, or whose transfer is unknown or
        finished already, are skipped with a warning."""
        assert self.keys is not None
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self._spill_path(), flags)
        except FileNotFoundError:
            return 0
        except OSError as exc:  # a symlink (ELOOP), no permission: not ours to read
            _log.warning("the finishes set aside in %s were not read: %s", self._spill_path(), exc)
            return -1
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > _SPILL_MAX:
                _log.warning("%s is not a file veilpix wrote; ignored", self._spill_path())
                return -1
            data = os.read(fd, _SPILL_MAX)
        finally:
            os.close(fd)
        written = 0
        for line in data.splitlines():
            try:
                if not line.startswith(b'{"finish":') or len(line) > _SPILL_LINE_MAX:
                    raise ValueError("not a line veilpix wrote")
                doc = json.loads(line)
                inner = doc["finish"]
                want = self.keys.entry_mac(_spill_digest(canonical(inner)), self.log_id).hex()
                if not isinstance(doc["mac"], str) or not hmac.compare_digest(want, doc["mac"]):
                    raise ValueError("its MAC does not hold")
                body = {**inner["body"], "late": inner["late"]}
                self._write_finish(db, str(inner["record"]), body)
                written += 1
            except (ValueError, KeyError, TypeError, RecursionError, AuditLogError) as exc:
                _log.warning("a finish set aside in %s was not written: %s",
                             self._spill_path(), getattr(exc, "message", exc))  # fmt: skip
        return written

    def block(self, transfer: Transfer, *, reason: str, rule: str) -> str:
        """Record a call that policy stopped before sending (begin and finish, one commit)."""
        rid, op = self._block_op(transfer, reason, rule)
        self._grouped(op)
        return rid

    async def ablock(self, transfer: Transfer, *, reason: str, rule: str) -> str:
        """:meth:`block` for asyncio code (see :meth:`abegin`)."""
        rid, op = self._block_op(transfer, reason, rule)
        await self._awaited(op)
        return rid

    def _block_op(
        self, transfer: Transfer, reason: str, rule: str
    ) -> tuple[str, Callable[[sqlite3.Connection], None]]:
        rid, begin = self._begin_op(transfer)
        body = {"outcome": "blocked", "reason": reason, "rule": rule, "status": None}

        def write(db: sqlite3.Connection) -> None:
            begin(db)
            self._append(db, "finish", rid, body)

        return rid, write

    @contextmanager
    def record(self, transfer: Transfer) -> Iterator[PendingTransfer]:
        """``with log.record(t) as pending: send(); pending.finish(status=...)``.

        The body runs only after the begin is durable. An exception escaping the body finishes
        the record as failed (with the exception's type and message, credentials masked) and
        propagates; leaving the body without finishing records "no response recorded".
        """
        pending = self.begin(transfer)
        try:
            yield pending
        except BaseException as exc:
            if not pending.finished:
                pending.fail(f"{type(exc).__name__}: {exc}"[:500])
            raise
        if not pending.finished:
            pending.fail("no response recorded")

    def checkpoint(self, reason: str = "manual") -> int | None:
        """Sign the current head now (if anything is unsigned); returns the checkpoint id."""
        with self._write() as db:
            return self._checkpoint(db, reason)

    def erase(self, subject_ref: str, *, request_ref: str | None = None) -> Erasure:
        """GDPR Art. 17: destroy the subject's key, so every field linked to them (subject and
        consent references, image and prompt fingerprints, encrypted prompts) is unreadable
        for good, and write a signed tombstone. The chain is untouched and still verifies."""
        if self.keys is None:
            raise AuditLogError("erasure needs the log's key file")
        tag = self.fingerprint(subject_ref.encode(), label="subject")
        with self._write() as db:
            row = db.execute("SELECT kid FROM subject_keys WHERE tag=?", (tag,)).fetchone()
            if row is None:
                return Erasure(records=0, tombstone_seq=None, physically_overwritten=True)
            kid = row[0]
            (count,) = db.execute(
                "SELECT count(*) FROM entries WHERE subject=? AND kind='begin'", (kid,)
            ).fetchone()
            db.execute("DELETE FROM subject_keys WHERE kid=?", (kid,))
            body = {"subject_key": kid, "records": count, "request_ref": request_ref}
            seq = self._append(db, "erase", None, body, kid)
            self._checkpoint(db, "erase")
        return Erasure(records=count, tombstone_seq=seq, physically_overwritten=self._flush_wal())

    def prune(self, older_than: timedelta | str) -> Pruned:
        """Remove every entry older than ``older_than`` (e.g. ``"180d"``) and bridge the cut
        with a signed prune entry, so the rest still verifies. Subject keys no remaining entry
        uses are destroyed too."""
        age = parse_age(older_than) if isinstance(older_than, str) else older_than
        cutoff = _now_text(self._clock() - age)
        with self._write() as db:
            row = db.execute("SELECT max(seq) FROM entries WHERE ts < ?", (cutoff,)).fetchone()
            through = row[0]
            if through is None:
                return Pruned(entries=0, records=0, through_seq=None, cutoff=cutoff, prune_seq=None)
            anchor = db.execute("SELECT hash FROM entries WHERE seq=?", (through,)).fetchone()[0]
            (entries,) = db.execute(
                "SELECT count(*) FROM entries WHERE seq<=?", (through,)
            ).fetchone()
            (records,) = db.execute(
                "SELECT count(*) FROM entries WHERE seq<=? AND kind='begin'", (through,)
            ).fetchone()
            body = {"through": through, "anchor": anchor.hex(), "entries": entries,
                    "records": records, "cutoff": cutoff, "older_than": str(age)}  # fmt: skip
            seq = self._append(db, "prune", None, body)
            db.execute("DELETE FROM entries WHERE seq<=?", (through,))
            db.execute(
                "DELETE FROM subject_keys WHERE kid NOT IN"
                " (SELECT subject FROM entries WHERE subject IS NOT NULL)"
            )
            self._checkpoint(db, "prune")
        self._flush_wal()
        return Pruned(entries=entries, records=records, through_seq=through, cutoff=cutoff,
                      prune_seq=seq)  # fmt: skip

    def _flush_wal(self) -> bool:
        """Copy the WAL into the database and truncate it, so deleted bytes (zeroed in place by
        ``secure_delete``) do not survive in old WAL frames. False when a reader held it back."""
        with self._lock:
            try:
                busy, _, _ = self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error:
                return False
        return bool(busy == 0)

    # -- reading -------------------------------------------------------------------------------

    def _open_subject(
        self, rid: str, kid: str, body: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any] | None]:
        with self._lock:
            row = (
                self._conn()
                .execute("SELECT wrapped FROM subject_keys WHERE kid=?", (kid,))
                .fetchone()
            )
        if row is None:
            return "erased", None
        if self.keys is None:
            return "sealed", None
        try:
            key = open_sealed(self.keys.wrap_key, row[0], b"subject-key:" + kid.encode())
            linked = json.loads(open_sealed(key, bytes.fromhex(body["sealed"]), rid.encode()))
        except (SealError, KeyError, ValueError):
            return "sealed", None
        return "open", linked

    def _record(self, row: Sequence[Any]) -> TransferRecord:
        seq, rid, ts, kid, body_text, fts, fbody = row
        body = _load_body(body_text, rid, begin=True)
        subject, linked = "none", None
        if kid is not None:
            subject, linked = self._open_subject(rid, kid, body)
        return TransferRecord(
            id=rid,
            seq=seq,
            begun=ts,
            begin=body,
            finished=fts,
            finish=None if fbody is None else _load_body(fbody, rid, begin=False),
            subject=subject,
            sealed=linked,
        )

    def records(
        self,
        *,
        since: str | None = None,
        until: str | None = None,
        vendor: str | None = None,
        host: str | None = None,
        country: str | None = None,
        outcome: str | None = None,
        app: str | None = None,
        subject: str | None = None,
        image: bytes | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> Iterator[TransferRecord]:
        """Transfers in log order (``newest_first`` reverses it), filtered. ``since`` and
        ``until`` are ISO dates or times (UTC); ``until`` is exclusive. ``subject`` and
        ``image`` (the bytes of a file, original or as sent) need the key file."""
        self._caught_up()
        sql = [
            "SELECT b.seq, b.record, b.ts, b.subject, b.body, f.ts, f.body FROM entries b"
            " LEFT JOIN entries f ON f.record=b.record AND f.kind='finish' WHERE b.kind='begin'"
        ]
        args: list[Any] = []
        for value, clause in (
            (since, "b.ts >= ?"),
            (until, "b.ts < ?"),
            (vendor, "lower(json_extract(b.body, '$.where.vendor')) = lower(?)"),
            (host, "json_extract(b.body, '$.where.host') = lower(?)"),
            (country, "json_extract(b.body, '$.where.country') = upper(?)"),
            (app, "json_extract(b.body, '$.who.app') = ?"),  # app names are the operator's own
        ):
            if value is not None:
                sql.append(f"AND {clause}")
                args.append(value)
        if outcome is not None:
            if outcome == "unknown":
                sql.append("AND f.seq IS NULL")
            else:
                sql.append("AND json_extract(f.body, '$.outcome') = ?")
                args.append(outcome)
        if subject is not None:
            tag = self.fingerprint(subject.encode(), label="subject")
            row = (
                self._conn().execute("SELECT kid FROM subject_keys WHERE tag=?", (tag,)).fetchone()
            )
            if row is None:
                return
            sql.append("AND b.subject = ?")
            args.append(row[0])
        sql.append("ORDER BY b.seq DESC" if newest_first else "ORDER BY b.seq")
        wanted = None if image is None else self.fingerprint(image)
        if limit is not None and wanted is None:
            sql.append("LIMIT ?")
            args.append(limit)
        with self._lock:
            rows = self._conn().execute(" ".join(sql), args).fetchall()
        shown = 0
        for row in rows:
            rec = self._record(row)
            if wanted is not None and wanted not in _fingerprints(rec):
                continue
            yield rec
            shown += 1
            if limit is not None and shown >= limit:
                return

    def get(self, record_id: str) -> TransferRecord:
        """One transfer by id (a unique prefix of at least 8 characters is enough)."""
        self._caught_up()
        if len(record_id) < 8:
            raise ConfigError("give at least 8 characters of the record id")
        with self._lock:
            rows = (
                self._conn()
                .execute(
                    "SELECT b.seq, b.record, b.ts, b.subject, b.body, f.ts, f.body FROM entries b"
                    " LEFT JOIN entries f ON f.record=b.record AND f.kind='finish'"
                    " WHERE b.kind='begin' AND b.record LIKE ? ESCAPE '\\' LIMIT 2",
                    (
                        record_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                        + "%",
                    ),
                )
                .fetchall()
            )
        if not rows:
            raise AuditLogError(f"no transfer {record_id!r} in {str(self.path)!r}",
                                hint="list them with: veilpix audit list")  # fmt: skip
        if len(rows) > 1:
            raise ConfigError(f"{record_id!r} matches several transfers; give more of the id")
        return self._record(rows[0])

    def prompt(self, record_id: str) -> str | None:
        """The prompt stored encrypted for ``record_id`` (``encrypt_prompts=True``), or None
        when it was not stored or was erased."""
        rec = self.get(record_id)
        if rec.sealed is not None:
            return rec.sealed.get("prompt_text")
        sealed = (rec.what.get("prompt") or {}).get("sealed")
        if sealed is None or self.keys is None:
            return None
        return open_sealed(self.keys.wrap_key, bytes.fromhex(sealed), rec.id.encode()).decode()

    def counts(self) -> dict[str, int]:
        """Entries, transfers, pending transfers, checkpoints, subject keys, erasures, prunes."""
        self._caught_up()
        queries = {
            "entries": "SELECT count(*) FROM entries",
            "records": "SELECT count(*) FROM entries WHERE kind='begin'",
            "pending": "SELECT count(*) FROM entries b WHERE b.kind='begin' AND NOT EXISTS"
            " (SELECT 1 FROM entries f WHERE f.record=b.record AND f.kind='finish')",
            "checkpoints": "SELECT count(*) FROM checkpoints",
            "subjects": "SELECT count(*) FROM subject_keys",
            "erasures": "SELECT count(*) FROM entries WHERE kind='erase'",
            "prunes": "SELECT count(*) FROM entries WHERE kind='prune'",
        }
        with self._lock:
            db = self._conn()
            return {name: int(db.execute(sql).fetchone()[0]) for name, sql in queries.items()}

    def verify(self, public_key: bytes | None = None, *, expect: str | None = None) -> VerifyResult:
        """Check the chain and every signature; see :func:`veilpix.verify_log`."""
        self._caught_up()
        from veilpix.audit._verify import verify_connection

        with self._lock:
            from veilpix.audit._verify import Problem

            note = self._key_problem
            return verify_connection(
                self._conn(), public_key=public_key, path=str(self.path), expect=expect,
                keys=self.keys, key_problem=None if note is None else Problem("key-file", None, note),
            )  # fmt: skip

    # -- closing -------------------------------------------------------------------------------

    def close(self) -> None:
        """Sign the head (when this handle wrote anything) and close. Idempotent."""
        if self._closed:
            return
        self._stop.set()
        timer = self._timer
        if timer is not None and timer is not threading.current_thread():
            timer.join()
        with self._queue_lock:
            drainer, self._drainer = self._drainer, None
        if drainer is not None:
            drainer.shutdown(wait=True)  # queued appends are committed, not dropped
        with self._sync_lock:
            syncer, self._syncer = self._syncer, None
        if syncer is not None:
            syncer.shutdown(wait=True)  # and made durable
        try:
            if self._carried and self._pid == os.getpid():
                with suppress(AuditLogError):
                    self._grouped(_nothing_op, durable=True)
            if self._wrote and not self.readonly and self._pid == os.getpid():
                self.checkpoint("close")
        finally:
            if self._carried and self._pid == os.getpid():
                self._spill()
            with self._lock:
                self._closed = True
                if self._db is not None:
                    self._db.close()
                    self._db = None
                if self._lockfd is not None:
                    os.close(self._lockfd)
                    self._lockfd = None
                if self._walfd is not None:
                    os.close(self._walfd)
                    self._walfd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "readonly" if self.readonly else "writable"
        return f"AuditLog({str(self.path)!r}, {mode})"


@dataclass
class StatsRow:
    """Totals for one (vendor, country, month): what ``veilpix audit stats`` prints."""

    vendor: str
    country: str
    month: str
    calls: int = 0
    sent: int = 0
    blocked: int = 0
    failed: int = 0
    unknown: int = 0
    images: int = 0
    bytes_before: int = 0
    bytes_sent: int = 0
    faces_blurred: int = 0
    faces_unblurred: int = 0
    images_unchecked: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(records: Iterable[TransferRecord]) -> list[StatsRow]:
    """Per vendor, destination country and month (of the begin): calls by outcome, images,
    bytes before and as sent, faces blurred and sent unblurred, images sent unchecked.
    Blocked calls count as calls but send no images or bytes."""
    rows: dict[tuple[str, str, str], StatsRow] = {}
    for rec in records:
        key = (str(rec.where.get("vendor") or "?"), str(rec.where.get("country") or "?"), rec.month)
        row = rows.get(key)
        if row is None:
            row = rows[key] = StatsRow(*key)
        row.calls += 1
        outcome = rec.outcome
        setattr(row, outcome, getattr(row, outcome) + 1)
        if outcome == "blocked":
            continue
        images = rec.what.get("images", ())
        row.images += len(images)
        row.bytes_before += int(rec.what.get("bytes_before") or 0)
        sent = (rec.finish or {}).get("request_bytes") or rec.what.get("request_bytes")
        row.bytes_sent += int(sent or rec.what.get("bytes_after") or 0)
        row.faces_blurred += sum(int(i.get("faces_blurred") or 0) for i in images)
        row.faces_unblurred += rec.faces_unblurred
        row.images_unchecked += rec.faces_unchecked
    return [rows[k] for k in sorted(rows, key=lambda k: (k[2], k[0], k[1]))]


_SECTIONS = ("who", "what", "where", "why", "controls", "headers")


def _well_formed(text: str) -> str:
    """``text`` as UTF-8 can carry it: a lone surrogate (which JSON's ``\\ud800`` can put in a
    request's text) becomes "?" instead of failing the record of the call."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode()
    return text


def _load_body(text: str, rid: str, *, begin: bool) -> dict[str, Any]:
    """Parse a stored body, refusing shapes veilpix never writes (a tampered row must give a
    clear error, not a traceback deep inside a report)."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    ok = isinstance(body, dict)
    if ok and begin:
        ok = all(isinstance(body.get(k, {}), dict) for k in _SECTIONS)
        images = body.get("what", {}).get("images", []) if ok else None
        ok = ok and isinstance(images, list) and all(isinstance(i, dict) for i in images)
    if not ok:
        raise AuditLogError(
            f"transfer {rid} holds a record veilpix did not write (damaged or altered)",
            hint="run: veilpix audit verify, which names the entry",
        )
    return body  # type: ignore[no-any-return]


_WRITER = "veilpix-audit-writer"  # the writer thread's name
_log = logging.getLogger("veilpix.audit")


def _nothing() -> None:
    pass


def _nothing_op(db: sqlite3.Connection) -> None:
    """An empty op: a transaction, which writes the finishes waiting for one."""


_CARRY_MAX = 100_000  # finishes kept in memory while the log cannot be written (~300 B each)
_SPILL_MAX = 64 << 20  # the most of <log>-finishes a writer reads
_SPILL_LINE_MAX = 64 << 10


def _spill_digest(text: str) -> bytes:
    return hashlib.sha256(b"veilpix-audit-finish/1\0" + text.encode()).digest()


class _FinishOp:
    """The op of one finish, kept as data so that a finish whose transaction failed can be
    written later (see ``AuditLog._carry``)."""

    __slots__ = ("body", "late", "log", "record_id")

    def __init__(self, log: AuditLog, record_id: str, body: dict[str, Any]) -> None:
        self.log, self.record_id, self.body = log, record_id, body
        self.late: dict[str, str] | None = None  # when and why it could not be written

    def __call__(self, db: sqlite3.Connection) -> None:
        body = self.body if self.late is None else {**self.body, "late": self.late}
        self.log._write_finish(db, self.record_id, body)


_INSERT_ENTRY = (
    "INSERT INTO entries(seq, kind, record, ts, subject, body, prev, hash, mac)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class _Redo(Exception):
    """An op of a batch failed in a way that may have left writes: undo the batch."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _Ticket:
    """One append waiting for a group commit."""

    __slots__ = ("done", "durable", "error", "future", "op", "raises", "result", "waiter")

    def __init__(
        self,
        op: Callable[[sqlite3.Connection], Any],
        future: Future[Any] | None = None,
        *,
        durable: bool = True,
        waiter: tuple[Any, Any] | None = None,  # (event loop, asyncio.Future) of abegin & co
    ) -> None:
        self.op = op
        self.future = future
        self.durable = durable
        self.waiter = waiter
        self.done = False
        self.raises = False  # its caller waits and gets the error itself (not logged)
        self.result: Any = None
        self.error: BaseException | None = None


def _settle(tickets: list[_Ticket]) -> None:
    """On the waiters' event loop: hand each ticket's outcome to its asyncio future."""
    for t in tickets:
        assert t.waiter is not None
        waiter = t.waiter[1]
        if waiter.done():  # cancelled
            continue
        if t.error is not None:
            waiter.set_exception(t.error)
        else:
            waiter.set_result(t.result)


def _close_at_exit(ref: weakref.ref[AuditLog]) -> None:
    log = ref()
    if log is not None:
        with suppress(AuditLogError):
            log.close()


def _fingerprints(rec: TransferRecord) -> set[str]:
    out: set[str] = set()
    for img in rec.what.get("images", ()):
        out.update(v for k, v in img.items() if k.startswith("fingerprint_") and v)
    if rec.sealed is not None:
        for pair in rec.sealed.get("fingerprints", ()):
            out.update(v for v in pair if v)
    return out
