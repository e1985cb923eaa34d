"""Group commit in the transfer log: appends that wait at the same time share one write
transaction (``GroupCommit.grouped`` for threads, ``submit``/``drain`` on the writer thread
for asyncio callers). The chain must stay one intact chain, each op's failure must reach its own
caller only, a failed commit must fail every op in it and leave nothing behind, and close()
must not drop what is queued.

Batches are forced deterministically by holding ``log._lock`` (the writer lock) while the
callers queue up; commits are counted by wrapping ``commit_batch``. Nothing here measures
time."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from auditkit import transfer
from veilpix import AuditLog, AuditLogError, PendingTransfer, verify_log


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog(tmp_path / "audit.db") as opened:
        yield opened


def count_commits(log: AuditLog, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the batches committed from now on, in order."""
    sizes: list[int] = []
    real = log._commits.commit_batch

    def counting(batch: list[Any], **options: Any) -> None:
        sizes.append(len(batch))
        real(batch, **options)

    monkeypatch.setattr(log._commits, "commit_batch", counting)
    return sizes


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


class Held:
    """Hold the log's writer lock while callers queue, then let them all go at once: the
    first to get the lock commits everything queued, in one transaction."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self.threads: list[threading.Thread] = []
        self.errors: dict[str, BaseException] = {}
        self.results: dict[str, Any] = {}

    def __enter__(self) -> Held:
        self.log._lock.acquire()
        return self

    def call(self, name: str, func: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                self.results[name] = func()
            except BaseException as exc:
                self.errors[name] = exc

        before = len(self.log._commits.queue)
        thread = threading.Thread(target=run, name=name)
        self.threads.append(thread)
        thread.start()
        wait_for(lambda: len(self.log._commits.queue) > before, f"{name} to queue")  # in order

    def __exit__(self, *exc: object) -> None:
        self.log._lock.release()
        for thread in self.threads:
            thread.join(30)
            assert not thread.is_alive()


def entries(path: Path) -> int:
    with AuditLog(path, readonly=True) as ro:
        return ro.counts()["entries"]


# -- threads ------------------------------------------------------------------------------------


def test_many_threads_one_intact_chain_in_fewer_commits(
    log: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = count_commits(log, monkeypatch)
    # First a crowd held at the door: eight begins queued behind the writer lock ...
    with Held(log) as held:
        for i in range(8):
            held.call(f"b{i}", partial(log.begin, transfer(i)))
    assert held.errors == {} and commits == [8]  # ... go in one commit
    for pending in held.results.values():
        pending.finish(status=200)
    # ... then free-running threads, each beginning and finishing its own transfers.
    start = threading.Barrier(6)
    failures: list[BaseException] = []

    def work(k: int) -> None:
        try:
            start.wait()
            for i in range(15):
                pending = log.begin(transfer(100 * k + i, actor=f"t{k}"))
                pending.finish(status=200 + k, response_bytes=i)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    appends = 8 + 8 + 6 * 15 * 2
    assert sum(commits) == appends and len(commits) < appends
    records = list(log.records())
    assert len(records) == 8 + 90 and all(r.outcome == "sent" for r in records)
    by_actor = {r.who["actor"]: r for r in records if str(r.who["actor"]).startswith("t")}
    assert {a: r.to_dict()["status"] for a, r in by_actor.items()} == {
        f"t{k}": 200 + k for k in range(6)
    }  # every finish landed on its own begin
    assert log.counts()["pending"] == 0
    result = log.verify()
    assert result.intact and result.records == 98 and result.pending == 0


def test_one_failing_op_fails_only_its_own_caller(
    log: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = log.begin(transfer(0))
    done.finish(status=200)
    twice = log.begin(transfer(1))
    commits = count_commits(log, monkeypatch)
    with Held(log) as held:
        held.call("new-a", lambda: log.begin(transfer(2)))
        held.call("unknown", lambda: log.finish("no-such-record", status=200))
        held.call("first", lambda: log.finish(twice.id, status=201))
        held.call("again", lambda: log.finish(twice.id, status=202))  # same batch, after "first"
        held.call("done", lambda: log.finish(done.id, status=203))  # finished long before
        held.call("new-b", lambda: log.begin(transfer(3)))
    assert commits == [6]
    assert sorted(held.errors) == ["again", "done", "unknown"]
    assert all(isinstance(e, AuditLogError) for e in held.errors.values())
    assert "no begun transfer" in str(held.errors["unknown"])
    assert "already finished" in str(held.errors["again"])
    assert "already finished" in str(held.errors["done"])
    assert log.get(twice.id).to_dict()["status"] == 201  # the first finish stands, alone
    assert log.get(done.id).to_dict()["status"] == 200
    for name in ("new-a", "new-b"):
        assert log.get(held.results[name].id).outcome == "unknown"  # begun, not finished
    counts = log.counts()
    assert counts["records"] == 4 and counts["entries"] == 2 + 1 + 3
    assert log.verify().intact


@pytest.mark.parametrize("error", [ValueError, AuditLogError])
def test_an_op_that_fails_after_writing_leaves_nothing(
    log: AuditLog, monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    """Whatever a failing op wrote before it failed is dropped, and only that op fails: the
    ops before and after it in the same batch commit, on an unbroken chain."""
    log.begin(transfer(0))
    before = log.counts()["entries"]
    commits = count_commits(log, monkeypatch)

    def half(db: sqlite3.Connection) -> None:
        log._chain.append(db, "finish", "half-written", {"outcome": "sent"})
        raise error("broke after the append")

    with Held(log) as held:
        held.call("before", lambda: log.begin(transfer(1)))
        held.call("half", lambda: log._commits.grouped(half))
        held.call("after", lambda: log.begin(transfer(2)))
    assert isinstance(held.errors.pop("half"), error) and held.errors == {}
    assert commits[0] == 3
    assert log.counts()["entries"] == before + 2
    assert log.counts()["pending"] == 3  # no finish got in
    assert log.verify().intact


def test_batches_across_checkpoints(tmp_path: Path) -> None:
    """A batch that passes several checkpoint multiples, with refused ops among its appends:
    every multiple is signed and the chain verifies."""
    path = tmp_path / "audit.db"
    with AuditLog(path, checkpoint_every=3) as log:
        finished = log.begin(transfer(0))
        finished.finish(status=200)
        with Held(log) as held:
            for i in range(9):
                held.call(f"b{i}", partial(log.begin, transfer(i)))
                if i % 3 == 1:
                    held.call(f"x{i}", lambda: finished.finish(status=500))
        assert sorted(held.errors) == ["x1", "x4", "x7"]
        for pending in held.results.values():
            pending.finish(status=200)
    result = verify_log(path)
    assert result.ok, result.problems
    assert result.records == 10 and result.pending == 0 and result.entries == 20
    assert result.checkpoints >= 20 // 3


class FailingCommit:
    """Stands in for the log's sqlite3 connection; its COMMITs fail while ``failing``."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.failing = True
        self.refused = 0

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.strip().upper() == "COMMIT" and self.failing:
            self.refused += 1
            raise sqlite3.OperationalError("disk I/O error")
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_a_failed_commit_fails_every_op_in_it_and_writes_nothing(
    log: AuditLog, tmp_path: Path
) -> None:
    ok = log.begin(transfer(0))
    before = log.counts()
    real = log._db
    assert real is not None
    broken = FailingCommit(real)
    log._db = broken  # type: ignore[assignment]
    try:
        with Held(log) as held:
            for i in range(4):
                held.call(f"b{i}", partial(log.begin, transfer(10 + i)))
            held.call("fin", lambda: ok.finish(status=200))
    finally:
        log._db = real
    assert broken.refused == 1  # one batch, one failed commit ...
    assert sorted(held.errors) == ["b0", "b1", "b2", "b3"]  # ... fails every begin in it
    assert all(isinstance(e, AuditLogError) for e in held.errors.values())
    assert not real.in_transaction
    assert log.counts() == before  # nothing half-written
    assert entries(tmp_path / "audit.db") == before["entries"]  # nor visible to another reader
    # the finish is kept, not failed (the call is over), and written with the next commit
    assert log.get(ok.id).outcome == "unknown"
    log.begin(transfer(20))
    rec = log.get(ok.id)
    assert rec.outcome == "sent" and rec.finish is not None and "late" in rec.finish
    assert log.verify().intact


def test_lock_file_is_private_after_a_write(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    lock = tmp_path / "audit.db-lock"
    old = os.umask(0)  # the mode must come from the code, not from a strict umask
    try:
        with AuditLog(path) as log:
            log.begin(transfer(0)).finish(status=200)
            assert lock.exists()
            assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    finally:
        os.umask(old)


# -- asyncio ------------------------------------------------------------------------------------


def test_async_begin_and_finish_from_many_tasks(
    log: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = count_commits(log, monkeypatch)

    async def one(i: int) -> str:
        pending = await log.abegin(transfer(i, actor=f"a{i}"))
        await asyncio.sleep(0)
        await pending.afinish(status=200, response_bytes=i)
        assert pending.finished
        return pending.id

    async def run() -> list[str]:
        return await asyncio.gather(*(one(i) for i in range(60)))

    ids = asyncio.run(run())
    assert len(set(ids)) == 60
    assert sum(commits) == 120 and len(commits) < 120
    records = {r.id: r for r in log.records()}
    assert set(records) == set(ids)
    assert all(r.outcome == "sent" for r in records.values())
    assert {r.who["actor"]: r.to_dict()["response_bytes"] for r in records.values()} == {
        f"a{i}": i for i in range(60)
    }
    result = log.verify()
    assert result.intact and result.records == 60 and result.pending == 0


def test_async_block_and_fail(log: AuditLog) -> None:
    async def run() -> tuple[str, str]:
        rid = await log.ablock(transfer(0), reason="no", rule="destination.vendor")
        pending = await log.abegin(transfer(1))
        await pending.afail("upstream connect: refused")
        return rid, pending.id

    blocked, failed = asyncio.run(run())
    assert log.get(blocked).outcome == "blocked" and log.get(failed).outcome == "failed"
    assert log.get(failed).to_dict()["reason"] == "upstream connect: refused"


def test_one_failing_async_op_fails_only_its_own_await(
    log: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = log.begin(transfer(0))
    commits = count_commits(log, monkeypatch)

    async def run() -> list[Any]:
        log._lock.acquire()  # the writer thread waits; everything below queues for one commit
        try:
            tasks = [
                asyncio.ensure_future(log.abegin(transfer(1))),
                asyncio.ensure_future(log.afinish("no-such-record", status=200)),
                asyncio.ensure_future(first.afinish(status=200)),
                asyncio.ensure_future(log.abegin(transfer(2))),
            ]
            await asyncio.sleep(0)
            assert len(log._commits.queue) == 4
        finally:
            log._lock.release()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(run())
    assert commits == [4]
    assert isinstance(results[1], AuditLogError) and "no begun transfer" in str(results[1])
    assert [type(r).__name__ for r in results] == [
        "PendingTransfer",
        "AuditLogError",
        "NoneType",
        "PendingTransfer",
    ]
    assert log.get(first.id).outcome == "sent" and log.counts()["records"] == 3
    assert log.verify().intact


def test_a_failed_async_commit_fails_every_await(log: AuditLog) -> None:
    pending = log.begin(transfer(0))
    before = log.counts()
    real = log._db
    assert real is not None
    broken = FailingCommit(real)

    async def run() -> list[Any]:
        log._lock.acquire()
        try:
            log._db = broken  # type: ignore[assignment]
            tasks: list[asyncio.Future[Any]] = [
                asyncio.ensure_future(log.abegin(transfer(i))) for i in range(1, 4)
            ]
            tasks.append(asyncio.ensure_future(pending.afinish(status=200)))
            await asyncio.sleep(0)
            assert len(log._commits.queue) == 4
        finally:
            log._lock.release()
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        results = asyncio.run(run())
    finally:
        log._db = real
    assert broken.refused == 1
    assert all(isinstance(r, AuditLogError) for r in results[:3]), results
    assert results[3] is None and pending.finished  # the finish is kept for the next commit
    assert log.counts() == before
    asyncio.run(log.abegin(transfer(9)))
    assert log.get(pending.id).outcome == "sent" and log.verify().intact


def test_a_cancelled_await_still_commits(log: AuditLog, tmp_path: Path) -> None:
    """A caller that goes away does not withdraw an append that may already be in the
    transaction, and the others waiting on the same commit still hear of theirs."""
    pending = log.begin(transfer(0))
    other = log.begin(transfer(1))

    async def run() -> None:
        log._lock.acquire()
        try:
            task = asyncio.ensure_future(pending.afinish(status=299))
            await asyncio.sleep(0)
            waiting = asyncio.ensure_future(other.afinish(status=200))
            await asyncio.sleep(0)
            assert len(log._commits.queue) == 2
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            log._lock.release()
        await waiting  # settled although the ticket before it in the batch was cancelled

    asyncio.run(asyncio.wait_for(run(), 30))
    assert pending.finished and other.finished
    log.close()  # waits for the writer thread
    with AuditLog(tmp_path / "audit.db", readonly=True) as ro:
        assert ro.get(pending.id).to_dict()["status"] == 299
        assert ro.get(other.id).outcome == "sent"


def test_a_waiter_whose_event_loop_is_gone_does_not_break_the_batch(
    log: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    real_drain = log._commits.drain

    def gated_drain() -> None:  # the writer thread stays out: the sync caller leads
        gate.wait(30)
        real_drain()

    monkeypatch.setattr(log._commits, "drain", gated_drain)

    async def leave() -> None:
        task = asyncio.ensure_future(log.abegin(transfer(0)))
        await asyncio.sleep(0)
        assert len(log._commits.queue) == 1
        task.cancel()

    asyncio.run(leave())  # that event loop is closed now
    try:
        with Held(log) as held:
            held.call("sync", lambda: log.begin(transfer(1)))
    finally:
        gate.set()
    assert held.errors == {}
    assert log.counts()["records"] == 2 and log.verify().intact


def test_sync_and_async_appends_share_one_commit(
    log: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = count_commits(log, monkeypatch)
    futures: list[Future[Any]] = []
    with Held(log) as held:
        for i in range(3):
            _, op = log._begin_op(transfer(i))
            futures.append(log._commits.submit(op))
        held.call("sync", lambda: log.begin(transfer(9)))
        assert len(log._commits.queue) == 4
    for f in futures:
        assert f.result(timeout=30) is None
    wait_for(lambda: not log._commits.drain_due, "the writer thread to pass")
    assert commits == [4] and "sync" not in held.errors
    assert log.counts()["records"] == 4 and log.verify().intact


def test_close_commits_queued_async_appends(log: AuditLog, tmp_path: Path) -> None:
    """The writer thread is held back until close() either waits for it or has returned: a
    close() that did not wait would leave the appends to a closed log."""
    gate = threading.Event()
    real_drain = log._commits.drain

    def gated_drain() -> None:
        gate.wait(30)
        real_drain()

    log._commits.drain = gated_drain  # type: ignore[method-assign]
    futures: list[Future[Any]] = []
    for i in range(20):
        _, op = log._begin_op(transfer(i))
        futures.append(log._commits.submit(op))
    drainer = log._commits.drainer
    assert drainer is not None
    real_shutdown = drainer.shutdown

    def shutdown(wait: bool = True, **kwargs: Any) -> None:
        if wait:
            gate.set()  # close() waits for the writer thread: let it run
        real_shutdown(wait=wait, **kwargs)

    drainer.shutdown = shutdown  # type: ignore[method-assign]

    def close() -> None:
        try:
            log.close()
        finally:
            gate.set()

    closing = threading.Thread(target=close)
    closing.start()
    closing.join(30)
    assert not closing.is_alive()
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(AuditLogError, match="closed"):
        log._commits.submit(log._begin_op(transfer(99))[1])
    result = verify_log(tmp_path / "audit.db")
    assert result.ok and result.records == 20 and result.pending == 20  # and signed at close


def status(record: Any) -> int | None:
    return None if record.finish is None else record.finish["status"]


def test_finish_nowait_is_seen_by_readers_of_the_handle_and_survives_close(
    log: AuditLog, tmp_path: Path
) -> None:
    # The gateway answers the app without waiting for the finish's commit: the writer thread
    # commits it later. A read through the same handle must still see it, and close() must
    # not drop it.
    gate = threading.Event()
    real_drain = log._commits.drain

    def gated_drain() -> None:
        gate.wait(30)
        real_drain()

    pendings = [log.begin(transfer(i)) for i in range(5)]
    log._commits.drain = gated_drain  # type: ignore[method-assign]
    rescue = threading.Timer(20, gate.set)  # never hang the suite, whatever fails below
    rescue.daemon = True
    rescue.start()
    for i, p in enumerate(pendings):
        p.finish_nowait(status=200 + i, vendor_request_id=f"req_{i}")
        assert p.finished
    assert log._commits.queue  # queued, not committed: the writer is held back
    with AuditLog(tmp_path / "audit.db", readonly=True) as other:
        assert {r.outcome for r in other.records()} == {"unknown"}  # not committed yet
    reading: list[Any] = []
    reader = threading.Thread(target=lambda: reading.extend(log.records()))
    reader.start()
    time.sleep(0.2)
    assert reader.is_alive()  # the read waits for the queued finishes ...
    gate.set()
    rescue.cancel()
    reader.join(20)
    assert [(r.outcome, status(r)) for r in reading] == [("sent", 200 + i) for i in range(5)]
    log._commits.drain = real_drain  # type: ignore[method-assign]
    last = log.begin(transfer(9))
    last.finish_nowait(status=201)
    log.close()  # ... and close() commits what is still queued
    with AuditLog(tmp_path / "audit.db", readonly=True) as other:
        assert [status(r) for r in other.records()] == [200, 201, 202, 203, 204, 201]
    assert verify_log(tmp_path / "audit.db").ok


def test_a_finish_nowait_that_cannot_be_written_is_reported_not_raised(
    log: AuditLog, caplog: pytest.LogCaptureFixture
) -> None:
    done = log.begin(transfer(1))
    done.finish(status=200)
    PendingTransfer(log, done.id).finish_nowait(status=500)  # its own check refuses it
    PendingTransfer(log, "no-such-record").finish_nowait(status=200)
    ok = log.begin(transfer(2))
    ok.finish_nowait(status=204)  # in the same batch or the next: unaffected
    with caplog.at_level("ERROR", logger="veilpix.audit"):
        records = {r.id: r for r in log.records()}
    assert status(records[done.id]) == 200 and status(records[ok.id]) == 204
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "already finished" in messages and "no-such-record" in messages
    log.close()
    assert verify_log(log.path).ok
