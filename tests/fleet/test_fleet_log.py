"""The transfer log on a real PostgreSQL: the file log's API and promises, many writers."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import pgkit
import pytest

from auditkit import transfer
from veilpix import AuditLog, AuditLogError, ConfigError
from veilpix.audit.fleet import FleetLog, default_key_path, redact


def _writes(log: AuditLog, n: int, **overrides: object) -> list[str]:
    ids = []
    for i in range(n):
        pending = log.begin(transfer(i, **overrides))  # type: ignore[arg-type]
        pending.finish(status=200, response_bytes=10)
        ids.append(pending.id)
    return ids


def test_a_url_opens_a_fleet_log_with_the_file_logs_api(fleet_url: str, fleet_key: Path) -> None:
    with AuditLog(fleet_url, key_path=fleet_key) as log:
        assert isinstance(log, FleetLog)
        ids = _writes(log, 3)
        rid = log.block(transfer(9), reason="vendor not allowed", rule="vendor")
        assert log.get(ids[0][:8]).outcome == "sent"
        assert log.get(rid).outcome == "blocked"
        counts = log.counts()
    assert counts["records"] == 4 and counts["pending"] == 0 and counts["writers"] == 1
    assert fleet_key.stat().st_mode & 0o777 == 0o600
    with AuditLog(fleet_url, key_path=fleet_key, readonly=True) as ro:
        records = list(ro.records())
        assert [r.id for r in records[:3]] == ids
        assert [r.outcome for r in ro.records(newest_first=True, limit=1)] == ["blocked"]
        assert [r.id for r in ro.records(outcome="blocked")] == [rid]
        assert len(list(ro.records(vendor="OPENAI"))) == 2  # (i % 3 == 0 is gemini)
        assert ro.extent()[1] >= 8
        facts = ro.facts()
        assert facts[0][1] == "begin" and json.loads(facts[0][5])[0] == "gemini"
        result = ro.verify()
    assert result.ok, result.problems
    assert [w["state"] for w in result.writers] == ["closed"]
    assert result.records == 4 and result.head and result.head.startswith("vpf1:")


def test_two_writers_in_two_processes_keep_their_own_chains(
    fleet_url: str, fleet_key: Path
) -> None:
    with AuditLog(fleet_url, key_path=fleet_key):
        pass  # founded here; the key file is then copied to the "other machines"
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_child_writes, args=(fleet_url, str(fleet_key), 60)) for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with AuditLog(fleet_url, key_path=fleet_key, readonly=True) as ro:
        result = ro.verify()
        assert ro.counts()["records"] == 120
    assert result.ok, result.problems
    busy = [w for w in result.writers if w["entries"]]
    assert len(busy) == 2 and all(w["state"] == "closed" for w in busy)
    assert {w["entries"] for w in busy} == {120}


def _child_writes(url: str, key: str, n: int) -> None:
    with AuditLog(url, key_path=key, checkpoint_every=25) as log:
        _writes(log, n)


def test_subjects_are_shared_across_writers_and_erased_for_all(
    fleet_url: str, fleet_key: Path
) -> None:
    a = AuditLog(fleet_url, key_path=fleet_key)
    b = AuditLog(fleet_url, key_path=fleet_key)
    try:
        _writes(a, 2, subject_ref="alice@example.com")
        _writes(b, 2, subject_ref="alice@example.com")
        assert a.counts()["subjects"] == 1
        assert len(list(b.records(subject="alice@example.com"))) == 4
        erased = b.erase("alice@example.com", request_ref="DSR-1", by="dpo")
        assert erased.records == 4 and not erased.physically_overwritten
        assert {r.subject for r in a.records()} == {"erased"}
    finally:
        a.close()
        b.close()
    with AuditLog(fleet_url, key_path=fleet_key, readonly=True) as ro:
        result = ro.verify()
    assert result.ok, result.problems
    assert result.erasures == 1


def test_prune_cuts_every_chain_and_still_verifies(fleet_url: str, fleet_key: Path) -> None:
    from datetime import UTC, datetime, timedelta

    old = datetime(2025, 1, 1, tzinfo=UTC)
    with AuditLog(fleet_url, key_path=fleet_key, clock=lambda: old, checkpoint_every=5) as a:
        _writes(a, 7)
    with AuditLog(fleet_url, key_path=fleet_key, clock=lambda: old, checkpoint_every=5) as b:
        _writes(b, 4)
    with AuditLog(fleet_url, key_path=fleet_key, checkpoint_every=5) as c:
        kept = _writes(c, 3)
        pruned = c.prune(timedelta(days=90))
    assert pruned.records == 11
    with AuditLog(fleet_url, key_path=fleet_key, readonly=True) as ro:
        assert [r.id for r in ro.records()] == kept
        result = ro.verify()
    assert result.ok, result.problems


def test_the_finish_of_another_writers_transfer_and_its_refusals(
    fleet_url: str, fleet_key: Path
) -> None:
    with AuditLog(fleet_url, key_path=fleet_key) as a, AuditLog(fleet_url, key_path=fleet_key) as b:
        pending = a.begin(transfer(1))
        b.finish(pending.id, status=200)  # begun by a, finished by b
        with pytest.raises(AuditLogError, match="already finished"):
            a.finish(pending.id, status=500)
        with pytest.raises(AuditLogError, match="no begun transfer"):
            b.finish("00000000-no-such", status=200)
        assert a.get(pending.id).outcome == "sent"
        result = a.verify()
    assert result.intact and not [p for p in result.problems if p.kind != "unsigned-tail"]


def test_async_writers_share_commits(fleet_url: str, fleet_key: Path) -> None:
    import asyncio

    async def main(log: AuditLog) -> None:
        async def one(i: int) -> None:
            pending = await log.abegin(transfer(i))
            await pending.afinish(status=200)

        await asyncio.gather(*(one(i) for i in range(40)))

    with AuditLog(fleet_url, key_path=fleet_key) as log:
        asyncio.run(main(log))
        assert log.counts()["records"] == 40
        assert log.verify().intact


def test_url_password_never_shown(pg: pgkit.Cluster, fleet_url: str, fleet_key: Path) -> None:
    assert pg.password not in redact(fleet_url)
    with AuditLog(fleet_url, key_path=fleet_key) as log:
        assert pg.password not in repr(log) and pg.password not in log.location
        _writes(log, 1)
        with log._read() as db:
            names = db.execute("SELECT application_name FROM pg_stat_activity").fetchall()
        assert all(pg.password not in str(n) for n in names)
    wrong = fleet_url.replace(pg.password, "not-the-password-x1")
    with pytest.raises(AuditLogError) as caught:
        AuditLog(wrong, key_path=fleet_key)
    text = str(caught.value) + caught.value.hint
    assert "not-the-password-x1" not in text and pg.password not in text
    assert "refused" in text or "authentication" in text


def test_a_machine_without_the_fleets_key_file_is_refused(
    fleet_url: str, fleet_key: Path, tmp_path: Path
) -> None:
    with AuditLog(fleet_url, key_path=fleet_key) as log:
        _writes(log, 1)
    with pytest.raises(AuditLogError, match="no key file for the fleet log"):
        AuditLog(fleet_url, key_path=tmp_path / "elsewhere.key")
    other = tmp_path / "other.key"
    with AuditLog(fleet_url.rsplit("/", 1)[0] + "/postgres", key_path=other) as foreign:
        del foreign  # founded a second fleet in the postgres database
    with pytest.raises(AuditLogError, match="belongs to another log"):
        AuditLog(fleet_url, key_path=other)


def test_a_database_cut_back_behind_the_key_file_is_refused(
    pg: pgkit.Cluster, fleet_url: str, fleet_key: Path
) -> None:
    with AuditLog(fleet_url, key_path=fleet_key, checkpoint_every=3) as log:
        _writes(log, 4)
    pg.psql(fleet_url, "DELETE FROM veilpix.checkpoints WHERE fid > 1")
    with pytest.raises(AuditLogError, match="cut back or restored"):
        AuditLog(fleet_url, key_path=fleet_key)
    # an emptied database (schema dropped) with a key file that knew it
    pg.psql(fleet_url, "DROP SCHEMA veilpix CASCADE")
    with pytest.raises(AuditLogError, match="holds no transfer log"):
        AuditLog(fleet_url, key_path=fleet_key)


def test_config_and_environment_name_a_fleet(
    fleet_url: str, fleet_key: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "veilpix.toml"
    toml.write_text(f'[log]\nurl = "{fleet_url}"\nkey = "{fleet_key}"\n')
    with AuditLog.from_config(toml) as log:
        assert isinstance(log, FleetLog)
    monkeypatch.setenv("VEILPIX_LOG", fleet_url)
    monkeypatch.setenv("VEILPIX_LOG_KEY", str(fleet_key))
    with AuditLog.from_config(None, readonly=True) as log:
        assert isinstance(log, FleetLog) and log.key_path == fleet_key
    with AuditLog(readonly=True) as log:
        assert isinstance(log, FleetLog)
    bad = tmp_path / "bad.toml"
    bad.write_text('[log]\nurl = "mysql://x/y"\n')
    with pytest.raises(ConfigError, match="PostgreSQL URL"):
        AuditLog.from_config(bad)
    both = tmp_path / "both.toml"
    both.write_text(f'[log]\nurl = "{fleet_url}"\npath = "a.db"\n')
    with pytest.raises(ConfigError, match="both path and url"):
        AuditLog.from_config(both)


def test_default_key_path_is_per_database() -> None:
    a = default_key_path("postgresql://u:pw@db.example:5432/audit")
    b = default_key_path("postgresql://other@db.example/audit")  # same database
    c = default_key_path("postgresql://u@db.example:5433/audit")
    assert a == b != c and "pw" not in a.name and a.name.startswith("fleet-db.example-5432-audit")


def test_os_durability_still_records_everything(fleet_url: str, fleet_key: Path) -> None:
    with AuditLog(fleet_url, key_path=fleet_key, durability="os") as log:
        _writes(log, 5)
        assert log.counts()["records"] == 5


def test_forked_child_registers_as_a_writer_of_its_own(fleet_url: str, fleet_key: Path) -> None:
    log = AuditLog(fleet_url, key_path=fleet_key)
    _writes(log, 2)
    pid = os.fork()
    if pid == 0:  # the child: must not touch the parent's session
        code = 0
        try:
            _writes(log, 2)
            log.close()
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    _writes(log, 2)  # the parent's session is intact
    log.close()
    with AuditLog(fleet_url, key_path=fleet_key, readonly=True) as ro:
        result = ro.verify()
    assert result.ok, result.problems
    assert sorted(w["entries"] for w in result.writers) == [4, 8]


@pytest.mark.parametrize(
    "password", ["Sup3r@Secret", "my Secret", "a%zzSecret", "ab#Secret", "ab/Secret"]
)
def test_a_password_that_needs_encoding_is_refused_unshown(password: str, fleet_key: Path) -> None:
    """libpq and a URL parser read such a URL differently (an unencoded @ moves the host):
    refused before connecting, and no piece of the password in the message."""
    url = f"postgresql://veilpix_admin:{password}@127.0.0.1:1/postgres"
    with pytest.raises(ConfigError) as caught:
        AuditLog(url, key_path=fleet_key)
    text = str(caught.value)
    assert "Secret" not in text and "Sup3r" not in text and "percent-encode" in text


def test_the_drivers_loggers_never_print_the_password(
    fleet_url: str, pg: pgkit.Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from veilpix.audit.fleet._url import remember_secret

    remember_secret(fleet_url)
    with caplog.at_level(logging.WARNING):
        logging.getLogger("psycopg.pool").warning("error connecting with %s", pg.password)
    assert pg.password not in caplog.text and "***" in caplog.text


def test_without_the_driver_a_clear_error(monkeypatch: pytest.MonkeyPatch, fleet_key: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "psycopg", None)  # (as if not installed)
    for readonly in (True, False):
        with pytest.raises(AuditLogError, match="needs the psycopg driver") as caught:
            AuditLog("postgresql://u@127.0.0.1:1/x", key_path=fleet_key, readonly=readonly)
        assert "postgres" in caught.value.hint
