"""``veilpix proxy --workers N``: a supervisor process binds the port once per worker
(SO_REUSEPORT), spawns the workers, shares one metrics table in shared memory and one transfer
log, restarts a worker that dies and stops them all on SIGTERM. Run as the real command, as a
subprocess, against a loopback fake vendor. Which worker holds which connection is read from
/proc (Linux), not from anything the proxy says about itself."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import pytest

pytest.importorskip("uvicorn")

from servers import FakeVendor, Server
from veilpix import ConfigError, load_config, verify_log
from veilpix.cli._main import main

linux_only = pytest.mark.skipif(
    sys.platform != "linux" or not Path("/proc/self/fd").is_dir(), reason="reads /proc"
)
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "VEILPIX_LOG",
        "VEILPIX_CONFIG",
        "VEILPIX_PROXY_TOKEN",
        "VEILPIX_PROXY_PORT",
        "VEILPIX_PROXY_HOST",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def upstream() -> Iterator[tuple[FakeVendor, Server]]:
    fake = FakeVendor()
    with Server(fake) as server:
        yield fake, server


# -- looking at processes from outside -----------------------------------------------------------


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def established_inodes(port: int) -> set[str]:
    """Socket inodes of the server side of established TCP connections on ``port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local_port = int(cols[1].rsplit(":", 1)[1], 16)
            if local_port == port and cols[3] == "01":  # ESTABLISHED
                inodes.add(cols[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    out: set[str] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if m := re.fullmatch(r"socket:\[(\d+)\]", target):
            out.add(m.group(1))
    return out


def shm_segments(pid: int) -> set[str]:
    """The POSIX shared-memory segments ``pid`` has mapped."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return set()
    return set(re.findall(r"/dev/shm/(psm_\w+)", maps))


def slot_requests(table: bytes, slots: int) -> list[int]:
    """Requests counted in each worker's row of the metrics table."""
    import numpy as np

    from veilpix.proxy._metrics import Metrics

    layout = Metrics()
    rows = np.frombuffer(table[: Metrics.size(slots)], dtype=np.int64).reshape(slots, -1)
    return [int(n) for n in rows[:, layout._req].sum(axis=1)]


# -- the command ---------------------------------------------------------------------------------


@dataclass
class Proxy:
    proc: subprocess.Popen[str]
    url: str
    head: list[str]
    stderr: list[str] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def metrics(self) -> str:
        return httpx2.get(f"{self.url}/_veilpix/metrics", timeout=20).text

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=90)


def sent(text: str) -> int:
    m = re.search(r'^veilpix_requests_total\{vendor="openai",outcome="sent"\} (\d+)$', text, re.M)
    return int(m.group(1)) if m else 0


@pytest.fixture
def start(tmp_path: Path, upstream: tuple[FakeVendor, Server]) -> Iterator[Proxy]:
    _, vendor = upstream
    cfg = tmp_path / "veilpix.toml"
    cfg.write_text(f'[vendors.openai]\nbase_url = "{vendor.url}/v1"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEILPIX_")}
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
            str(tmp_path / "audit.db"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        assert first.startswith("veilpix proxy listening on http://127.0.0.1:"), (
            first + proc.stderr.read()
        )
        head = [first, proc.stdout.readline()]
        running = Proxy(proc, first.split()[-1], head)
        pumps = [
            threading.Thread(target=lambda s=s, o=o: o.extend(s), daemon=True)
            for s, o in ((proc.stdout, running.stdout), (proc.stderr, running.stderr))
        ]
        for pump in pumps:
            pump.start()
        yield running
        if proc.poll() is None:
            running.stop()
        for pump in pumps:
            pump.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@linux_only
def test_two_workers_share_the_port_the_log_and_the_metrics(
    start: Proxy, upstream: tuple[FakeVendor, Server], tmp_path: Path
) -> None:
    fake, _ = upstream
    proxy = start
    assert proxy.head[1].strip() == "workers: 2"
    segments = shm_segments(proxy.proc.pid)
    assert len(segments) == 1, segments  # the supervisor's metrics table
    (segment,) = segments
    clients = [httpx2.Client(base_url=proxy.url, timeout=30) for _ in range(20)]
    try:
        for client in clients:  # twenty connections, one call each, all kept open
            got = client.post("/openai/chat/completions", json=CHAT)
            assert got.status_code == 200 and got.json() == {"ok": True}
        # Who holds which connection: the kernel spread them over both workers' sockets.
        conns = established_inodes(proxy.port)
        assert len(conns) >= 20
        workers = [p for p in children(proxy.proc.pid) if segment in shm_segments(p)]
        assert len(workers) == 2, workers
        held = {pid: len(socket_inodes(pid) & conns) for pid in workers}
        assert sum(held.values()) == 20 and all(n > 0 for n in held.values()), held
        # Whichever worker answers the scrape reports the whole proxy.
        for client in clients:
            assert sent(client.get("/_veilpix/metrics").text) == 20
    finally:
        for client in clients:
            client.close()
    assert sent(proxy.metrics()) == 20
    # Each worker counted in its own row of the shared table (read as a file: attaching
    # through multiprocessing would tie the segment to this process's resource tracker).
    rows = slot_requests(Path(f"/dev/shm/{segment}").read_bytes(), 2)
    assert sum(rows) == 20 and sorted(rows) == sorted(held.values()), (rows, held)
    assert proxy.stop() == 0, "".join(proxy.stderr)
    assert "stopped" in "".join(proxy.stdout)
    assert len(fake.seen) == 20
    result = verify_log(tmp_path / "audit.db")
    assert result.ok, result.problems
    assert result.records == 20 and result.pending == 0
    assert not Path(f"/dev/shm/{segment}").exists()  # unlinked on the way out
    assert "Traceback" not in "".join(proxy.stderr) and "leaked" not in "".join(proxy.stderr)


@linux_only
def test_a_worker_that_dies_is_started_again_and_the_counts_survive(
    start: Proxy, upstream: tuple[FakeVendor, Server], tmp_path: Path
) -> None:
    fake, _ = upstream
    proxy = start
    (segment,) = shm_segments(proxy.proc.pid)
    for _ in range(6):
        with httpx2.Client(base_url=proxy.url, timeout=30) as client:
            assert client.post("/openai/chat/completions", json=CHAT).status_code == 200
    workers = sorted(p for p in children(proxy.proc.pid) if segment in shm_segments(p))
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while not any("starting it again" in line for line in proxy.stderr):
        assert time.monotonic() < deadline and proxy.proc.poll() is None, proxy.stderr
        time.sleep(0.02)
    for _ in range(6):  # some land on the new worker's slot, queued until it accepts
        with httpx2.Client(base_url=proxy.url, timeout=60) as client:
            assert client.post("/openai/chat/completions", json=CHAT).status_code == 200
    assert sent(proxy.metrics()) == 12  # the dead worker's row was kept
    while True:  # the new worker maps the table once its imports are done
        now = sorted(p for p in children(proxy.proc.pid) if segment in shm_segments(p))
        if len(now) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(now) == 2 and workers[0] not in now and workers[1] in now
    assert proxy.stop() == 0
    assert len(fake.seen) == 12
    result = verify_log(tmp_path / "audit.db")
    assert result.ok and result.records == 12 and result.pending == 0
    assert not Path(f"/dev/shm/{segment}").exists()


# -- wrong numbers -------------------------------------------------------------------------------


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """What ``veilpix proxy`` would have served with (the server itself is not started, so a
    count that wrongly passes the checks cannot leave a proxy running)."""
    calls: list[dict[str, object]] = []

    def fake_serve(config: object, host: object, port: object, **kwargs: object) -> None:
        calls.append({"config": config, "port": port, **kwargs})

    monkeypatch.setattr("veilpix.cli._proxy.serve", fake_serve)
    return calls


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("-1", "from 1 to 64"),
        ("65", "from 1 to 64"),
        ("x", "expected a number of workers"),
        ("1.5", "expected a number of workers"),
    ],
)
def test_bad_worker_counts_on_the_command_line(
    value: str, says: str, capsys: pytest.CaptureFixture[str], served: list[dict[str, object]]
) -> None:
    code, err = run(capsys, "proxy", "--workers", value, "--port", "0")
    assert code == 2 and says in err and "--workers" in err and served == []


def test_good_worker_counts_on_the_command_line(
    capsys: pytest.CaptureFixture[str], served: list[dict[str, object]]
) -> None:
    for value in ("0", "2", "64"):
        assert run(capsys, "proxy", "--workers", value, "--port", "0")[0] == 0
    assert run(capsys, "proxy", "--port", "0")[0] == 0
    assert [c["workers"] for c in served] == [0, 2, 64, None]  # None: [proxy] workers decides


@pytest.mark.parametrize("value", ["99", "-1", "65", '"2"'])
def test_bad_worker_counts_in_the_config(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], served: list[dict[str, object]]
) -> None:
    cfg = tmp_path / "veilpix.toml"
    cfg.write_text(f"[proxy]\nworkers = {value}\n")
    with pytest.raises(ConfigError, match=r"proxy\.workers"):
        load_config(cfg)
    code, err = run(capsys, "config", "check", "--config", str(cfg))
    assert code == 2 and "proxy.workers" in err
    code, err = run(capsys, "proxy", "--config", str(cfg), "--port", "0")
    assert code == 2 and "proxy.workers" in err and served == []


@pytest.mark.parametrize("value", ["0", "1", "64"])
def test_good_worker_counts_in_the_config(value: str, tmp_path: Path) -> None:
    cfg = tmp_path / "veilpix.toml"
    cfg.write_text(f"[proxy]\nworkers = {value}\n")
    assert load_config(cfg).proxy.workers == int(value)


def test_bind_all_shares_one_port() -> None:
    import socket

    from veilpix.proxy._serve import _bind_all

    socks = _bind_all("127.0.0.1", 0, 3)
    try:
        ports = {s.getsockname()[1] for s in socks}
        assert len(socks) == 3 and len(ports) == 1 and 0 not in ports
        if sys.platform == "linux":
            assert len({id(s) for s in socks}) == 3  # one socket each (SO_REUSEPORT)
    finally:
        for s in {id(s): s for s in socks}.values():
            s.close()
    with socket.socket() as plain:  # a port another program listens on is refused
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        with pytest.raises(ConfigError, match="could not start"):
            _bind_all("127.0.0.1", plain.getsockname()[1], 2)


def test_a_second_worker_group_on_the_same_port_is_refused() -> None:
    """SO_REUSEPORT must not let a second `veilpix proxy --workers N` (same user) join the port
    of a running one: the kernel would split connections between two proxies."""
    from veilpix.proxy._serve import _bind_all

    first = _bind_all("127.0.0.1", 0, 2)
    try:
        with pytest.raises(ConfigError, match="could not start"):
            second = _bind_all("127.0.0.1", first[0].getsockname()[1], 2)
            for s in second:
                s.close()
    finally:
        for s in first:
            s.close()
