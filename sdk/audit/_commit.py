"""Group commit: appends that arrive while a commit is under way share the next transaction,
and finishes the log could not take when they came are kept until it can.

``begin``, ``finish`` and ``block`` calls that arrive from several threads while a commit is
under way are written together in the next transaction and made durable by one fsync
(:class:`GroupCommit`). Each caller still returns only after the commit that holds its entry,
so "committed before a byte leaves" is unchanged; a call refused by its own check (a finish
for an unknown record, say) has its appends undone without touching the others. Threads wait
in :meth:`GroupCommit.grouped`; asyncio callers are served by one writer thread
(:meth:`GroupCommit.awaited`), whose durable commits a second thread fsyncs while the writer
goes on with the next batch.

A finish whose transaction failed (disk full, files not writable) is not failed with it: the
call is over either way. It is kept (:class:`Carried`) and written with the next transaction
that succeeds; on close, what still could not be written goes to ``<log>-finishes`` (0600, one
MACed line each), which the next writer to open the log writes (:func:`spill`,
:func:`unspill`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from veilpix._errors import AuditLogError
from veilpix.audit._chain import canonical, now_text
from veilpix.audit._entry import FinishBody, Late
from veilpix.audit._keys import KeyFile

__all__ = [
    "Carried",
    "FinishOp",
    "GroupCommit",
    "Redo",
    "Ticket",
    "nothing_op",
    "spill",
    "spill_path",
    "unspill",
]

_T = TypeVar("_T")
Op = Callable[[sqlite3.Connection], Any]

_WRITER = "veilpix-audit-writer"  # the writer thread's name
_log = logging.getLogger("veilpix.audit")

_CARRY_MAX = 100_000  # finishes kept in memory while the log cannot be written (~300 B each)
_SPILL_MAX = 64 << 20  # the most of <log>-finishes a writer reads
_SPILL_LINE_MAX = 64 << 10


def _nothing() -> None:
    pass


def nothing_op(db: sqlite3.Connection) -> None:
    """An empty op: a transaction, which writes the finishes waiting for one."""


class Redo(Exception):
    """An op of a batch failed in a way that may have left writes: undo the batch."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class Ticket:
    """One append waiting for a group commit."""

    __slots__ = ("done", "durable", "error", "future", "op", "raises", "result", "waiter")

    def __init__(
        self,
        op: Op,
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


class GroupCommit:
    """The queue of appends waiting for a commit, and who commits them.

    ``lock`` is the log's writer lock; ``run(batch, fsync)`` writes a batch in one
    transaction (each op's result or refusal in its ticket; :class:`Redo` when an op may
    have left writes); ``sync()`` makes what was committed durable; ``carry(ticket, error)``
    keeps a failed finish for later (True) or not; ``check_open()`` raises once the log is
    closed."""

    def __init__(
        self,
        lock: threading.RLock,
        *,
        run: Callable[[list[Ticket], bool], None],
        sync: Callable[[], None],
        carry: Callable[[Ticket, BaseException], bool],
        check_open: Callable[[], None],
    ) -> None:
        self.lock = lock
        self._run = run
        self._sync = sync
        self._carry = carry
        self._check_open = check_open
        self.queue: list[Ticket] = []  # appends waiting for the next commit
        self.queue_lock = threading.Lock()
        self.drainer: ThreadPoolExecutor | None = None  # commits the async callers' appends
        self.drain_due = False
        # ... and another thread makes them durable (fsync) while the writer goes on
        self._syncer: ThreadPoolExecutor | None = None
        self._unsynced: list[list[Ticket]] = []
        self._sync_due = False
        self._sync_lock = threading.Lock()

    # -- the ways in ---------------------------------------------------------------------------

    def grouped(self, op: Callable[[sqlite3.Connection], _T], *, durable: bool = True) -> _T:
        """Run ``op`` inside a write transaction shared with the other threads' appends that
        are waiting at the same time, and return once that transaction is durable.

        The caller queues its op, then takes the writer lock. Whoever gets the lock first
        (the leader) runs every queued op and commits once; the
        others find their op already done when the lock comes to them."""
        ticket = Ticket(op, durable=durable)
        ticket.raises = True
        with self.queue_lock:
            self.queue.append(ticket)
        with self.lock:
            if not ticket.done:
                with self.queue_lock:
                    batch, self.queue = self.queue, []
                self.commit_batch(batch)
        if ticket.error is not None:
            raise ticket.error
        return cast("_T", ticket.result)

    def submit(self, op: Callable[[sqlite3.Connection], _T], *, durable: bool = True) -> Future[_T]:
        """Queue ``op`` for the next group commit without waiting: the returned future is
        resolved once the transaction holding it is durable (or failed). One writer thread
        drains the queue, committing whatever has gathered since its last commit."""
        future: Future[_T] = Future()
        self.enqueue(Ticket(op, future, durable=durable))
        return future

    def post(self, op: Op, *, durable: bool = True) -> None:
        """Queue ``op`` for the writer thread; nobody waits for it, so an error writing it is
        reported on the ``veilpix.audit`` logger."""
        self.enqueue(Ticket(op, durable=durable))

    async def awaited(self, op: Callable[[sqlite3.Connection], _T], *, durable: bool = True) -> _T:
        """:meth:`grouped` for async callers: committed by the writer thread while the event
        loop is free. Under asyncio the writer wakes the loop itself; under another loop
        (trio, through anyio) a worker thread waits for the commit."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            import anyio.to_thread

            return await anyio.to_thread.run_sync(self.submit(op, durable=durable).result)
        waiter: asyncio.Future[_T] = loop.create_future()
        self.enqueue(Ticket(op, durable=durable, waiter=(loop, waiter)))
        # A caller cancelled while waiting does not withdraw the append (it may already be in
        # the transaction being committed); the writer skips settling a cancelled waiter.
        return await waiter

    def enqueue(self, ticket: Ticket) -> None:
        with self.queue_lock:
            self._check_open()
            self.queue.append(ticket)
            schedule, self.drain_due = not self.drain_due, True
            if self.drainer is None:
                self.drainer = ThreadPoolExecutor(1, thread_name_prefix=_WRITER)
            if schedule:
                self.drainer.submit(self.drain)

    def caught_up(self) -> None:
        """Wait until what was queued so far (``finish_nowait``) is committed, so that a read
        sees that too."""
        with self.queue_lock:
            drainer = self.drainer
        if drainer is None or threading.current_thread().name.startswith(_WRITER):
            return
        with suppress(RuntimeError):  # shut down: close() commits what is queued
            drainer.submit(_nothing).result()

    def shutdown(self) -> None:
        """Commit what is queued and make it durable; the threads end."""
        with self.queue_lock:
            drainer, self.drainer = self.drainer, None
        if drainer is not None:
            drainer.shutdown(wait=True)  # queued appends are committed, not dropped
        with self._sync_lock:
            syncer, self._syncer = self._syncer, None
        if syncer is not None:
            syncer.shutdown(wait=True)  # and made durable

    # -- committing ----------------------------------------------------------------------------

    def drain(self) -> None:
        """On the writer thread: commit whatever is queued."""
        batch: list[Ticket] = []
        try:
            with self.lock:
                with self.queue_lock:
                    batch, self.queue, self.drain_due = self.queue, [], False
                if batch:
                    # Appends awaited by asyncio callers are made durable by the sync thread,
                    # so the writer can commit the next batch (finishes, say) during the
                    # fsync. A thread waiting in grouped needs its append durable when done.
                    later = not any(t.durable and t.waiter is None for t in batch)
                    self.commit_batch(batch, sync_later=later)
        except BaseException as exc:  # nobody would ever wake the waiters otherwise
            for t in batch:
                if not t.done:
                    t.result, t.error = None, AuditLogError(f"the transfer log failed: {exc}")
            self._settle_all([t for t in batch if not t.done])
            raise

    def commit_batch(self, batch: list[Ticket], *, sync_later: bool = False) -> None:
        """Commit ``batch`` in one transaction. An op refused by its own check (a finish of an
        unknown or finished record raises AuditLogError before writing) fails alone; any
        other error rolls the transaction back and the ops are committed one by one, so
        that only the failing one fails. ``sync_later``: when more appends are already waiting,
        the durable ones are settled by the sync thread after its fsync (the writer goes on
        with the next batch) and the others at once; otherwise the fsync happens here."""
        fsync = not sync_later
        try:
            try:
                self._run(batch, fsync)
            except Redo:
                for t in batch:
                    t.result, t.error = None, None
                    try:
                        self._run([t], fsync)
                    except Redo as redo:
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
            if later and not self.queue:  # nothing to commit meanwhile: no thread hop
                self._sync_for(later)
            elif later:
                self._sync_soon(later)
                batch = [t for t in batch if not (t.durable and t.error is None)]
            self._settle_all(batch)

    def _sync_soon(self, tickets: list[Ticket]) -> None:
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

    def _sync_for(self, tickets: list[Ticket]) -> None:
        """fsync for ``tickets``; when it fails they fail: committed but not known to be on
        disk, so their callers must not send."""
        try:
            self._sync()
        except AuditLogError as exc:
            for t in tickets:
                t.result, t.error = None, exc

    def _settle_all(self, batch: list[Ticket]) -> None:
        """Mark ``batch`` done and hand each ticket's outcome to whoever waits for it."""
        waiting: dict[Any, list[Ticket]] = {}
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


def _settle(tickets: list[Ticket]) -> None:
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


# -- finishes the log could not take when they came --------------------------------------------


class FinishOp:
    """The op of one finish, kept as data so that a finish whose transaction failed can be
    written later. ``write(db, record id, body)`` writes a finish entry."""

    __slots__ = ("body", "late", "record_id", "write")

    def __init__(
        self,
        write: Callable[[sqlite3.Connection, str, FinishBody], None],
        record_id: str,
        body: FinishBody,
    ) -> None:
        self.write, self.record_id, self.body = write, record_id, body
        self.late: Late | None = None  # when and why it could not be written

    def __call__(self, db: sqlite3.Connection) -> None:
        body = self.body if self.late is None else FinishBody(**self.body, late=self.late)
        self.write(db, self.record_id, body)


class Carried:
    """Finishes waiting for a transaction that succeeds."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._ops: list[FinishOp] = []
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._ops)

    def keep(self, ticket: Ticket, error: BaseException) -> bool:
        """Keep the finish of ``ticket``, whose transaction failed with ``error``, to write it
        with the next transaction that succeeds, instead of leaving its transfer "outcome
        unknown" for good. The caller is not failed for it: the call is over either way.
        False when ``ticket`` is not a finish, or too many are waiting already."""
        op = ticket.op
        if not isinstance(op, FinishOp):
            return False
        with self._lock:
            if len(self._ops) >= _CARRY_MAX:
                return False
            if op.late is None:
                what = getattr(error, "message", str(error))
                op.late = {"since": now_text(self._clock()), "why": str(what)[:300]}
                if not self._ops:
                    _log.warning(
                        "the transfer log cannot take finishes now (%s); they are kept and "
                        "written with the next write that succeeds, or on close",
                        what,
                    )
            self._ops.append(op)
        return True

    def take(self) -> list[FinishOp]:
        with self._lock:
            ops, self._ops = self._ops, []
        return ops

    def write(self, db: sqlite3.Connection) -> list[FinishOp]:
        """At the start of a write transaction: write the finishes carried so far (returned,
        to be carried again if the transaction fails). One refused by its own check (its
        transfer was resolved meanwhile) is dropped."""
        ops = self.take()
        for op in ops:
            try:
                op(db)
            except AuditLogError as exc:
                _log.warning("a finish kept for later was not written: %s", exc.message)
        return ops

    def put_back(self, ops: list[FinishOp]) -> None:
        with self._lock:
            self._ops[:0] = ops


def spill_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + "-finishes")


def _spill_digest(text: str) -> bytes:
    return hashlib.sha256(b"veilpix-audit-finish/1\0" + text.encode()).digest()


def spill(path: Path, ops: list[FinishOp], keys: KeyFile, log_id: str) -> None:
    """On close, finishes the log still cannot take go to ``path`` (``<log>-finishes``: 0600,
    one MACed JSON line each); the next writer that opens the log writes them."""
    lines = []
    for op in ops:
        text = canonical({"record": op.record_id, "body": op.body, "late": op.late})
        mac = keys.entry_mac(_spill_digest(text), log_id).hex()
        lines.append(f'{{"finish":{text},"mac":"{mac}"}}\n'.encode())
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(f"{str(path)!r} is not a regular file")
            os.write(fd, b"".join(lines))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        _log.error(
            "%d finishes could not be written to the transfer log or set aside (%s): "
            "their transfers stay 'outcome unknown'",
            len(lines),
            exc,
        )


def unspill(
    path: Path,
    keys: KeyFile,
    log_id: str,
    write: Callable[[str, FinishBody], None],
) -> int:
    """Write the finishes a previous writer set aside in ``path`` (see :func:`spill`) with
    ``write(record id, body)``; how many, or -1 when the file is left alone (not a regular
    file veilpix could have written, too large, not readable). Lines whose MAC does not
    hold, or whose transfer is unknown or finished already, are skipped with a warning."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return 0
    except OSError as exc:  # a symlink (ELOOP), no permission: not ours to read
        _log.warning("the finishes set aside in %s were not read: %s", path, exc)
        return -1
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _SPILL_MAX:
            _log.warning("%s is not a file veilpix wrote; ignored", path)
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
            want = keys.entry_mac(_spill_digest(canonical(inner)), log_id).hex()
            if not isinstance(doc["mac"], str) or not hmac.compare_digest(want, doc["mac"]):
                raise ValueError("its MAC does not hold")
            body = cast("FinishBody", {**inner["body"], "late": inner["late"]})
            write(str(inner["record"]), body)
            written += 1
        except (ValueError, KeyError, TypeError, RecursionError, AuditLogError) as exc:
            _log.warning(
                "a finish set aside in %s was not written: %s",
                path,
                getattr(exc, "message", exc),
            )
    return written
