"""The fleet log when things go wrong for real: a writer killed with SIGKILL under load, the
server stopped mid-load and started again, a read-only database, tampering through psql."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pgkit
import pytest

from auditkit import transfer
from veilpix import AuditLog, AuditLogError

TESTS = Path(__file__).resolve().parents[1]

# A writer under load: it prints a record's id only once begin() returned (the moment a door
# would send), then finishes it; the test kills it with SIGKILL mid-stream.
_LOADER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from auditkit import transfer
    from veilpix import AuditLog
    log = AuditLog({url!r}, key_path={key!r}, checkpoint_every=50)
    i = 0
    while True:
        pending = log.begin(transfer(i))
        print(pending.id, flush=True)
        pending.finish(status=200)
        i += 1
    """
)


def test_a_writer_killed_mid_load_loses_nothing_sent_and_is_closed_by_the_next(
    fleet_url: str, fleet_key: Path
) -> None:
    with AuditLog(fleet_url, key_path=fleet_key) as founder:
        del founder
    script = _LOADER.format(tests=str(TESTS), url=fleet_url, key=str(fleet_key))
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert proc.stdout is not None
    sent = []
    for line in proc.stdout:
        sent.append(line.strip())
        if len(sent) == 120:
            break
    os.kill(proc.pid, signal.SIGKILL)
    sent += [line.strip() for line in proc.stdout]  # what it printed before it died
    proc.wait(10)
    with AuditLog(fleet_url, key_path=fleet_key, readonly=True) as ro:
        before = ro.verify()
        logged = {r.id for r in ro.records()}
    assert set(sent) <= logged  # nothing "sent" without its begin committed
    assert before.intact, before.problems  # only an unsigned tail, if any
    # the next writer to open checks the dead writer's tail and closes its chain
    with AuditLog(fleet_url, key_path=fleet_key) as next_writer:
        next_writer.begin(transfer(0)).finish(status=200)
    with AuditLog(fleet_url, key_path=fleet_key, readonly=True) as ro:
        after = ro.verify()
    assert after.ok, after.problems
    states = {w["writer"]: w["state"] for w in after.writers if w["entries"]}
    assert sorted(states.values()) == ["adopted", "closed"]


def test_server_stopped_mid_load_blocks_sends_and_writing_resumes(
    own_pg: pgkit.Cluster, fleet_key: Path
) -> None:
    url = own_pg.database()
    log = AuditLog(url, key_path=fleet_key)
    try:
        pending = log.begin(transfer(1))
        own_pg.stop("immediate")  # as if the server crashed
        with pytest.raises(AuditLogError) as caught:
            log.begin(transfer(2))
        assert own_pg.password not in str(caught.value)
        assert "nothing was sent" in caught.value.hint
        pending.finish(status=200)  # the call is over either way: kept for later
        own_pg.start()
        own_pg.wait_ready()
        # the doors recover by themselves once the database is back: the first call goes
        log.begin(transfer(3)).finish(status=200)
        assert log.get(pending.id).outcome == "sent"  # the kept finish was written
    finally:
        log.close()
    with AuditLog(url, key_path=fleet_key, readonly=True) as ro:
        result = ro.verify()
    assert result.ok, result.problems


def test_read_only_database_refuses_the_send_with_a_clear_error(
    pg: pgkit.Cluster, fleet_url: str, fleet_key: Path
) -> None:
    db = fleet_url.rsplit("/", 1)[1]
    with AuditLog(fleet_url, key_path=fleet_key) as log:
        log.begin(transfer(1)).finish(status=200)
        pg.sql(f'ALTER DATABASE "{db}" SET default_transaction_read_only = on')
        try:
            log._db.close()  # a new session (as after a failover to a replica) is read-only
            with pytest.raises(AuditLogError, match="read-only") as caught:
                log.begin(transfer(2))
            assert "nothing was sent" in caught.value.hint
        finally:
            pg.sql(f'ALTER DATABASE "{db}" RESET default_transaction_read_only')
        log._db.close()
        log.begin(transfer(3)).finish(status=200)
        assert log.counts()["records"] == 2


def test_a_role_that_may_not_insert_is_refused(
    pg: pgkit.Cluster, fleet_url: str, fleet_key: Path
) -> None:
    with AuditLog(fleet_url, key_path=fleet_key) as log:
        log.begin(transfer(1)).finish(status=200)
    db = fleet_url.rsplit("/", 1)[1]
    pg.sql(f"CREATE ROLE reader_{db} LOGIN PASSWORD 'pw-reader-1'")
    pg.psql(
        fleet_url,
        f"GRANT USAGE ON SCHEMA veilpix TO reader_{db};"
        f" GRANT SELECT ON ALL TABLES IN SCHEMA veilpix TO reader_{db}",
    )
    reader = pg.url(db, user=f"reader_{db}", password="pw-reader-1")
    with AuditLog(reader, key_path=fleet_key, readonly=True) as ro:
        assert ro.counts()["records"] == 1 and ro.verify().ok
    with AuditLog(reader, key_path=fleet_key) as log, pytest.raises(AuditLogError) as caught:
        log.begin(transfer(2))  # a writer registers at its first write: that needs INSERT
    assert "pw-reader-1" not in str(caught.value)
    assert "may not" in caught.value.hint


def test_finishes_a_crashed_server_lost_are_written_again(
    pg: pgkit.Cluster, fleet_url: str, fleet_key: Path
) -> None:
    """A finish is committed without waiting for the disk; a crash of the server can lose it
    (the newest entries of the writer, nothing durable). The writer, reconnecting, finds its
    chain shorter than it wrote, checks that all it committed durably is there, goes on from
    there and writes the lost finish again."""
    with AuditLog(fleet_url, key_path=fleet_key) as log:
        pending = log.begin(transfer(1))
        pending.finish(status=200)
        writer = log._writer_chain().writer
        # as the crash would: the finish is gone, and so is the writer's session
        pg.psql(
            fleet_url, f"DELETE FROM veilpix.entries WHERE writer = {writer} AND kind = 'finish'"
        )
        _end_session(pg, writer)
        log.begin(transfer(2)).finish(status=200)  # its session is gone: it reconnects
        assert log.get(pending.id).outcome == "sent"
        assert len(log.entries_of(pending.id)) == 2  # begin and finish, once each
    with AuditLog(fleet_url, key_path=fleet_key, readonly=True) as ro:
        result = ro.verify()
    assert result.ok, result.problems


def test_a_durable_entry_missing_after_reconnecting_is_refused(
    pg: pgkit.Cluster, fleet_url: str, fleet_key: Path
) -> None:
    """What a crash cannot take back (a begin, committed durably) missing is tampering."""
    with AuditLog(fleet_url, key_path=fleet_key) as log:
        log.begin(transfer(1)).finish(status=200)
        log.begin(transfer(2))  # the newest entry, durable
        writer = log._writer_chain().writer
        pg.psql(fleet_url, f"DELETE FROM veilpix.entries WHERE writer = {writer} AND seq >= 3")
        _end_session(pg, writer)
        with pytest.raises(AuditLogError, match="restored or altered"):
            log.begin(transfer(3))
        log._closed = True  # (leave without the close checkpoint: it is refused too)


def test_a_full_database_refuses_the_send_and_writing_resumes(
    own_pg: pgkit.Cluster, fleet_key: Path, tmp_path: Path
) -> None:
    """The entries live on a 3 MB file system (a tablespace on tmpfs) that fills up: calls
    are refused with the reason, none is sent; given room, writing goes on by itself."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    disk = Path(tempfile.mkdtemp(prefix="veilpix-full-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace')[:100]}")
    try:
        if own_pg.user:
            shutil.chown(disk, own_pg.user)
        url = own_pg.database()
        with AuditLog(url, key_path=fleet_key) as founder:
            founder.begin(transfer(0)).finish(status=200)
        own_pg.sql(f"CREATE TABLESPACE tiny LOCATION '{disk}'")
        own_pg.psql(url, "ALTER TABLE veilpix.entries SET TABLESPACE tiny")
        log = AuditLog(url, key_path=fleet_key)
        try:
            sent = 0
            with pytest.raises(AuditLogError) as caught:
                for i in range(20_000):
                    log.begin(transfer(i)).finish(status=200)
                    sent += 1
            assert "out of space" in caught.value.hint and "nothing was sent" in caught.value.hint
            assert sent > 0
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
            for _ in range(50):  # the finishes kept meanwhile go in with the next write
                try:
                    log.begin(transfer(1)).finish(status=200)
                    break
                except AuditLogError:
                    time.sleep(0.1)
            assert log.counts()["records"] >= sent + 2
        finally:
            log.close()
        with AuditLog(url, key_path=fleet_key, readonly=True) as ro:
            assert ro.verify().ok
    finally:
        own_pg.stop("immediate")  # (the tablespace goes with the cluster)
        subprocess.run(["umount", "-l", str(disk)], check=False)
        shutil.rmtree(disk, ignore_errors=True)


def _end_session(pg: pgkit.Cluster, writer: int) -> None:
    """End writer ``writer``'s database session, as a crash of the server would, and wait
    until it is gone (pg_terminate_backend only signals it)."""
    pg.sql(
        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
        f" WHERE application_name = 'veilpix writer {writer}'"
    )
