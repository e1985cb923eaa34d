"""Benchmark: the gateway (``veilpix.proxy.Gateway``) against the same upstream reached directly,
and against mitmproxy in reverse mode, same run.

Setup
-----
Local processes on 127.0.0.1, started by this script and stopped at the end:

* upstream   a minimal ASGI app on uvicorn (one worker) that reads the whole request body and
             answers a small JSON (about 230 B, with ``x-request-id``). It stands in for the
             vendor, so the direct figures are the floor every path shares.
* gateway    ``veilpix proxy --config T --port P --log F --workers 1``, the command users run,
             with a veilpix.toml whose ``[vendors.openai] base_url`` is the upstream, the log
             in a fresh temporary folder (``--dir``: on another filesystem). Every call through
             it is sanitized, checked against the policy and logged: ``begin`` is committed
             durably (an fsync of the WAL) before the call leaves, ``finish`` afterwards
             (committed without an fsync; the next begin's makes it durable). Commits of calls
             in flight together are shared (group commit). That is part of its cost, by design.
* gateway ×N the same with ``--workers N`` (``--workers``, default: one per core; its own log),
             in the throughput runs only.
* mitmproxy  ``mitmdump --mode reverse:http://127.0.0.1:UP --listen-port P -q`` (the peer),
             from its own venv: mitmproxy 12 needs Python >= 3.12, so the script makes a venv
             with pyenv's 3.12+ under ``~/.cache/veilpix-bench/mitmproxy`` (reused on later
             runs) and ``pip install mitmproxy`` into it. When that is impossible the peer is
             reported unavailable, with the reason, and its ratio is not computed.
             ``--no-mitmproxy`` skips it.

Requests (the same bytes on every path, built once):

* small JSON  ``POST /v1/responses`` (direct) or ``/openai/responses`` (gateway), a 160-byte
              text-only Responses API body with ``Authorization: Bearer``.
* JPEG edit   ``POST /v1/images/edits`` / ``/openai/images/edits``, multipart: ``model``,
              ``prompt`` and a ~4 MB JPEG (Pillow, smooth colour plus heavy noise so it does not
              compress, EXIF with camera make, model, serial and a GPS position).

Latency: one ``httpx2.Client`` (keep-alive, one connection per target) sends the requests one
at a time, alternating direct and gateway (and mitmproxy for small JSON), the order of each
round rotated, so drift and noise hit every path alike. After a warm-up, ``--n`` rounds of
small JSON and ``--n-jpeg`` rounds of JPEG edits. Reported: p50 and p99 of the client-side
time from sending to the last response byte; *added* = gateway p50 (p99) minus direct p50
(p99); *paired* = the median of per-round differences. The gateway's own view comes from
its ``/_veilpix/metrics``: the mean time to the upstream's response head over the series.

Sanitize and guard, in process (no HTTP), after the servers are idle: ``veilpix.sanitize`` of
the JPEG, then ``Guard.prepare`` and ``Prepared.finish`` on the same requests with the same
policy and an ``AuditLog`` on the same filesystem: prepare = parse + sanitize + policy +
the durable ``begin``; finish = the durable ``finish``. Medians.

Throughput: small JSON at concurrency ``--concurrency`` (16): 16 kept-alive connections, one
task each, sending ``--n-tput`` requests in total after a warm-up; requests/s = requests /
wall time. The load generator is deliberately lean (asyncio streams on uvloop, the request
bytes built once): a full HTTP client cost more CPU per call than the upstream and so
flattened every ratio. Direct, the gateways and mitmproxy in an order rotated from run to
run, ``--repeat`` runs; the median req/s is reported and each ratio is the median of the
per-run ratios. The client shares the machine's cores with the servers, equally for every
path.

* gateway, PostgreSQL log  the same one-worker gateway with ``--log postgresql://...``: its
             log is a fleet log on a throwaway cluster (tests/pgkit.py, Debian's server,
             loopback, fsync on), in the small-JSON latency rounds only (``--no-postgres``
             skips it). Its log is verified afterwards like the others.

Targets (from the issue): gateway p50 added for small JSON <= 2 ms; gateway throughput
>= 3x mitmproxy's reverse-mode throughput at concurrency 16. Afterwards the gateway's log is
verified (untimed): intact, one record per gateway call.

Run with the project's venv::

    .venv/bin/python bench/proxy.py                 # 2000 + 100 rounds, 3 x 2000 requests
    .venv/bin/python bench/proxy.py --quick         # smoke run (under 20 s without installing)
    .venv/bin/python bench/proxy.py --no-mitmproxy --json > proxy.json
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import io
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from _common import ROOT, SMALL, camera_exif, progress, revision

import veilpix

TARGET_ADDED_MS = 2.0  # small JSON, p50 added by the gateway
TARGET_TPUT = 3.0  # gateway req/s / mitmproxy req/s at concurrency 16
API_KEY = "sk-proj-Zq8dL2mX9vB4nT7wR1yK5hJ3"
JPEG_BYTES = 4_000_000
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "veilpix-bench"
REPLY = json.dumps(
    {
        "id": "resp_0123456789abcdef",
        "object": "response",
        "status": "completed",
        "model": "gpt-4.1-mini",
        "output": [
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "A red bicycle."}],
            }
        ],
        "usage": {"input_tokens": 12, "output_tokens": 5, "total_tokens": 17},
    },
    separators=(",", ":"),
).encode()


# --------------------------------------------------------------------------- servers


async def upstream_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The stand-in vendor: read the body, answer a small JSON at once."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            done = "startup" if message["type"] == "lifespan.startup" else "shutdown"
            await send({"type": f"lifespan.{done}.complete"})
            if done == "shutdown":
                return
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(REPLY)).encode()),
                (b"x-request-id", b"req_bench"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": REPLY})


def serve(port: int) -> None:
    """Child process: run the stand-in vendor on uvicorn until SIGTERM."""
    import uvicorn

    config = uvicorn.Config(
        upstream_app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        workers=1,
    )
    uvicorn.Server(config).run()


def gateway_cmd(
    tmp: Path,
    name: str,
    port: int,
    upstream_port: int,
    workers: int,
    durability: str = "disk",
    log: str | None = None,
) -> list[str]:
    """``veilpix proxy`` as users run it, with a veilpix.toml that names the stand-in vendor
    as OpenAI's base URL, its own log (``[log] durability``), and ``workers`` processes."""
    folder = tmp / name
    folder.mkdir()
    toml = folder / "veilpix.toml"
    toml.write_text(
        f'[log]\ndurability = "{durability}"\n'
        f'[vendors.openai]\nbase_url = "http://127.0.0.1:{upstream_port}/v1"\n'
    )
    exe = Path(sys.executable).with_name("veilpix")
    return [
        str(exe),
        "proxy",
        "--config",
        str(toml),
        "--port",
        str(port),
        "--log",
        log or str(folder / "audit.db"),
        "--workers",
        str(workers),
    ]


def fsync_ms(folder: Path, rounds: int = 200) -> float:
    """The median cost of one 4 KB write + fsync in ``folder``: what a durable begin waits
    for on this disk (the log's per-call cost beyond CPU work, ``[log] durability``)."""
    path = folder / "fsync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    times = []
    try:
        for _ in range(rounds):
            os.write(fd, b"x" * 4096)
            t0 = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times) * 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    port: int
    errfile: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start(
    name: str,
    cmd: list[str],
    port: int,
    tmp: Path,
    ready_path: str,
    env: dict[str, str] | None = None,
) -> Proc:
    err = tmp / f"{name}.err"
    with err.open("wb") as fh:
        popen = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=fh, env={**os.environ, **(env or {})}
        )
    proc = Proc(name, popen, port, err)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            break
        try:
            httpx2.get(f"http://127.0.0.1:{port}{ready_path}", timeout=1)
            return proc
        except httpx2.HTTPError:
            time.sleep(0.05)
    proc.stop()
    tail = err.read_text(errors="replace")[-800:]
    raise RuntimeError(f"{name} did not start: {tail}")


PG_GATEWAY = "gateway, PostgreSQL log"
_PG: dict[str, Any] = {}  # the cluster, its URL and the fleet's key file, while running


def start_pg_gateway(
    tmp: Path, upstream_port: int, durability: str, procs: list[Proc], bases: dict[str, str]
) -> str:
    """A second one-worker gateway whose log is a fleet log on a throwaway PostgreSQL on
    loopback (tests/pgkit.py); what happened, for the report."""
    sys.path.insert(0, str(ROOT / "tests"))
    import pgkit

    reason = pgkit.skip_reason()
    if reason:
        return f"unavailable: {reason}"
    cluster = pgkit.Cluster().start()
    url = cluster.database()
    key = tmp / "fleet.key"
    _PG.update(cluster=cluster, url=url, key=key)
    port = free_port()
    cmd = gateway_cmd(tmp, "gateway-pg", port, upstream_port, 1, durability, log=url)
    env = {"VEILPIX_LOG_KEY": str(key)}
    procs.append(
        start(
            PG_GATEWAY.replace(", ", "-").replace(" ", "-"), cmd, port, tmp, "/_veilpix/health", env
        )
    )
    bases[PG_GATEWAY] = f"http://127.0.0.1:{port}/openai"
    return f"PostgreSQL {cluster.sql('SHOW server_version')[0][0]} on loopback, fsync on"


def check_pg_log(tmp: Path, expected: int) -> str:
    """Verify the PostgreSQL-logged gateway's log (untimed), then drop the cluster."""
    del tmp
    cluster = _PG.pop("cluster")
    try:
        with veilpix.AuditLog(_PG["url"], key_path=_PG["key"], readonly=True) as log:
            res = log.verify()
    finally:
        cluster.destroy()
    return (
        f"{PG_GATEWAY}: intact, {res.records:,} records, {res.pending} pending "
        f"(expected {expected:,} from the small-JSON latency rounds)"
        if res.intact
        else f"{PG_GATEWAY}: NOT intact"
    )


def upstream_cmd(port: int) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve",
        "upstream",
        "--port",
        str(port),
    ]


# --------------------------------------------------------------------------- mitmproxy


def find_mitmdump(install: bool) -> tuple[str | None, str]:
    """(path to mitmdump, version or the reason it is unavailable)."""
    venv = CACHE / "mitmproxy"
    exe = venv / "bin" / "mitmdump"
    if not exe.exists() and install:
        root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
        pythons = sorted(
            (
                p
                for p in glob.glob(f"{root}/versions/3.*/bin/python3")
                if tuple(int(x) for x in Path(p).parts[-3].split(".")[:2]) >= (3, 12)
            ),
            key=lambda p: [int(x) for x in Path(p).parts[-3].split(".") if x.isdigit()],
        )
        if not pythons:
            return None, f"no Python >= 3.12 under {root}/versions (mitmproxy 12 needs one)"
        progress(f"installing mitmproxy into {venv} (once) ...")
        shutil.rmtree(venv, ignore_errors=True)
        steps = [
            [pythons[0], "-m", "venv", str(venv)],
            [str(venv / "bin" / "pip"), "install", "-q", "mitmproxy"],
        ]
        for cmd in steps:
            try:
                done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return None, f"{' '.join(cmd[:3])}: {exc}"
            if done.returncode:
                shutil.rmtree(venv, ignore_errors=True)
                last = (done.stderr.strip().splitlines() or ["?"])[-1]
                return None, f"{' '.join(cmd[:4])} failed: {last}"
    if not exe.exists():
        return None, "not installed (--no-mitmproxy)" if not install else "mitmdump missing"
    try:
        out = subprocess.run(
            [str(exe), "--version"], check=False, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"mitmdump --version: {exc}"
    first = (out.stdout.splitlines() or ["?"])[0].replace("Mitmproxy:", "").strip()
    return str(exe), f"mitmproxy {first}"


# --------------------------------------------------------------------------- inputs


def make_jpeg(target: int) -> bytes:
    """A ~``target``-byte photo-like JPEG: smooth colour under heavy sensor-like noise (so it
    does not compress away), with EXIF make, model, serial, date and a GPS position."""
    import numpy as np
    from PIL import Image

    exif = camera_exif()
    rng = np.random.default_rng(7)

    def encode(width: int, height: int) -> bytes:
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        rgb = np.stack(
            [
                120 + 90 * np.sin(x / width * 3.1) * np.cos(y / height * 2.3),
                110 + 80 * np.cos(x / width * 4.7 + y / height * 1.9),
                100 + 70 * np.sin((x + y) / (width + height) * 6.0),
            ],
            axis=-1,
        )
        rgb += rng.normal(0, 28, rgb.shape)
        out = io.BytesIO()
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB").save(
            out, "JPEG", quality=90, exif=exif
        )
        return out.getvalue()

    width, height = 1200, 900
    data = encode(width, height)
    for _ in range(3):
        if abs(len(data) - target) < target * 0.04:
            break
        scale = (target / len(data)) ** 0.5
        width, height = int(width * scale) // 16 * 16, int(height * scale) // 16 * 16
        data = encode(width, height)
    return data


def multipart(photo: bytes) -> tuple[bytes, str]:
    boundary = "----veilpixbench7MA4YWxkTrZu0gW"
    parts = []
    for name, value in (("model", "gpt-image-1"), ("prompt", "put a red hat on the person")):
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
        f'filename="photo.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
        + photo
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@dataclass(frozen=True)
class Call:
    path: str  # after the vendor base ("/responses")
    body: bytes
    content_type: str


# --------------------------------------------------------------------------- latency


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class Series:
    call: str
    rounds: int
    targets: list[str]
    ms: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    gateway_upstream_ms: float | None = None  # the gateway's own view, from its metrics

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "call": self.call,
            "rounds": self.rounds,
            "errors": self.errors,
            "gateway_upstream_mean_ms": self.gateway_upstream_ms,
        }
        for t in self.targets:
            v = self.ms[t]
            out[t] = {"p50_ms": pct(v, 0.5), "p99_ms": pct(v, 0.99), "mean_ms": statistics.mean(v)}
        for t in self.targets:
            if t == "direct":
                continue
            paired = [a - b for a, b in zip(self.ms[t], self.ms["direct"], strict=True)]
            out[t]["added_p50_ms"] = out[t]["p50_ms"] - out["direct"]["p50_ms"]
            out[t]["added_p99_ms"] = out[t]["p99_ms"] - out["direct"]["p99_ms"]
            out[t]["paired_median_ms"] = statistics.median(paired)
        return out


def gateway_metrics(port: int) -> tuple[float, int]:
    """(sum of upstream seconds, count) from the gateway's Prometheus text."""
    text = httpx2.get(f"http://127.0.0.1:{port}/_veilpix/metrics").text
    total, count = 0.0, 0
    for line in text.splitlines():
        if line.startswith("veilpix_upstream_seconds_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("veilpix_upstream_seconds_count"):
            count += int(line.rsplit(" ", 1)[1])
    return total, count


def latency(
    name: str, call: Call, bases: dict[str, str], rounds: int, warmup: int, gw_port: int
) -> Series:
    targets = list(bases)
    series = Series(name, rounds, targets, {t: [] for t in targets}, {t: 0 for t in targets})
    headers = {"authorization": f"Bearer {API_KEY}", "content-type": call.content_type}
    with httpx2.Client(timeout=60) as client:

        def once(target: str) -> float:
            t0 = time.perf_counter()
            try:
                r = client.post(bases[target] + call.path, content=call.body, headers=headers)
                ok = r.status_code == 200
            except httpx2.HTTPError as exc:  # counted, shown, and the round goes on
                ok = False
                print(f"{name} via {target}: {type(exc).__name__}: {exc}", file=sys.stderr)
            ms = (time.perf_counter() - t0) * 1000
            if not ok:
                series.errors[target] += 1
            return ms

        for _ in range(warmup):
            for t in targets:
                once(t)
        before = gateway_metrics(gw_port)
        for i in range(rounds):
            if i % 50 == 0:
                progress(f"latency {name}: round {i}/{rounds}")
            k = i % len(targets)
            for t in targets[k:] + targets[:k]:
                series.ms[t].append(once(t))
        after = gateway_metrics(gw_port)
    if after[1] > before[1]:
        series.gateway_upstream_ms = (after[0] - before[0]) / (after[1] - before[1]) * 1000
    return series


# --------------------------------------------------------------------------- throughput


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    """Send one pre-built request on a kept-alive connection and read the whole response
    (Content-Length or chunked); return its status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = {
        k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
    }
    if "content-length" in fields:
        await reader.readexactly(int(fields["content-length"]))
    elif fields.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def blast(url: str, body: bytes, n: int, concurrency: int) -> tuple[float, int]:
    """``n`` POSTs of ``body`` over ``concurrency`` kept-alive connections, one task each.

    A load generator must cost far less than what it measures: the request bytes are built
    once and the responses are read with asyncio streams, not a full HTTP client (which
    cost more CPU per call than the upstream itself and so compressed every ratio)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"POST {parts.path} HTTP/1.1\r\nhost: {host}:{port}\r\n"
        f"authorization: Bearer {API_KEY}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    conns = [await asyncio.open_connection(host, port) for _ in range(concurrency)]
    errors = 0

    async def worker(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], count: int) -> None:
        nonlocal errors
        for _ in range(count):
            if await _exchange(*conn, request) != 200:
                errors += 1

    try:
        await asyncio.gather(*(worker(c, 4) for c in conns))  # warm-up
        errors = 0
        per = [n // concurrency + (1 if k < n % concurrency else 0) for k in range(concurrency)]
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c, k) for c, k in zip(conns, per, strict=True)))
        return time.perf_counter() - t0, errors
    finally:
        for _, writer in conns:
            writer.close()


def run_fast(coro: Any) -> Any:
    """``asyncio.run`` on uvloop when it is installed (a cheaper client), else the default."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


@dataclass
class Tput:
    target: str
    runs_rps: list[float] = field(default_factory=list)
    errors: int = 0
    rps: float = 0.0


def throughput(
    bases: dict[str, str], n: int, concurrency: int, repeat: int
) -> tuple[dict[str, Tput], dict[str, list[float]]]:
    """req/s per path; and per gateway path, the per-run ratios to mitmproxy."""
    targets = list(bases)
    out = {t: Tput(t) for t in targets}
    ratios: dict[str, list[float]] = {t: [] for t in targets if t.startswith("gateway")}
    for run in range(repeat):
        k = run % len(targets)
        for t in targets[k:] + targets[:k]:
            progress(f"throughput run {run + 1}/{repeat}: {t}")
            seconds, errors = run_fast(blast(bases[t] + "/responses", SMALL, n, concurrency))
            out[t].runs_rps.append(n / seconds)
            out[t].errors += errors
        if "mitmproxy" in out:
            for t, values in ratios.items():
                values.append(out[t].runs_rps[-1] / out["mitmproxy"].runs_rps[-1])
    for t in out.values():
        t.rps = statistics.median(t.runs_rps)
    return out, ratios if "mitmproxy" in out else {}


# --------------------------------------------------------------------------- in process


def in_process(
    tmp: Path, upstream_port: int, calls: dict[str, Call], photo: bytes, n_small: int, n_jpeg: int
) -> dict[str, Any]:
    """Median ms of veilpix.sanitize(photo) and of Guard.prepare / Prepared.finish per call."""
    from veilpix import AuditLog, Context, Guard, Outbound, Policy  # public: any revision

    res: dict[str, Any] = {}
    times = []
    for _ in range(max(n_jpeg, 3)):
        t0 = time.perf_counter()
        clean = veilpix.sanitize(photo)
        times.append((time.perf_counter() - t0) * 1000)
    res["sanitize_ms"] = statistics.median(times)
    res["sanitized_bytes"] = len(clean.data)
    host = f"127.0.0.1:{upstream_port}"
    with AuditLog(tmp / "inproc" / "audit.db") as log:
        guard = Guard(Policy(vendor_hosts={host: "openai"}), log)
        ctx = Context(door="gateway", client="127.0.0.1")
        for name, call in calls.items():
            prep, fin = [], []
            headers = [("authorization", f"Bearer {API_KEY}"), ("content-type", call.content_type)]
            for i in range((n_small if name == "small JSON" else n_jpeg) + 2):
                progress(f"in process: {name} {i}")
                out = Outbound("POST", f"http://{host}/v1{call.path}", list(headers), call.body)
                t0 = time.perf_counter()
                prepared = guard.prepare(out, context=ctx)
                t1 = time.perf_counter()
                prepared.finish(status=200, vendor_request_id="req_bench")
                t2 = time.perf_counter()
                if i >= 2:  # the first two warm up imports and caches
                    prep.append((t1 - t0) * 1000)
                    fin.append((t2 - t1) * 1000)
            res[name] = {"prepare_ms": statistics.median(prep), "finish_ms": statistics.median(fin)}
    return res


# --------------------------------------------------------------------------- report


def print_report(doc: dict[str, Any]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
    con.print(
        f"veilpix {doc['veilpix']}, Python {doc['python']}, {doc['cores']} cores, uvicorn "
        f"{doc['uvicorn']} (one worker each), peer: {doc['mitmproxy']}\n"
        f"log in {doc['dir']} (log durability {doc['durability']!r}; a 4 KB fsync there "
        f"takes {doc['fsync_ms_p50']:.2f} ms p50); JPEG {doc['jpeg']['bytes']:,} B "
        f"({doc['jpeg']['width']}x{doc['jpeg']['height']}, EXIF+GPS), sanitized to "
        f"{doc['in_process']['sanitized_bytes']:,} B"
    )
    lt = Table(
        box=box.SIMPLE_HEAD, title="Latency, one request at a time (ms)", title_justify="left"
    )
    for col in (
        "call",
        "path",
        "rounds",
        "p50",
        "p99",
        "added p50",
        "added p99",
        "paired Δ",
        "errors",
    ):
        lt.add_column(col, justify="left" if col in ("call", "path") else "right")
    for s in doc["latency"]:
        for t in ("direct", "gateway", PG_GATEWAY, "mitmproxy"):
            if t not in s:
                continue
            r = s[t]
            lt.add_row(
                s["call"] if t == "direct" else "",
                t,
                str(s["rounds"]) if t == "direct" else "",
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                f"{r['added_p50_ms']:+.2f}" if "added_p50_ms" in r else "",
                f"{r['added_p99_ms']:+.2f}" if "added_p99_ms" in r else "",
                f"{r['paired_median_ms']:+.2f}" if "paired_median_ms" in r else "",
                str(s["errors"][t]),
            )
        lt.add_section()
    con.print()
    con.print(lt)
    con.print(
        "  added = this path's percentile minus direct's; paired Δ = median of per-round "
        "differences (rounds alternate the paths).\n  Through the gateway every call is "
        "sanitized, checked and logged (begin durable before sending, then finish): part of its cost.\n"
        f"  {PG_GATEWAY}: a second one-worker gateway whose log is a fleet log on a throwaway "
        "PostgreSQL on loopback (fsync on)."
    )
    ip = doc["in_process"]
    bt = Table(
        box=box.SIMPLE_HEAD,
        title="Where the gateway's time goes (ms, medians)",
        title_justify="left",
    )
    for col in (
        "call",
        "added p50 (HTTP)",
        "guard.prepare",
        "of it sanitize",
        "finish",
        "guard total",
        "rest (hop, ASGI, relay)",
        "gateway→upstream mean",
    ):
        bt.add_column(col, justify="left" if col == "call" else "right")
    for s in doc["latency"]:
        g = ip[s["call"]]
        total = g["prepare_ms"] + g["finish_ms"]
        added = s["gateway"]["added_p50_ms"]
        bt.add_row(
            s["call"],
            f"{added:.2f}",
            f"{g['prepare_ms']:.2f}",
            f"{ip['sanitize_ms']:.2f}" if s["call"] == "JPEG edit" else "-",
            f"{g['finish_ms']:.2f}",
            f"{total:.2f}",
            f"{added - total:.2f}",
            f"{s['gateway_upstream_mean_ms']:.2f}" if s["gateway_upstream_mean_ms"] else "?",
        )
    con.print()
    con.print(bt)
    con.print(
        "  guard.prepare (parse, sanitize, policy, durable begin) and finish (its commit) "
        "timed in process on an idle machine;\n  sanitize = veilpix.sanitize(jpeg) alone. "
        "gateway→upstream = the gateway's own metrics: time to the upstream's response head."
    )
    tt = Table(
        box=box.SIMPLE_HEAD,
        title=f"Throughput, small JSON, concurrency "
        f"{doc['concurrency']}, {doc['n_tput']} requests a run",
        title_justify="left",
    )
    for col in ("path", "req/s (median)", "runs", "gateway ÷ this", "errors"):
        tt.add_column(col, justify="left" if col == "path" else "right")
    tp = doc["throughput"]
    for t, r in tp.items():
        ratio = tp["gateway"]["rps"] / r["rps"]
        tt.add_row(
            t,
            f"{r['rps']:,.0f}",
            " ".join(f"{x:,.0f}" for x in r["runs_rps"]),
            f"{ratio:.2f}×",
            str(r["errors"]),
        )
    con.print()
    con.print(tt)
    for line in doc["log_check"]:
        con.print(f"  log afterwards, {line}")
    con.print()
    for line in doc["targets"]:
        con.print(line.replace("PASS", "[green]PASS[/]").replace("MISS", "[red]MISS[/]"))
    con.print(f"\nbench took {doc['bench_seconds']:.1f} s")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n", type=int, default=2000, help="small-JSON latency rounds (2000)")
    ap.add_argument("--n-jpeg", type=int, default=100, help="JPEG-edit latency rounds (100)")
    ap.add_argument("--n-tput", type=int, default=2000, help="requests per throughput run (2000)")
    ap.add_argument("--concurrency", type=int, default=16, help="throughput concurrency (16)")
    ap.add_argument("--repeat", type=int, default=3, help="throughput runs (median; 3)")
    ap.add_argument("--dir", type=Path, help="put the gateway's log here (default: temp folder)")
    ap.add_argument("--no-mitmproxy", action="store_true", help="skip the mitmproxy peer")
    ap.add_argument(
        "--no-postgres",
        action="store_true",
        help="skip the gateway whose log is on PostgreSQL (a throwaway cluster on loopback)",
    )
    ap.add_argument(
        "--durability",
        choices=("disk", "os"),
        default="disk",
        help="the gateway log's [log] durability: disk (default: an fsync per call) or os",
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 300/15 rounds, 1 x 400")
    ap.add_argument("--json", action="store_true", help="print machine-readable results only")
    ap.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="workers of the second gateway in the throughput runs (cores: "
        f"{os.cpu_count()}; 1 = no second gateway)",
    )
    ap.add_argument("--serve", choices=("upstream",), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.port)
        return 0
    if args.quick:
        args.n, args.n_jpeg, args.n_tput, args.repeat = 300, 15, 400, 1
    if min(args.n, args.n_jpeg) < 2 or min(args.repeat, args.concurrency) < 1:
        ap.error("--n and --n-jpeg must be at least 2, --repeat and --concurrency at least 1")
    if args.n_tput < args.concurrency:
        ap.error("--n-tput must be at least --concurrency")
    if args.dir is not None and not args.dir.is_dir():
        ap.error(f"--dir {args.dir}: not a folder")
    if not 1 <= args.workers <= 64:
        ap.error("--workers must be from 1 to 64")

    started = time.perf_counter()
    mitm_exe, mitm_note = (None, "skipped (--no-mitmproxy)")
    if not args.no_mitmproxy:
        mitm_exe, mitm_note = find_mitmdump(install=True)
        if mitm_exe is None:
            mitm_note = f"unavailable: {mitm_note}"
    progress("building the JPEG")
    photo = make_jpeg(JPEG_BYTES)
    from PIL import Image

    width, height = Image.open(io.BytesIO(photo)).size
    form, form_type = multipart(photo)
    calls = {
        "small JSON": Call("/responses", SMALL, "application/json"),
        "JPEG edit": Call("/images/edits", form, form_type),
    }

    tmp = Path(tempfile.mkdtemp(prefix="veilpix-bench-proxy-", dir=args.dir))
    disk_fsync = fsync_ms(tmp)
    procs: list[Proc] = []
    try:
        progress("starting the servers")
        up_port = free_port()
        up = start("upstream", upstream_cmd(up_port), up_port, tmp, "/")
        procs.append(up)
        gw_port = free_port()
        procs.append(
            start(
                "gateway",
                gateway_cmd(tmp, "gateway", gw_port, up.port, 1, args.durability),
                gw_port,
                tmp,
                "/_veilpix/health",
            )
        )
        bases = {
            "direct": f"http://127.0.0.1:{up.port}/v1",
            "gateway": f"http://127.0.0.1:{gw_port}/openai",
        }
        many = f"gateway ×{args.workers}"
        if args.workers > 1:
            port = free_port()
            cmd = gateway_cmd(tmp, "gateway-many", port, up.port, args.workers, args.durability)
            procs.append(start(many, cmd, port, tmp, "/_veilpix/health"))
            bases[many] = f"http://127.0.0.1:{port}/openai"
        pg_note = "skipped (--no-postgres)"
        if not args.no_postgres:
            pg_note = start_pg_gateway(tmp, up.port, args.durability, procs, bases)
        if mitm_exe:
            mp = free_port()
            cmd = [
                mitm_exe,
                "--mode",
                f"reverse:http://127.0.0.1:{up.port}",
                "--listen-host",
                "127.0.0.1",
                "--listen-port",
                str(mp),
                "-q",
            ]
            try:
                procs.append(start("mitmproxy", cmd, mp, tmp, "/v1/ready"))
                bases["mitmproxy"] = f"http://127.0.0.1:{mp}/v1"
            except RuntimeError as exc:
                mitm_note = f"unavailable: {exc}"
        one = {k: v for k, v in bases.items() if k != many}
        throughput_bases = {k: v for k, v in bases.items() if k != PG_GATEWAY}
        lat = [
            latency("small JSON", calls["small JSON"], one, args.n, 30, gw_port),
            latency(
                "JPEG edit",
                calls["JPEG edit"],
                {k: bases[k] for k in ("direct", "gateway")},
                args.n_jpeg,
                3,
                gw_port,
            ),
        ]
        tput, ratios = throughput(throughput_bases, args.n_tput, args.concurrency, args.repeat)
        # every gateway call, warm-ups included, must be in its log
        per_tput = args.repeat * (args.n_tput + 4 * args.concurrency)
        expected = {"gateway": (30 + args.n) + (3 + args.n_jpeg) + per_tput}
        if many in bases:
            expected["gateway-many"] = per_tput
        for p in procs:
            p.stop()
        log_check = []
        if PG_GATEWAY in bases:
            log_check.append(check_pg_log(tmp, 30 + args.n))
        for name, calls_made in expected.items():
            res = veilpix.verify_log(tmp / name / "audit.db")
            log_check.append(
                f"{name}: intact, {res.records:,} records, {res.pending} pending "
                f"(expected {calls_made:,})"
                if res.intact
                else f"{name}: NOT intact"
            )
        up_only = start("upstream", upstream_cmd(up.port), up.port, tmp, "/")
        procs.append(up_only)
        inproc = in_process(tmp, up.port, calls, photo, min(args.n, 300), max(args.n_jpeg // 5, 5))
        progress("")
    finally:
        for p in procs:
            p.stop()
        if "cluster" in _PG:
            _PG.pop("cluster").destroy()
        shutil.rmtree(tmp, ignore_errors=True)

    small = lat[0].summary()
    added = small["gateway"]["added_p50_ms"]
    targets = [
        f"target small JSON: gateway adds {added:.2f} ms at p50 (p99 "
        f"{small['gateway']['added_p99_ms']:+.2f} ms) ≤ {TARGET_ADDED_MS:.0f} ms: "
        + ("PASS" if added <= TARGET_ADDED_MS else "MISS")
    ]
    for name, values in ratios.items():
        ratio = statistics.median(values)
        targets.append(
            f"target throughput @ {args.concurrency}: {name} {ratio:.2f}× mitmproxy reverse mode "
            f"(median of {len(values)} runs, range {min(values):.2f}–{max(values):.2f}) ≥ "
            f"{TARGET_TPUT:.0f}×: " + ("PASS" if ratio >= TARGET_TPUT else "MISS")
        )
    if not ratios:
        targets.append(f"target throughput vs mitmproxy: not measured, the peer is {mitm_note}")
    if PG_GATEWAY in small:
        pg = small[PG_GATEWAY]
        targets.append(
            f"gateway with its log on PostgreSQL (loopback): adds {pg['added_p50_ms']:.2f} ms at "
            f"p50 (p99 {pg['added_p99_ms']:+.2f} ms); with the log file: {added:.2f} ms"
        )
    else:
        targets.append(f"gateway with its log on PostgreSQL: {pg_note}")
    import uvicorn

    doc = {
        "veilpix": f"{veilpix.__version__} ({revision('proxy', 'sdk')})",
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "workers": args.workers,
        "durability": args.durability,
        "fsync_ms_p50": round(disk_fsync, 3),
        "uvicorn": uvicorn.__version__,
        "mitmproxy": mitm_note,
        "postgres": pg_note,
        "dir": str(args.dir.resolve() if args.dir else Path(tempfile.gettempdir())),
        "jpeg": {"bytes": len(photo), "width": width, "height": height},
        "concurrency": args.concurrency,
        "n_tput": args.n_tput,
        "repeat": args.repeat,
        "latency": [s.summary() for s in lat],
        "in_process": inproc,
        "throughput": {t: asdict(v) for t, v in tput.items()},
        "throughput_ratios_vs_mitmproxy": ratios,
        "log_check": log_check,
        "targets": targets,
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(doc, indent=1, ensure_ascii=False))
    else:
        print_report(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
