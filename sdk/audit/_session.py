"""A connection to one transfer log, and the way its entries get to disk.

:class:`LogSession` opens the log (:mod:`veilpix.audit._store`), read-only or for writing,
and holds what a writer needs between calls: the write transaction, which takes the writers'
cross-process lock, checks that the files and the key file are still the ones opened, writes
the finishes kept from a failed transaction first and, when durable, fsyncs after the lock is
released; the group commit (:mod:`veilpix.audit._commit`); the chain
(:mod:`veilpix.audit._append`); the key file's record of the newest checkpoint; the
checkpoint timer; a fresh connection after a fork; and close, which commits what is queued,
signs the head and sets aside the finishes the log still cannot take.
:class:`veilpix.AuditLog` builds the transfer log's API on it.
"""

from __future__ import annotations

import atexit
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Self

from veilpix._config import default_log_path
from veilpix._errors import AuditLogError, ConfigError
from veilpix.audit._append import Appender
from veilpix.audit._checks import check_tail
from veilpix.audit._commit import (
    Carried,
    FinishOp,
    GroupCommit,
    Redo,
    Ticket,
    nothing_op,
    spill,
    spill_path,
    unspill,
)
from veilpix.audit._keys import KeyFile
from veilpix.audit._store import (
    LogFiles,
    Meta,
    Signed,
    check_founding,
    connect,
    damaged,
    error,
    key_path_for,
    meta,
    newest_checkpoint,
    next_state,
    open_reader,
    open_writer,
)

__all__ = ["Durability", "LogSession"]

# When a begin counts as written: "disk" once fsynced (survives a power loss), "os" once the
# operating system has it (survives a crash of veilpix, not of the machine; checkpoints and
# closing still fsync). The fsync is most of what the log adds to a call on a slow disk.
Durability = Literal["disk", "os"]

_log = logging.getLogger("veilpix.audit")


class LogSession:
    """A connection to a transfer log and, when it is open for writing, the way entries get
    to disk: the write transaction (durable, under the writers' cross-process lock, refused
    when the files or the key file are not as they were), the group commit that batches
    appends, the finishes kept while the log cannot take them, the key file's record of the
    newest checkpoint, the checkpoint timer, and what happens after a fork and on close.
    :class:`~veilpix.AuditLog` builds the transfer log's API on it."""

    storage = "sqlite"  # where the log lives: "sqlite" (a file) or "postgresql" (a fleet's)
    keys: KeyFile | None  # the key file's keys (a reader may have none)
    _key_problem: str | None  # read-only: what is wrong with the key file

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
        durability: Durability = "disk",
    ) -> None:
        self._configure(
            readonly=readonly,
            checkpoint_every=checkpoint_every,
            checkpoint_seconds=checkpoint_seconds,
            mechanisms=mechanisms,
            encrypt_prompts=encrypt_prompts,
            clock=clock,
            durability=durability,
        )
        self.path = Path(path).expanduser() if path is not None else default_log_path()
        self.location = str(self.path)  # how messages name the log (a fleet's: its URL, redacted)
        key_path = key_path if key_path is not None else os.environ.get("VEILPIX_LOG_KEY") or None
        self.key_path = (
            Path(key_path).expanduser() if key_path is not None else key_path_for(self.path)
        )
        self._busy = busy_timeout
        self._db: sqlite3.Connection | None = None
        self._files: LogFiles | None = None  # a writer's
        self._chain: Appender | None = None  # a writer's
        if readonly:
            self._db, info, self.keys, self._key_problem = open_reader(
                self.path, self.key_path, busy=self._busy
            )
            self._use(info)
        else:
            opened = open_writer(
                self.path,
                self.key_path,
                create=create,
                busy=self._busy,
                every=checkpoint_every,
                clock=self._clock,
            )
            self._db, self._files, self.keys = opened.db, opened.files, opened.keys
            self._use(opened.meta)
            self._chain = Appender(
                self.path,
                log_id=self.log_id,
                public_key=self.public_key,
                every=self.checkpoint_every,
                keys=self._writer_keys,
                clock=self._clock,
            )
            self._recover()

    @property
    def address(self) -> str:
        """What opens this log again (``AuditLog(log.address)``): its path; a fleet log's URL,
        password included (for handing on, never for showing: :attr:`location` is that)."""
        return str(self.path)

    @property
    def short_name(self) -> str:
        """The log's name for a page title: the file's name; a fleet log's location."""
        return self.path.name

    def _configure(
        self,
        *,
        readonly: bool,
        checkpoint_every: int,
        checkpoint_seconds: float,
        mechanisms: Mapping[str, str] | None,
        encrypt_prompts: bool,
        clock: Callable[[], datetime] | None,
        durability: Durability,
    ) -> None:
        """Check and keep the settings, and set up what a writer needs whatever the log's
        storage: the writer lock, the group commit, the finishes kept for later, the timer."""
        if checkpoint_every < 1 or checkpoint_seconds <= 0:
            raise ConfigError("checkpoint_every and checkpoint_seconds must be above 0")
        if durability not in ("disk", "os"):
            raise ConfigError(f"durability must be 'disk' or 'os', got {durability!r}")
        self.durability: Durability = durability
        self.readonly = readonly
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.mechanisms = dict(mechanisms or {})
        self.encrypt_prompts = encrypt_prompts
        self._clock = clock or (lambda: datetime.now(UTC))
        # a state the key file could not record yet (the next write tries again first)
        self._state_due: tuple[Signed | None] | None = None
        self._key_problem = None
        self._closed = False
        self._wrote = False
        self.keys = None
        self._forget_parent()

    def _forget_parent(self) -> None:
        """A writer's own threads and queues (new, or after a fork: the parent's are the
        parent's, and its lock may have been held by another thread)."""
        self._pid = os.getpid()
        self._lock = threading.RLock()  # the writer lock (and the connection's)
        self._commits = self._group_commit()
        self._carried = Carried(self._clock)  # finishes waiting for a transaction that succeeds
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    def _use(self, info: Meta) -> None:
        self._meta = info
        self.log_id = info.log_id
        self.public_key = info.public_key
        self.checkpoint_every = info.checkpoint_every

    # -- opening and plumbing ------------------------------------------------------------------

    def _recover(self) -> None:
        """Before the first write: check the log against its founding statement and its key
        file's state, authenticate the tail after the last checkpoint (links and MACs), then
        sign that tail (a crashed writer's) and write a pending restart statement."""
        chain = self._writer_chain()
        spilled = spill_path(self.path)
        with self._write() as db:
            check_founding(db, self.path, self._meta)
            problem = check_tail(
                db, self.log_id, self.checkpoint_every, self.public_key, keys=self._writer_keys()
            )
            if problem is not None:
                raise damaged(self.path, problem.message)
            head = db.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
            chain.trusted = None if head is None else (head[0], head[1])
            written = unspill(
                spilled,
                self._writer_keys(),
                self.log_id,
                lambda rid, body: chain.append_finish(db, rid, body),
            )
            restart = self._writer_keys().restart
            if (
                restart is not None
                and not db.execute("SELECT 1 FROM entries WHERE kind='restart' LIMIT 1").fetchone()
            ):
                chain.append(db, "restart", None, restart)
                chain.checkpoint(db, "restart")
            else:
                chain.checkpoint(db, "open", only_if_unsigned=True)
        if written >= 0 and spilled.exists():
            with suppress(OSError):  # read and written: done with it
                spilled.unlink()
        keys = self._writer_keys()
        state = keys.state or {}
        if state.get("log_id") != self.log_id or keys.restart is not None:
            self._save_state(newest_checkpoint(self._conn()))  # (keys from before the state)

    def _writer_keys(self) -> KeyFile:
        assert self.keys is not None
        return self.keys

    def _writer_chain(self) -> Appender:
        if self.readonly or self._chain is None:
            raise AuditLogError(f"the transfer log {self.location!r} is open read-only")
        return self._chain

    def _group_commit(self) -> GroupCommit:
        return GroupCommit(
            self._lock,
            run=self._run_batch,
            sync=self._sync,
            carry=self._carry,
            check_open=self._check_open,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise AuditLogError(f"the transfer log {self.location!r} is closed")

    def _conn(self) -> sqlite3.Connection:
        self._check_open()
        if self._pid != os.getpid():  # forked: SQLite connections must not cross a fork
            self._forget_parent()
            self._db, wal = connect(self.path, readonly=self.readonly, busy=self._busy)
            if self._files is not None:  # shared with the parent: fds of our own
                self._files.close()
                self._files.wal = wal
        assert self._db is not None
        return self._db

    def _rollback(self) -> None:
        try:
            if self._db is not None and self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _sync(self) -> None:
        if self._files is not None:
            self._files.sync()

    def _carry(self, ticket: Ticket, exc: BaseException) -> bool:
        return self._carried.keep(ticket, exc)

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction. Durable by default: it returns once the commit is on disk.
        ``durable=False`` does not wait for the disk (consistent after a crash, but the last
        such commits may be lost); the next durable commit makes them durable too.

        In WAL mode the connection commits with ``synchronous=NORMAL`` (no fsync) and a durable
        commit then fsyncs the WAL file itself, which is what ``synchronous=FULL`` does, but
        after the lock other processes wait on is released: their commits need not queue
        behind this disk flush."""
        chain = self._writer_chain()
        if self.keys is None or self._files is None:
            raise AuditLogError(f"the transfer log {self.location!r} is open read-only")
        with self._lock:
            db = self._conn()
            files = self._files
            carried: list[FinishOp] = []
            with files.exclusive():
                try:
                    self._still_writable()
                    chain.begin()
                    db.execute("BEGIN IMMEDIATE")
                    carried = self._carried.write(db) if self._carried else []
                    yield db
                    db.execute("COMMIT")
                    chain.committed()
                except sqlite3.Error as exc:
                    self._rollback()
                    self._carried.put_back(carried)
                    raise error(self.path, "write", exc) from exc
                except BaseException:
                    self._rollback()
                    self._carried.put_back(carried)
                    raise
                finally:
                    chain.end()
            signed = chain.take_signed()
            if durable or signed is not None:
                files.sync()
            if signed is not None:
                self._save_state(signed)
        self._wrote = True
        self._start_timer()

    def _run_batch(self, batch: list[Ticket], fsync: bool) -> None:
        """One transaction for the ops of ``batch`` (see :class:`GroupCommit`): an op refused
        by its own check (AuditLogError) has what it appended undone and fails alone; any
        other error may have left writes, and the whole batch is redone op by op."""
        chain = self._writer_chain()
        with self._write(durable=fsync and any(t.durable for t in batch)) as db, chain.batch(db):
            for t in batch:
                mark = chain.mark()
                try:
                    t.result = t.op(db)
                except AuditLogError as exc:  # refused by the op's check, nothing written
                    chain.undo(mark)
                    t.error = exc
                except Exception as exc:
                    raise Redo(
                        error(self.path, "write", exc) if isinstance(exc, sqlite3.Error) else exc
                    ) from exc

    def _save_state(self, signed: Signed | None, *, locked: bool = False) -> bool:
        """Write the log's newest durable checkpoint (None: just founded) into the key file
        (see :func:`veilpix.audit._store.next_state`). ``locked``: the caller holds the
        writers' lock already. A failure (the key file moved away, another key file in its
        place, its folder not writable) is logged and remembered, not raised (the entry is
        committed): the next write tries again first, and is refused while the key file
        cannot record the log's state. Someone who moves the key file aside can therefore
        not keep the writers going past the next checkpoint with a key file that forgets
        them."""
        keys = self._writer_keys()
        try:
            with self._state_lock(locked):
                self.keys, save = next_state(self.key_path, keys, self._founded, signed)
                if save:
                    self.keys.save(self.key_path)
            self._state_due = None
            return True
        except (OSError, ConfigError) as exc:
            if self._state_due is None:
                _log.error(
                    "the key file %s could not record checkpoint %s of the transfer log (%s); "
                    "writes are refused until it can",
                    self.key_path,
                    None if signed is None else signed[0],
                    exc,
                )
            self._state_due = (signed,)
            return False

    def _state_lock(self, locked: bool) -> AbstractContextManager[None]:
        """What the processes writing this log take turns on to record its state in the
        key file (nothing when ``locked``: the caller holds it)."""
        assert self._files is not None
        return nullcontext() if locked else self._files.exclusive()

    def _founded(self) -> str:
        return meta(self._conn(), self.path, "created")

    def _still_writable(self) -> None:
        """Raise AuditLogError when the log's files were removed, replaced, or made
        read-only or immutable since it was opened, or its key file cannot record its state.
        SQLite would write to a removed file's inode (the records lost) and, touching its
        shared-memory index of an immutable file, crash the process (SIGBUS); checked before
        every write transaction, so the call is refused instead (a 503 at the proxy), and
        writing resumes when the files are back."""
        assert self._files is not None
        self._files.check_present()
        if self._state_due is not None and not self._save_state(self._state_due[0], locked=True):
            raise AuditLogError(
                f"the key file {str(self.key_path)!r} cannot record the transfer log's newest "
                "checkpoint (moved away, replaced, or its folder not writable); nothing was sent",
                hint="put the key file back as it was and check its folder is writable and the "
                "disk has space; writing resumes by itself",
            )
        self._files.check_shm()

    def _start_timer(self) -> None:
        if self._timer is not None or self._closed:
            return
        self._timer = threading.Thread(
            target=self._tick, name="veilpix-audit-checkpoint", daemon=True
        )
        self._timer.start()
        # A program that never calls close() still signs its tail when the interpreter exits.
        atexit.register(_close_at_exit, weakref.ref(self))

    def _tick(self) -> None:
        while not self._stop.wait(self.checkpoint_seconds):
            try:
                if self._carried:
                    self._commits.grouped(nothing_op, durable=False)  # writes them
                self.checkpoint("interval")
            except AuditLogError:  # the next write reports the problem to its caller
                continue

    # -- public: checkpoints and closing -------------------------------------------------------

    def checkpoint(self, reason: str = "manual") -> int | None:
        """Sign the current head now (if anything is unsigned); returns the checkpoint id."""
        with self._write() as db:
            return self._writer_chain().checkpoint(db, reason)

    def _flush_wal(self) -> bool:
        """Copy the WAL into the database and truncate it, so deleted bytes (zeroed in place by
        ``secure_delete``) do not survive in old WAL frames. False when a reader held it back."""
        with self._lock:
            try:
                busy, _, _ = self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error:
                return False
        return bool(busy == 0)

    def close(self) -> None:
        """Sign the head (when this handle wrote anything) and close. Idempotent."""
        if self._closed:
            return
        self._stop.set()
        timer = self._timer
        if timer is not None and timer is not threading.current_thread():
            timer.join()
        self._commits.shutdown()  # queued appends are committed and made durable
        here = self._pid == os.getpid()
        try:
            if self._carried and here:
                with suppress(AuditLogError):
                    self._commits.grouped(nothing_op, durable=True)
            if self._wrote and not self.readonly and here:
                self._sign_close()
        finally:
            if self._carried and here:
                ops = self._carried.take()
                if ops and self.keys is not None:
                    spill(self._spill_path(), ops, self.keys, self.log_id)
            with self._lock:
                self._closed = True
                self._release(here)

    def _sign_close(self) -> None:
        """Sign what this handle wrote, on close."""
        self.checkpoint("close")

    def _spill_path(self) -> Path:
        """Where finishes the log could not take are set aside on close."""
        return spill_path(self.path)

    def _release(self, here: bool) -> None:
        """Close the connection and the files (``here``: in the process that opened them)."""
        del here  # (SQLite's handles are this process's own after a fork: see _conn)
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._files is not None:
            self._files.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_at_exit(ref: weakref.ref[LogSession]) -> None:
    log = ref()
    if log is not None:
        with suppress(AuditLogError):
            log.close()
