"""The gateway with its log on PostgreSQL: ``veilpix proxy --workers 2 --log URL``, each
worker a writer of the fleet; a call is refused while the database is down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

pytest.importorskip("uvicorn")

import pgkit

from servers import FakeVendor, Server
from veilpix import AuditLog

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def upstream() -> Iterator[tuple[FakeVendor, Server]]:
    fake = FakeVendor()
    with Server(fake) as server:
        yield fake, server


def _proxy(
    tmp_path: Path, url: str, key: Path, vendor: str
) -> tuple[subprocess.Popen[str], str, list[str]]:
    cfg = tmp_path / "veilpix.toml"
    cfg.write_text(f'[vendors.openai]\nbase_url = "{vendor}/v1"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEILPIX_")}
    env["VEILPIX_LOG_KEY"] = str(key)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "veilpix",
            "proxy",
            "--workers",
            "2",
            "--port",
            "0",
            "--config",
            str(cfg),
            "--log",
            url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    assert first.startswith("veilpix proxy listening on http://127.0.0.1:"), (
        first + proc.stderr.read()
    )
    lines = [first]
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
    return proc, first.split()[-1], lines


def test_two_gateway_workers_write_one_fleet_log(
    own_pg: pgkit.Cluster, tmp_path: Path, upstream: tuple[FakeVendor, Server]
) -> None:
    fake, vendor = upstream
    url = own_pg.database()
    key = tmp_path / "fleet.key"
    proc, base, out = _proxy(tmp_path, url, key, vendor.url)
    try:
        clients = [httpx2.Client(base_url=base, timeout=30) for _ in range(12)]
        for c in clients:
            assert c.post("/openai/chat/completions", json=CHAT).status_code == 200
        own_pg.stop("immediate")  # the database goes away: calls are refused, not sent
        refused = clients[0].post("/openai/chat/completions", json=CHAT)
        assert refused.status_code == 503 and own_pg.password not in refused.text
        assert len(fake.seen) == 12
        own_pg.start()
        own_pg.wait_ready()
        for c in clients:  # each worker reconnects by itself: no call after the restart fails
            r = c.post("/openai/chat/completions", json=CHAT)
            assert r.status_code == 200, r.text
        for c in clients:
            c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(90)
    err = proc.stderr.read() if proc.stderr else ""
    assert code == 0, err
    assert own_pg.password not in "".join(out) + err
    assert "postgresql://veilpix_admin@127.0.0.1" in out[0] + "".join(out)
    with AuditLog(url, key_path=key, readonly=True) as ro:
        result = ro.verify()
        assert ro.counts()["records"] >= 24
    assert result.ok, result.problems
    assert len([w for w in result.writers if w["entries"]]) >= 2
