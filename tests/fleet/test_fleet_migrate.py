"""Moving a file log into a fleet log, and the fleet's database roles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pgkit
import pytest

from auditkit import PHOTO, transfer
from veilpix import AuditLog, AuditLogError, ConfigError
from veilpix.audit.fleet._migrate import migrate
from veilpix.cli._audit_fleet import grants_sql


def _file_log(path: Path, n: int = 20) -> list[str]:
    ids = []
    with AuditLog(path, checkpoint_every=7) as log:
        for i in range(n):
            pending = log.begin(transfer(i, subject_ref="carol" if i % 4 == 0 else None))
            pending.finish(status=200)
            ids.append(pending.id)
        log.block(transfer(99), reason="country not allowed", rule="country")
    return ids


def test_a_migrated_log_verifies_and_keeps_its_records_subjects_and_photos(
    tmp_path: Path, fleet_url: str, fleet_key: Path
) -> None:
    source = tmp_path / "audit.db"
    ids = _file_log(source)
    before = source.read_bytes()
    done = migrate(source, fleet_url, target_key=fleet_key)
    assert done.verified and done.entries == 42 and done.records == 21 and done.subjects == 1
    assert source.read_bytes() == before  # the file is not changed
    with AuditLog(fleet_url, key_path=fleet_key, readonly=True) as ro:
        result = ro.verify()
        moved = list(ro.records())
        assert result.ok, result.problems
        assert [r.id for r in moved][:20] == ids
        with AuditLog(source, readonly=True) as src:
            assert [r.begun for r in src.records()] == [r.begun for r in moved]
        assert len(list(ro.records(subject="carol"))) == 5  # subject tags still match
        assert len(ro.with_image(PHOTO)) == 21  # keyed fingerprints still match
        statement = ro.reviews()[0]
        assert (
            statement["action"] == "migrate"
            and statement["facts"]["verified_head"] == done.source_head
        )
    # erasure works on the moved records (the wrap key came along)
    with AuditLog(fleet_url, key_path=fleet_key) as fleet:
        assert fleet.erase("carol", request_ref="DSR-9").records == 5
        assert {r.subject for r in fleet.records(since="2000-01-01") if r.sealed is None} >= {
            "erased"
        }
    # and new writers append beside it
    with AuditLog(fleet_url, key_path=fleet_key) as fleet:
        fleet.begin(transfer(1)).finish(status=200)
    with AuditLog(fleet_url, key_path=fleet_key, readonly=True) as ro:
        assert ro.verify().ok


def test_a_pruned_log_moves_without_its_bridge(
    tmp_path: Path, fleet_url: str, fleet_key: Path
) -> None:
    source = tmp_path / "audit.db"
    old = datetime(2025, 1, 1, tzinfo=UTC)
    with AuditLog(source, clock=lambda: old) as log:
        for i in range(5):
            log.begin(transfer(i)).finish(status=200)
    with AuditLog(source) as log:
        log.begin(transfer(9)).finish(status=200)
        log.prune(timedelta(days=30))
    done = migrate(source, fleet_url, target_key=fleet_key)
    assert done.skipped_prunes == 1 and done.records == 1 and done.verified
    with AuditLog(fleet_url, key_path=fleet_key, readonly=True) as ro:
        assert ro.verify().ok


def test_a_tampered_log_is_not_migrated(tmp_path: Path, fleet_url: str, fleet_key: Path) -> None:
    import sqlite3

    source = tmp_path / "audit.db"
    _file_log(source, 5)
    with sqlite3.connect(source) as db:
        db.execute("UPDATE entries SET body = replace(body, 'openai', 'mistral') WHERE seq = 3")
    with pytest.raises(AuditLogError, match="does not verify"):
        migrate(source, fleet_url, target_key=fleet_key)
    assert not fleet_key.exists()


def test_migrating_into_a_fleet_that_has_entries_is_refused(
    tmp_path: Path, fleet_url: str, fleet_key: Path
) -> None:
    with AuditLog(fleet_url, key_path=fleet_key) as fleet:
        fleet.begin(transfer(1)).finish(status=200)
    source = tmp_path / "audit.db"
    _file_log(source, 2)
    with pytest.raises(ConfigError, match="another fleet's keys"):
        migrate(source, fleet_url, target_key=fleet_key)
    with pytest.raises(ConfigError, match="holds a fleet log already"):
        migrate(source, fleet_url, target_key=tmp_path / "new.key")


def _migrate_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veilpix", "audit", "migrate", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )


def test_the_migrate_command(tmp_path: Path, pg: pgkit.Cluster, fleet_url: str) -> None:
    source = tmp_path / "audit.db"
    _file_log(source, 3)
    key = tmp_path / "fleet.key"
    where = ("--from", str(source), "--to", fleet_url, "--to-key", str(key))
    run = _migrate_cli(*where, "--json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["verified"] and doc["records"] == 4 and pg.password not in run.stdout
    again = _migrate_cli(*where)
    assert again.returncode == 2 and "holds 9 entries already" in again.stderr
    assert pg.password not in again.stderr
    bad = _migrate_cli("--from", str(source), "--to", str(tmp_path / "x.db"))
    assert bad.returncode == 2 and "PostgreSQL URL" in bad.stderr


def test_roles_writers_insert_only_reviewers_read(
    pg: pgkit.Cluster, fleet_url: str, fleet_key: Path
) -> None:
    db = fleet_url.rsplit("/", 1)[1]
    with AuditLog(fleet_url, key_path=fleet_key) as owner:  # created by the owner
        owner.begin(transfer(0)).finish(status=200)
    names = {r: f"{r}_{db}" for r in ("doors", "dpo", "admin")}
    for role in names.values():
        pg.sql(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'")
    pg.psql(fleet_url, grants_sql(names["doors"], names["dpo"], names["admin"]))
    url = {r: pg.url(db, user=n, password=f"pw-{n}") for r, n in names.items()}
    with AuditLog(url["doors"], key_path=fleet_key) as doors:
        doors.begin(transfer(1, subject_ref="dave")).finish(status=200)
        doors.block(transfer(2), reason="r", rule="vendor")
        with doors._read() as conn:  # a writer cannot change what is written
            for sql in (
                "UPDATE veilpix.entries SET body = '{}' WHERE seq = 1",
                "DELETE FROM veilpix.entries WHERE seq = 1",
                "DELETE FROM veilpix.subject_keys",
            ):
                with pytest.raises(Exception, match="permission denied"):
                    conn.execute(sql)
        with pytest.raises(AuditLogError, match="may not"):
            doors.erase("dave")
    with AuditLog(url["dpo"], key_path=fleet_key, readonly=True) as dpo:
        assert dpo.verify().ok and dpo.counts()["records"] == 3
    with AuditLog(url["dpo"], key_path=fleet_key) as dpo, pytest.raises(AuditLogError):
        dpo.begin(transfer(3))  # a reviewer cannot register as a writer
    with AuditLog(url["admin"], key_path=fleet_key) as admin:
        assert admin.erase("dave", request_ref="DSR-1").records == 1
        admin.prune(timedelta(days=0))
    with AuditLog(fleet_url, key_path=fleet_key, readonly=True) as ro:
        assert ro.verify().ok


def test_a_log_file_its_doors_still_write_is_not_migrated(
    tmp_path: Path, fleet_url: str, fleet_key: Path
) -> None:
    """Whatever a running writer added after the move would stay behind in the file."""
    source = tmp_path / "audit.db"
    _file_log(source, 2)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from veilpix import AuditLog;"
            " log = AuditLog(sys.argv[1]); print('open', flush=True); time.sleep(60)",
            str(source),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(ConfigError, match=f"open in process {holder.pid}"):
            migrate(source, fleet_url, target_key=fleet_key)
    finally:
        holder.kill()
        holder.wait()
    assert migrate(source, fleet_url, target_key=fleet_key).verified  # once it is stopped


def test_a_log_written_during_the_migration_moves_nothing(
    tmp_path: Path, fleet_url: str, fleet_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import veilpix.audit.fleet._migrate as m

    source = tmp_path / "audit.db"
    _file_log(source, 600)  # 1,202 entries: progress is called at the 1000th
    monkeypatch.setattr(m, "_open_elsewhere", lambda path: [])  # (the writer is in here)

    def write_meanwhile(done: int, total: int) -> None:
        if done < total:
            with AuditLog(source) as door:
                door.begin(transfer(1)).finish(status=200)

    with pytest.raises(ConfigError, match="written during the migration"):
        migrate(source, fleet_url, target_key=fleet_key, progress=write_meanwhile)
    with AuditLog(fleet_url, key_path=fleet_key, readonly=True) as fleet:
        assert fleet.counts()["entries"] == 0  # the fleet's transaction rolled back
