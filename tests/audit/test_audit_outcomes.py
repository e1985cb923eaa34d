"""Finishes the log cannot take when they come (a full disk, files made read-only) are kept
and written later, so their transfers do not stay "outcome unknown" for good."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest

from auditkit import fill, transfer
from veilpix import AuditLog, AuditLogError, verify_log

QUIET = {"checkpoint_every": 1000, "checkpoint_seconds": 3600.0}


class DiskFull:
    """Fault injection: every write transaction of ``log`` fails until ``heal()``."""

    def __init__(self, log: AuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log, self.mp = log, monkeypatch

        def refuse() -> None:
            raise AuditLogError("cannot write the transfer log: database or disk is full")

        monkeypatch.setattr(log, "_still_writable", refuse)

    def heal(self) -> None:
        self.mp.undo()


def outcome(log: AuditLog, rid: str) -> str:
    return log.get(rid).outcome


def test_a_finish_that_fails_is_written_with_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    log = AuditLog(tmp_path / "audit.db", **QUIET)  # type: ignore[arg-type]
    pending = log.begin(transfer(1))
    fault = DiskFull(log, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="veilpix.audit"):
        pending.finish(status=200)  # the call is over: its caller is not failed for the log
    assert "kept and written with the next write" in caplog.text
    with pytest.raises(AuditLogError):  # a begin still fails: nothing is sent unlogged
        log.begin(transfer(2))
    assert outcome(log, pending.id) == "unknown"
    fault.heal()
    fill(log, 1)
    rec = log.get(pending.id)
    assert rec.outcome == "sent" and rec.finish is not None
    assert rec.finish["status"] == 200 and "disk is full" in rec.finish["late"]["why"]
    log.close()
    assert verify_log(tmp_path / "audit.db").ok


def test_finish_nowait_and_afinish_are_carried_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    log = AuditLog(tmp_path / "audit.db", **QUIET)  # type: ignore[arg-type]
    a, b = log.begin(transfer(1)), log.begin(transfer(2))
    fault = DiskFull(log, monkeypatch)
    a.finish_nowait(status=201)
    asyncio.run(b.afinish(status=202))
    log._commits.caught_up()
    fault.heal()
    log.checkpoint()
    assert [log.get(p.id).finish["status"] for p in (a, b)] == [201, 202]  # type: ignore[index]
    log.close()


def test_finishes_still_failing_on_close_are_set_aside_and_written_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.db"
    log = AuditLog(path, **QUIET)  # type: ignore[arg-type]
    ids = [log.begin(transfer(i)).id for i in range(3)]
    DiskFull(log, monkeypatch)
    for rid in ids:
        log.finish(rid, status=200)
    with pytest.raises(AuditLogError):
        log.close()  # the closing checkpoint cannot be written either
    spill = Path(f"{path}-finishes")
    assert stat.S_IMODE(spill.stat().st_mode) == 0o600
    lines = spill.read_text().splitlines()
    assert len(lines) == 3
    # someone edits one line (a 500 becomes a 200): its MAC no longer holds, it is skipped
    doc = json.loads(lines[1])
    doc["finish"]["body"]["status"] = 500
    lines[1] = json.dumps(doc)
    spill.write_text("\n".join(lines) + "\n")
    with AuditLog(path, **QUIET) as again:  # type: ignore[arg-type]
        outcomes = [again.get(rid).outcome for rid in ids]
    assert outcomes == ["sent", "unknown", "sent"]
    assert not spill.exists()
    assert verify_log(path).ok


def test_carried_finish_for_a_transfer_resolved_meanwhile_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog(tmp_path / "audit.db", **QUIET)  # type: ignore[arg-type]
    pending = log.begin(transfer(1))
    fault = DiskFull(log, monkeypatch)
    pending.finish(status=200)
    fault.heal()
    with AuditLog(tmp_path / "audit.db", **QUIET) as other:  # type: ignore[arg-type]
        other.finish(pending.id, outcome="failed", reason="resolved by operator")
    fill(log, 1)  # the carried finish is refused by its own check; the rest goes on
    assert log.get(pending.id).outcome == "failed"
    log.close()
    assert verify_log(tmp_path / "audit.db").ok


# Python 3.12+ warns on every fork of a process with threads (the log's timer is one):
# what is tested is that the child leaves the parent's connection, locks and queue alone.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_writes_through_its_own_connection_and_not_the_parents_carry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker forked after the log was opened (a pre-fork server) writes through a
    connection of its own, keeps the chain one line with its parent, and does not write the
    parent's finishes a second time."""
    import os

    path = tmp_path / "audit.db"
    log = AuditLog(path, **QUIET)  # type: ignore[arg-type]
    carried = log.begin(transfer(0))
    fault = DiskFull(log, monkeypatch)
    carried.finish(status=200)  # kept for the parent's next write
    fault.heal()
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 when its write went well
        code = 1
        try:
            fill(log, 2)
            code = 0 if log.get(carried.id).outcome == "unknown" else 3
            log.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    fill(log, 1)  # the parent writes its carried finish and goes on after the child's entries
    assert log.get(carried.id).outcome == "sent"
    log.close()
    result = verify_log(path)
    assert result.ok and result.records == 4 and result.pending == 0
