"""The audit commands on a fleet log, named by --log URL or $VEILPIX_LOG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pgkit

from auditkit import transfer
from veilpix import AuditLog


def _veilpix(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veilpix", *args],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, **env, "NO_COLOR": "1"},
        timeout=120,
    )


def test_verify_list_and_stats_on_a_fleet(
    pg: pgkit.Cluster, fleet_url: str, fleet_key: Path
) -> None:
    with AuditLog(fleet_url, key_path=fleet_key) as a, AuditLog(fleet_url, key_path=fleet_key) as b:
        for i in range(3):
            a.begin(transfer(i)).finish(status=200)
            b.begin(transfer(i, subject_ref="bob")).finish(status=200)
    env = {"VEILPIX_LOG_KEY": str(fleet_key)}
    shown = _veilpix("audit", "verify", "--log", fleet_url, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "2 writers" in shown.stdout and "closed" in shown.stdout
    assert "every writer's chain is unbroken" in shown.stdout
    assert pg.password not in shown.stdout + shown.stderr
    doc = json.loads(
        _veilpix("audit", "verify", "--json", env={**env, "VEILPIX_LOG": fleet_url}).stdout
    )
    assert doc["ok"] and [w["entries"] for w in doc["writers"]] == [6, 6]
    listed = _veilpix("audit", "list", "--json", "--log", fleet_url, env=env)
    assert len(json.loads(listed.stdout)) == 6
    stats = _veilpix("audit", "stats", "--log", fleet_url, env=env)
    assert stats.returncode == 0 and "openai" in stats.stdout
    pg.psql(fleet_url, "UPDATE veilpix.entries SET body = body || ' ' WHERE writer = 2 AND seq = 3")
    bad = _veilpix("audit", "verify", "--log", fleet_url, env=env)
    assert bad.returncode != 0 and "TAMPERED" in bad.stdout and "writer 2" in bad.stdout


def test_a_bad_url_is_a_clear_error_without_the_password(fleet_key: Path) -> None:
    url = "postgresql://someone:s3cret-pw@127.0.0.1:1/nowhere"
    r = _veilpix("audit", "verify", "--log", url, env={"VEILPIX_LOG_KEY": str(fleet_key)})
    assert r.returncode != 0
    assert "s3cret-pw" not in r.stdout + r.stderr
    assert "postgresql://someone@127.0.0.1:1/nowhere" in r.stderr


def test_the_documented_setup(pg: pgkit.Cluster, tmp_path: Path) -> None:
    """docs/many-machines.md, steps 1 to 4: roles, init as the owner, grants, a writer and a
    reviewer through the CLI."""
    db = f"setup_{os.getpid()}_{tmp_path.name[-6:]}".replace("-", "_").lower()
    pg.sql(f'CREATE DATABASE "{db}"')
    roles = {r: f"{r}_{db}" for r in ("owner", "doors", "dpo")}
    for role in roles.values():
        pg.sql(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'")
    pg.sql(f'GRANT CREATE ON DATABASE "{db}" TO {roles["owner"]}')
    url = {r: pg.url(db, user=n, password=f"pw-{n}") for r, n in roles.items()}
    key = tmp_path / "fleet.key"
    made = _veilpix("audit", "init", "--log", url["owner"], "--key", str(key), "--json", env={})
    assert made.returncode == 0, made.stderr
    doc = json.loads(made.stdout)
    assert doc["fleet"] and doc["key_file_created"] and key.stat().st_mode & 0o777 == 0o600
    assert "pw-" not in made.stdout
    grants = _veilpix(
        "audit", "grants", "--writer", roles["doors"], "--reviewer", roles["dpo"], env={}
    )
    pg.psql(url["owner"], grants.stdout)
    with AuditLog(url["doors"], key_path=key) as doors:
        doors.begin(transfer(1)).finish(status=200)
    shown = _veilpix("audit", "verify", "--log", url["dpo"], "--json", env={})
    assert json.loads(shown.stdout)["ok"]
    again = _veilpix("audit", "init", "--log", url["owner"], "--key", str(key), "--json", env={})
    assert json.loads(again.stdout)["key_file_created"] is False


def test_every_audit_command_on_a_fleet(fleet_url: str, fleet_key: Path, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    old = datetime(2025, 1, 1, tzinfo=UTC)
    with AuditLog(fleet_url, key_path=fleet_key, clock=lambda: old) as a:
        a.begin(transfer(7)).finish(status=200)  # old enough to be pruned
    with AuditLog(fleet_url, key_path=fleet_key) as a:
        ids = [a.begin(transfer(i, subject_ref="bob")) for i in range(2)]
        for p in ids:
            p.finish(status=200)
        open_id = a.begin(transfer(9)).id
    env = {"VEILPIX_LOG": fleet_url, "VEILPIX_LOG_KEY": str(fleet_key)}
    report = tmp_path / "register.html"
    for args, expect in (
        (["show", ids[0].id[:8]], "subject"),
        (["export", "--format", "jsonl"], ids[0].id),
        (["export", "--format", "ocsf"], "6003"),
        (["report", "-o", str(report)], "integrity verified"),
        (["key"], "BEGIN PUBLIC KEY"),
        (["stats", "--since", "2026-01-01"], "openai"),
        (["list", "--subject", "bob"], "2 of"),
        (
            ["resolve", open_id[:8], "--outcome", "failed", "--reason", "vendor shows none"],
            "failed",
        ),
        (["erase", "--subject", "bob", "--request", "DSR-1", "-y"], "2 transfers"),
        (["prune", "--older-than", "180d", "-y"], "1"),
        (["checkpoint"], ""),
        (["verify"], "every writer's chain is unbroken"),
    ):
        r = _veilpix("audit", *args, env=env)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        assert expect in r.stdout + r.stderr, (args, r.stdout, r.stderr)
    assert report.stat().st_mode & 0o777 == 0o600 and "<html" in report.read_text()
