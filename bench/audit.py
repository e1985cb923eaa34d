"""Benchmark: the transfer log (``veilpix.AuditLog``) against raw SQLite, same durability, same run.

What is measured
----------------
Writes: one *pair* is what a door does for one outbound call, ``pending = log.begin(transfer)``
then ``pending.finish(status=200, ...)``. veilpix commits twice per pair by design: the
``begin`` is made durable before a byte leaves (write-ahead: ``synchronous=FULL``, one fsync
of the WAL), the ``finish`` afterwards without an fsync (``synchronous=NORMAL``; the next
begin's fsync makes it durable). Calls from several threads at once share commits (group
commit). The peers are plain ``sqlite3`` on a fresh file with the same durability settings
(``journal_mode=WAL``, ``BEGIN IMMEDIATE``, busy timeout 30 s; veilpix's
``secure_delete=ON`` only matters when rows are deleted):

* raw 2 commits/pair   INSERT the begin row + COMMIT (FULL), then INSERT the finish row +
                       COMMIT (NORMAL).
                       The rows are the very JSON texts veilpix stored for the same transfer
                       (about 1.8 kB and 145 B), in a table with an integer key and no other
                       index. This is the baseline every ratio is computed against: the same
                       commits, with the same durability, per pair as veilpix.
* raw 1 commit/insert  one INSERT of the begin row per transaction, for context only (the
                       cost of one durable commit on this disk); it is never a ratio's peer.

The veilpix series run a realistic transfer (an image edit to an AI vendor: one JPEG,
prompt, credential-bearing URL and headers, privacy controls), cycling through 32 variants:

* veilpix              no subject: image and prompt fingerprints stored in clear (keyed HMAC).
* veilpix + subject    ``subject_ref`` set (32 subjects): the subject-linked fields are sealed
                       (AES-GCM) under a per-subject key looked up (or created) in the log.

The image (by default a generated 1536x1024 JPEG with EXIF and GPS, about 330 kB; ``--image
FILE`` for another) is sanitized once, before any timing: the benchmark measures the log, not
the image pipeline. Fingerprinting is the log's own work and is timed: it keys (HMAC-SHA256)
the SHA-256 digests the pipeline already computed, so it costs the same whatever the image size. Opening and closing
the log (and the checkpoint signed on close) are not timed; checkpoints signed every 1000
entries are.

Concurrency (total pairs/s over all writers, from the first writer's start to the last one's
end; writers start together at a barrier):

* N threads   veilpix: one ``AuditLog`` shared by the threads (it serialises them on its own
              lock). Raw: one connection per thread (BEGIN IMMEDIATE + busy timeout), and one
              connection shared under a lock; the ratio uses the faster of the two.
* N processes each process opens its own ``AuditLog`` (raw: its own connection) on one file.

Every veilpix log written is verified afterwards (untimed): the ``chain`` column says whether
it is intact and holds every transfer, i.e. whether the concurrent writers kept one chain.

Verify: ``veilpix.verify_log(path)`` (open read-only, recompute every entry hash and link,
check every Ed25519 checkpoint signature) in entries/s, over the 1-thread veilpix log written
above and over a larger log of ``--verify-n`` entries (built untimed, with
``synchronous=OFF`` to be quick). Peer: a plain full read of the same file (``SELECT *``,
fetch all, SHA-256 of each row), which is the floor for any check that reads every row.

Entry authentication: every entry carries a secret-keyed tag so that nobody without the key
file can write an entry a writer will extend or sign. The two candidates are timed here on
entry hashes of the same size, in the same run: keyed BLAKE2b-256 under the key file's entry
key (what veilpix does, ``KeyFile.entry_mac``), HMAC-SHA256 (the usual MAC, for comparison)
and an Ed25519 signature per entry (``KeyFile.sign``), plus what checking each costs (a writer checks the entries other writers
appended; verify checks them all). The table shows each as a share of one veilpix pair (two
entries) at the 1-thread rate measured above.

Statistics: one *run* writes ``--n`` pairs (default 400) with every series, back to back, in
an order rotated from run to run; there are ``--repeat`` runs (default 5). Each series
appends to its own file, fresh at the start, over all runs (so logs grow and checkpoints
happen). Reported: the MEDIAN of the runs' times (every run is listed), and as the ratio the
MEDIAN of the per-run ratios: veilpix and its peer ran seconds apart in the same run, so
disk hiccups from other load hit both or neither. The target (from the issue): veilpix
pairs/s >= 0.50x raw pairs/s at the same concurrency. Durability costs depend on the disk:
``--dir`` puts the files on the filesystem the log will live on (default: the system
temporary folder). Everything is deleted afterwards. ``--quick``: 3 runs of 100 pairs.

Run with the project's venv::

    .venv/bin/python bench/audit.py [--n 400] [--repeat 5] [--dir DIR] [--image FILE] [--json]
    .venv/bin/python bench/audit.py --quick        # smoke run, about 5 s
    .venv/bin/python bench/audit.py --profile      # plus cProfile of one 1-thread series
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import multiprocessing
import os
import platform
import pstats
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import camera_exif, progress, revision

import veilpix
from veilpix import AuditLog, OutboundImage, Transfer, verify_log

TARGET = 0.50  # veilpix pairs/s / raw (2 commits per pair) pairs/s, from the issue
BUSY_TIMEOUT = 30.0
VARIANTS = 32  # distinct transfers (and subjects) cycled through
PROMPT = "replace the background with a sunny beach, keep the product and the shadows"
API_KEY = "sk-proj-Zq8dL2mX9vB4nT7wR1yK5hJ3"
RAW_SCHEMA = (
    "CREATE TABLE entries (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, record TEXT,"
    " ts TEXT NOT NULL, body TEXT NOT NULL) STRICT"
)
RAW_INSERT = "INSERT INTO entries(kind, record, ts, body) VALUES (?, ?, ?, ?)"


# --------------------------------------------------------------------------- inputs


def make_photo(width: int, height: int) -> bytes:
    """A photo-like JPEG (smooth gradients plus sensor-like noise) carrying camera metadata:
    EXIF with make, model, serial, date and a GPS position."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack(
        [
            120 + 100 * np.sin(x / width * 3.1) * np.cos(y / height * 2.3),
            110 + 90 * np.cos(x / width * 4.7 + y / height * 1.9),
            100 + 80 * np.sin((x + y) / (width + height) * 6.0),
        ],
        axis=-1,
    )
    rgb += rng.normal(0, 6, rgb.shape)
    im = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    exif = camera_exif()
    out = io.BytesIO()
    im.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def make_transfers(image: OutboundImage, *, subjects: bool) -> list[Transfer]:
    """``VARIANTS`` realistic image-edit transfers (vendors, actors, URLs differ)."""
    out = []
    for i in range(VARIANTS):
        openai = i % 3 != 0
        extra: dict[str, Any] = {}
        if subjects:
            extra = {"subject_ref": f"customer-{i:04d}", "consent_ref": f"consent-form-{i:04d}"}
        out.append(
            Transfer(
                vendor="openai" if openai else "gemini",
                url=(
                    f"https://api.openai.com/v1/images/edits?n=1&user=u{i}"
                    if openai
                    else "https://generativelanguage.googleapis.com/v1beta/models/"
                    f"gemini-2.5-flash-image:generateContent?key=AIzaSyD3x4mpl3K3yV4lu3F0rT3st{i:04d}"
                ),
                model="gpt-image-1" if openai else "gemini-2.5-flash-image",
                operation="images.edit" if openai else "generateContent",
                legal_entity="OpenAI, L.L.C." if openai else "Google LLC",
                region="us",
                country="US",
                transfer_mechanism="EU-US Data Privacy Framework",
                app="shop",
                actor=f"user-{i % 7}",
                door="sdk",
                purpose="product photo editing",
                legal_basis="Art. 6(1)(b) contract",
                images=[image],
                prompt=f"{PROMPT} (variant {i})",
                request_bytes=len(image.sanitized.data) + 900 if image.sanitized else None,
                headers={
                    "Authorization": f"Bearer {API_KEY}",
                    "Content-Type": "multipart/form-data; boundary=----veilpix",
                    "User-Agent": "shop/2.3 veilpix/0.1",
                    "OpenAI-Organization": "org-shop",
                },
                controls_applied=["content-usage-header"],
                controls_account_level=["zero-data-retention"],
                **extra,
            )
        )
    return out


def veilpix_pairs(log: AuditLog, transfers: Sequence[Transfer], count: int) -> None:
    for i in range(count):
        pending = log.begin(transfers[i % len(transfers)])
        pending.finish(
            status=200,
            response_bytes=1_400_000 + i,
            vendor_request_id=f"req_{i:08x}",
        )


@dataclass(frozen=True)
class RawRows:
    """What the raw peer writes per pair: veilpix's own stored body texts."""

    begin: str
    finish: str
    ts: str = "2026-11-26T12:00:00.000000Z"


def raw_connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


def raw_create(path: Path) -> None:
    db = raw_connect(path)
    db.execute(RAW_SCHEMA)
    db.close()


def raw_pairs(
    db: sqlite3.Connection,
    rows: RawRows,
    count: int,
    *,
    commits: int = 2,
    lock: threading.Lock | None = None,
) -> None:
    """``count`` pairs: begin row + durable COMMIT, finish row + COMMIT without an fsync
    (``synchronous=NORMAL``, as veilpix commits finishes) (``commits=1``: one INSERT of the
    begin row per durable transaction, no finish)."""
    execute = db.execute
    docs = [("begin", rows.begin, "FULL"), ("finish", rows.finish, "NORMAL")][:commits]
    for _ in range(count):
        record = str(uuid.uuid4())
        for kind, body, sync in docs:
            if lock is not None:
                with lock:
                    if commits == 2:
                        execute(f"PRAGMA synchronous={sync}")
                    execute("BEGIN IMMEDIATE")
                    execute(RAW_INSERT, (kind, record, rows.ts, body))
                    execute("COMMIT")
            else:
                if commits == 2:
                    execute(f"PRAGMA synchronous={sync}")
                execute("BEGIN IMMEDIATE")
                execute(RAW_INSERT, (kind, record, rows.ts, body))
                execute("COMMIT")


# --------------------------------------------------------------------------- write series


@dataclass
class Ctx:
    """Everything the measurements share."""

    tmp: Path
    n: int
    threads: int
    procs: int
    plain: list[Transfer]
    subject: list[Transfer]
    rows: RawRows


def create_veilpix(path: Path) -> None:
    AuditLog(path).close()  # schema and key file


def check_chain(path: Path, expected: int) -> str:
    """Untimed: does the log verify, and does it hold every transfer, all finished?"""
    res = verify_log(path)
    if not res.intact:
        first = res.first_problem
        return f"BROKEN: {first.kind if first else '?'}"
    if res.records != expected or res.pending:
        return f"{res.records} records, {res.pending} pending (expected {expected})"
    return "ok"


def run_veilpix_serial(ctx: Ctx, path: Path, transfers: Sequence[Transfer]) -> tuple[float, int]:
    with AuditLog(path) as log:  # opening and closing are not timed
        start = time.perf_counter()
        veilpix_pairs(log, transfers, ctx.n)
        return time.perf_counter() - start, ctx.n


def run_raw_serial(ctx: Ctx, path: Path, commits: int) -> tuple[float, int]:
    db = raw_connect(path)
    try:
        start = time.perf_counter()
        raw_pairs(db, ctx.rows, ctx.n, commits=commits)
        return time.perf_counter() - start, ctx.n
    finally:
        db.close()


def in_threads(workers: int, body: Callable[[int], None]) -> float:
    """Run ``body(worker)`` in ``workers`` threads released together; wall seconds from the
    first start to the last end."""
    barrier = threading.Barrier(workers)
    spans: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def target(k: int) -> None:
        try:
            barrier.wait()
            t0 = time.perf_counter()
            body(k)
            spans.append((t0, time.perf_counter()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(k,)) for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return max(e for _, e in spans) - min(s for s, _ in spans)


def run_veilpix_threads(ctx: Ctx, path: Path) -> tuple[float, int]:
    per = ctx.n // ctx.threads
    with AuditLog(path) as log:
        seconds = in_threads(ctx.threads, lambda k: veilpix_pairs(log, ctx.plain[k:], per))
    return seconds, per * ctx.threads


def run_raw_threads(ctx: Ctx, path: Path, *, shared: bool) -> tuple[float, int]:
    per = ctx.n // ctx.threads
    if shared:
        db = raw_connect(path)
        lock = threading.Lock()
        seconds = in_threads(ctx.threads, lambda k: raw_pairs(db, ctx.rows, per, lock=lock))
        db.close()
    else:
        conns = [raw_connect(path) for _ in range(ctx.threads)]
        seconds = in_threads(ctx.threads, lambda k: raw_pairs(conns[k], ctx.rows, per))
        for db in conns:
            db.close()
    return seconds, per * ctx.threads


def _proc_worker(
    kind: str,
    path: str,
    count: int,
    transfers: list[Transfer] | None,
    rows: RawRows,
    barrier: Any,
    queue: Any,
) -> None:
    """One writer process: open, wait for the others, write ``count`` pairs, report."""
    try:
        if kind == "veilpix":
            assert transfers is not None
            log = AuditLog(path)
            barrier.wait(60)
            t0 = time.perf_counter()
            veilpix_pairs(log, transfers, count)
            t1 = time.perf_counter()
            log.close()
        else:
            db = raw_connect(Path(path))
            barrier.wait(60)
            t0 = time.perf_counter()
            raw_pairs(db, rows, count)
            t1 = time.perf_counter()
            db.close()
        queue.put(("ok", t0, t1))
    except BaseException as exc:
        queue.put(("error", f"{type(exc).__name__}: {exc}", 0.0))


def mp_context() -> Any:
    # fork: the children inherit the prepared transfers (nothing is open at fork time);
    # spawn elsewhere. perf_counter is system-wide monotonic, so spans compare across processes.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def run_procs(ctx: Ctx, path: Path, kind: str) -> tuple[float, int]:
    per = ctx.n // ctx.procs
    transfers = ctx.plain if kind == "veilpix" else None
    args = [
        (kind, str(path), per, transfers[k:] if transfers else None, ctx.rows)
        for k in range(ctx.procs)
    ]
    return in_processes(mp_context(), _proc_worker, args, kind), per * ctx.procs


def in_processes(
    mp: Any, target: Callable[..., None], args: Sequence[tuple[Any, ...]], kind: str
) -> float:
    """Run ``target(*a, barrier, queue)`` in a process per ``a`` in ``args``: the writers
    start together at the barrier and each reports ("ok", start, end) on the queue. Seconds
    from the first start to the last end (perf_counter is system-wide)."""
    barrier = mp.Barrier(len(args))
    queue = mp.Queue()
    procs = [mp.Process(target=target, args=(*a, barrier, queue)) for a in args]
    for p in procs:
        p.start()
    results = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    errors = [r[1] for r in results if r[0] != "ok"]
    if errors:
        raise RuntimeError(f"a {kind} writer process failed: {errors[0]}")
    return float(max(r[2] for r in results) - min(r[1] for r in results))


@dataclass
class Spec:
    key: str
    group: str
    label: str
    writer: str  # veilpix | raw
    commits_per_op: int
    unit: str  # what one op is: "pair" or "commit"
    run: Callable[[Ctx, Path], tuple[float, int]]
    peers: tuple[str, ...] = ()  # the ratio's peer: the fastest of these, round by round


def specs(threads: int, procs: int) -> list[Spec]:
    t, p = f"{threads} threads", f"{procs} processes"
    return [
        Spec(
            "1/veilpix",
            "1 thread",
            "veilpix",
            "veilpix",
            2,
            "pair",
            lambda c, d: run_veilpix_serial(c, d, c.plain),
            ("1/raw2",),
        ),
        Spec(
            "1/veilpix+subject",
            "1 thread",
            "veilpix + subject_ref",
            "veilpix",
            2,
            "pair",
            lambda c, d: run_veilpix_serial(c, d, c.subject),
            ("1/raw2",),
        ),
        Spec(
            "1/raw2",
            "1 thread",
            "raw, 2 commits/pair (peer)",
            "raw",
            2,
            "pair",
            lambda c, d: run_raw_serial(c, d, 2),
        ),
        Spec(
            "1/raw1",
            "1 thread",
            "raw, 1 insert/commit (context)",
            "raw",
            1,
            "commit",
            lambda c, d: run_raw_serial(c, d, 1),
        ),
        Spec(
            "T/veilpix",
            t,
            "veilpix, one AuditLog",
            "veilpix",
            2,
            "pair",
            run_veilpix_threads,
            ("T/raw-conns", "T/raw-shared"),
        ),
        Spec(
            "T/raw-conns",
            t,
            "raw, connection/thread",
            "raw",
            2,
            "pair",
            lambda c, d: run_raw_threads(c, d, shared=False),
        ),
        Spec(
            "T/raw-shared",
            t,
            "raw, 1 connection + lock",
            "raw",
            2,
            "pair",
            lambda c, d: run_raw_threads(c, d, shared=True),
        ),
        Spec(
            "P/veilpix",
            p,
            "veilpix, AuditLog/process",
            "veilpix",
            2,
            "pair",
            lambda c, d: run_procs(c, d, "veilpix"),
            ("P/raw",),
        ),
        Spec(
            "P/raw",
            p,
            "raw, connection/process",
            "raw",
            2,
            "pair",
            lambda c, d: run_procs(c, d, "raw"),
        ),
    ]


@dataclass
class Series:
    key: str
    group: str
    label: str
    writer: str
    commits_per_op: int
    unit: str
    ops: int = 0  # per run
    runs: list[float] = field(default_factory=list)  # seconds per run
    median_s: float = 0.0
    ops_per_s: float = 0.0
    commits_per_s: float = 0.0
    entries: int = 0  # veilpix: entries in the log after every run
    chain: str | None = None  # veilpix: "ok" or what verification found
    peer: str | None = None
    ratios: list[float] = field(default_factory=list)  # per run, against that run's peer
    ratio: float | None = None  # median of ratios
    verdict: str | None = None


def run_writes(ctx: Ctx, repeat: int, chosen: Sequence[Spec]) -> tuple[list[Series], Path]:
    """Every series ``repeat`` times; one run = every series once, back to back, in an order
    rotated from run to run. Each series appends to its own file over all runs (a log
    grows). Returns the series and the 1-thread veilpix log (verified afterwards)."""
    series = {
        s.key: Series(s.key, s.group, s.label, s.writer, s.commits_per_op, s.unit) for s in chosen
    }
    paths: dict[str, Path] = {}
    for spec in chosen:  # fresh files, created untimed
        folder = ctx.tmp / spec.key.replace("/", "-")
        folder.mkdir()
        paths[spec.key] = folder / "log.db"
        (create_veilpix if spec.writer == "veilpix" else raw_create)(paths[spec.key])
    for rep in range(repeat):
        k = rep % len(chosen)
        rates: dict[str, float] = {}
        for spec in list(chosen[k:]) + list(chosen[:k]):
            progress(f"run {rep + 1}/{repeat}: {spec.group}, {spec.label}")
            seconds, ops = spec.run(ctx, paths[spec.key])
            s = series[spec.key]
            s.runs.append(seconds)
            s.ops = ops
            rates[spec.key] = ops / seconds
        for spec in chosen:
            peers = [p for p in spec.peers if p in rates]
            if peers:
                best = max(peers, key=lambda p: rates[p])
                series[spec.key].ratios.append(rates[spec.key] / rates[best])
    for spec in chosen:
        s = series[spec.key]
        s.median_s = statistics.median(s.runs)
        s.ops_per_s = s.ops / s.median_s
        s.commits_per_s = s.ops_per_s * s.commits_per_op
        s.runs = [round(r, 4) for r in s.runs]
        if s.ratios:
            s.ratio = statistics.median(s.ratios)
            s.ratios = [round(r, 3) for r in s.ratios]
            s.verdict = "PASS" if s.ratio >= TARGET else "MISS"
            peers = [p for p in spec.peers if p in series]
            s.peer = peers[0] if len(peers) == 1 else f"the faster of {' and '.join(peers)}"
        if spec.writer == "veilpix":
            progress(f"verifying {spec.label} ({spec.group})")
            s.chain = check_chain(paths[spec.key], s.ops * repeat)
            s.entries = 2 * s.ops * repeat
    return list(series.values()), paths["1/veilpix"]


# --------------------------------------------------------------------------- verify


def build_big_log(path: Path, transfers: Sequence[Transfer], entries: int) -> None:
    """A log of ``entries`` entries, written the normal way but without fsync (untimed; the
    verifier reads what is in the file, however it was synced)."""
    with AuditLog(path) as log:
        with suppress(AttributeError, sqlite3.Error):  # private hook, for this fixture only
            log._conn().execute("PRAGMA synchronous=OFF")
        veilpix_pairs(log, transfers, entries // 2)


def plain_read(path: Path) -> int:
    """The reference: read every entry and hash each row. Returns the rows read."""
    db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT * FROM entries").fetchall()
        sha = hashlib.sha256
        for row in rows:
            sha(b"\0".join(c if isinstance(c, bytes) else str(c).encode() for c in row)).digest()
        return len(rows)
    finally:
        db.close()


@dataclass
class VerifyRow:
    log: str
    entries: int
    checkpoints: int
    verify_runs: list[float]
    read_runs: list[float]
    verify_per_s: float = 0.0
    read_per_s: float = 0.0
    ratio: float = 0.0  # verify entries/s / plain read entries/s
    ok: bool = False


def measure_verify(name: str, path: Path, repeat: int) -> VerifyRow:
    verify_runs: list[float] = []
    read_runs: list[float] = []
    result = verify_log(path)  # untimed warm-up: page cache, imports
    plain_read(path)
    for rep in range(repeat):
        for which in ("verify", "read") if rep % 2 == 0 else ("read", "verify"):
            progress(f"verify {rep + 1}/{repeat}: {name}, {which}")
            start = time.perf_counter()
            if which == "verify":
                result = verify_log(path)
                verify_runs.append(time.perf_counter() - start)
            else:
                plain_read(path)
                read_runs.append(time.perf_counter() - start)
    row = VerifyRow(
        name,
        result.entries,
        result.checkpoints,
        [round(r, 4) for r in verify_runs],
        [round(r, 4) for r in read_runs],
        ok=result.intact,
    )
    row.verify_per_s = result.entries / statistics.median(verify_runs)
    row.read_per_s = result.entries / statistics.median(read_runs)
    row.ratio = row.verify_per_s / row.read_per_s
    return row


# --------------------------------------------------------------------------- profile


@dataclass
class AuthRow:
    scheme: str
    make_us: float
    check_us: float
    share_of_pair: float


def measure_entry_auth(pair_us: float, count: int = 20000) -> list[AuthRow]:
    """Per-entry cost of the two ways to authenticate an entry (median of 5 runs)."""
    try:
        from veilpix.audit._keys import KeyFile, verify_signature
    except ImportError:  # a revision before the audit package (run as a peer with PYTHONPATH)
        from veilpix._audit_keys import KeyFile, verify_signature  # type: ignore[no-redef]

    keys = KeyFile.generate("bench")
    public = keys.public_raw
    hashes = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(count)]
    macs = [keys.entry_mac(h, "bench") for h in hashes]
    sigs = [keys.sign(h) for h in hashes[: count // 20]]  # signatures are slow: fewer

    def per_entry(fn: Callable[[], None], n: int) -> float:
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            runs.append((time.perf_counter() - t0) / n * 1e6)
        return statistics.median(runs)

    import hmac as _hmac

    hkey = keys.hmac_key
    hm_make = per_entry(lambda: [_hmac.digest(hkey, h, "sha256") for h in hashes], count)
    hm_macs = [_hmac.digest(hkey, h, "sha256") for h in hashes]
    hm_check = per_entry(
        lambda: [
            _hmac.compare_digest(_hmac.digest(hkey, h, "sha256"), m)
            for h, m in zip(hashes, hm_macs, strict=True)
        ],
        count,
    )
    mac_make = per_entry(lambda: [keys.entry_mac(h, "bench") for h in hashes], count)
    mac_check = per_entry(
        lambda: [
            _hmac.compare_digest(keys.entry_mac(h, "bench"), m)
            for h, m in zip(hashes, macs, strict=True)
        ],
        count,
    )
    few = hashes[: count // 20]
    sig_make = per_entry(lambda: [keys.sign(h) for h in few], len(few))
    sig_check = per_entry(
        lambda: [verify_signature(public, s, h) for h, s in zip(few, sigs, strict=True)], len(few)
    )
    return [
        AuthRow("keyed BLAKE2b-256 (chosen)", mac_make, mac_check, 2 * mac_make / pair_us),
        AuthRow("HMAC-SHA256", hm_make, hm_check, 2 * hm_make / pair_us),
        AuthRow("Ed25519 signature", sig_make, sig_check, 2 * sig_make / pair_us),
    ]


def profile_serial(ctx: Ctx, pairs: int, top: int = 15) -> list[dict[str, Any]]:
    """One 1-thread veilpix series under cProfile: the functions with the most own time."""
    folder = ctx.tmp / "profile"
    folder.mkdir()
    path = folder / "log.db"
    AuditLog(path).close()
    with AuditLog(path) as log:
        prof = cProfile.Profile()
        prof.enable()
        veilpix_pairs(log, ctx.plain, pairs)
        prof.disable()
    stats = pstats.Stats(prof)
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (filename, line, func), (_cc, calls, tottime, cumtime, _callers) in sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda kv: kv[1][2],
        reverse=True,
    )[:top]:
        where = "~" if filename == "~" else f"{Path(filename).name}:{line}"
        rows.append(
            {
                "function": func,
                "where": where,
                "calls": calls,
                "own_us_per_pair": round(tottime / pairs * 1e6, 1),
                "cum_us_per_pair": round(cumtime / pairs * 1e6, 1),
                "own_share": round(tottime / total, 3),
            }
        )
    shutil.rmtree(folder)
    return rows


# --------------------------------------------------------------------------- machine


def filesystem_of(path: Path) -> dict[str, str]:
    """Mount point, filesystem type, device and options of ``path`` (Linux; else unknown)."""
    real = str(path.resolve())
    best: dict[str, str] = {"mount": "?", "type": "?", "device": "?", "options": ""}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return best
    longest = -1
    for line in lines:
        left, _, right = line.partition(" - ")
        parts, rest = left.split(), right.split()
        if len(parts) < 6 or len(rest) < 2:
            continue
        mount = parts[4].replace("\\040", " ")
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > longest:
            longest = len(mount)
            best = {"mount": mount, "type": rest[0], "device": rest[1], "options": parts[5]}
    return best


# --------------------------------------------------------------------------- report


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def print_report(doc: dict[str, Any]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
    fs = doc["filesystem"]
    con.print(
        f"[bold]veilpix transfer-log benchmark[/] veilpix {doc['veilpix']}, "
        f"SQLite {doc['sqlite']}, Python {doc['python']}, {doc['cores']} cores"
    )
    con.print(
        f"files in {doc['dir']} on {fs['type']} ({fs['device']}, mounted at {fs['mount']}, "
        f"{fs['options']}); WAL, synchronous=FULL for every writer"
    )
    img = doc["image"]
    con.print(
        f"{doc['repeat']} runs of {doc['n']} pairs per series (every series once per run, back "
        "to back, each appending to its own fresh file); [bold]median[/] of the runs reported."
    )
    con.print(
        f"Image: {img['source']}, {img['bytes_before']:,} B, sanitized once before timing to "
        f"{img['bytes_after']:,} B: the log is measured, not the image pipeline."
    )
    rows = doc["raw_rows"]
    con.print(
        f"Raw peer rows: veilpix's own stored bodies, begin {rows['begin_bytes']:,} B, finish "
        f"{rows['finish_bytes']:,} B (with subject_ref the begin body is "
        f"{rows['subject_begin_bytes']:,} B)."
    )

    table = Table(box=box.SIMPLE_HEAD, title="Writes: begin+finish pairs", title_justify="left")
    for col in (
        "writers",
        "series",
        "pairs/s",
        "commits/s",
        "vp ÷ raw",
        "≥ 0.50",
        "median s",
        "runs (s)",
        "chain",
    ):
        table.add_column(col, justify="left" if col in ("writers", "series", "chain") else "right")
    last_group = last_shown = None
    for s in doc["writes"]:
        if last_group is not None and s["group"] != last_group:
            table.add_section()
        last_group = s["group"]
        table.add_row(
            s["group"] if s["group"] != last_shown else "",
            s["label"],
            fmt_rate(s["ops_per_s"]) if s["unit"] == "pair" else "-",
            fmt_rate(s["commits_per_s"]),
            f"{s['ratio']:.2f}×" if s["ratio"] is not None else "",
            {"PASS": "[green]PASS[/]", "MISS": "[red]MISS[/]"}.get(s["verdict"] or "", ""),
            f"{s['median_s']:.3f}",
            " ".join(f"{r:.2f}" for r in s["runs"]),
            s["chain"] or "",
        )
        last_shown = s["group"]
    con.print()
    con.print(table)
    con.print(
        "  vp ÷ raw = veilpix pairs/s ÷ raw pairs/s at the same concurrency, the raw writer doing "
        "the same 2 commits per pair (the begin fsynced,\n  the finish not): veilpix commits the "
        "begin before the call is sent and the finish after it, by design. With threads the "
        "faster raw pattern is the\n"
        "  peer. The 1-insert-per-commit row is context only (what one durable commit costs on "
        "this disk).\n  chain = each veilpix log verified afterwards (untimed): intact and "
        "holding every transfer, finished."
    )

    if doc["verify"]:
        vt = Table(box=box.SIMPLE_HEAD, title="Verify: verify_log(path)", title_justify="left")
        for col in (
            "log",
            "entries",
            "checkpoints",
            "verify entries/s",
            "plain read entries/s",
            "verify ÷ read",
            "verify s",
            "read s",
            "result",
        ):
            vt.add_column(col, justify="left" if col in ("log", "result") else "right")
        for v in doc["verify"]:
            vt.add_row(
                v["log"],
                f"{v['entries']:,}",
                str(v["checkpoints"]),
                fmt_rate(v["verify_per_s"]),
                fmt_rate(v["read_per_s"]),
                f"{v['ratio']:.2f}×",
                f"{statistics.median(v['verify_runs']):.3f}",
                f"{statistics.median(v['read_runs']):.3f}",
                "intact" if v["ok"] else "[red]NOT intact[/]",
            )
        con.print()
        con.print(vt)
        con.print(
            "  verify_log opens the log read-only, recomputes every entry hash and link and checks "
            "every Ed25519 checkpoint signature.\n  plain read = SELECT * FROM entries, fetch "
            "all, SHA-256 of each row: the floor for any check that reads every row. Medians."
        )

    at = Table(box=box.SIMPLE_HEAD, title="Entry authentication, per entry", title_justify="left")
    for col in ("scheme", "make µs", "check µs", "share of a 1-thread pair (2 entries)"):
        at.add_column(col, justify="left" if col == "scheme" else "right")
    for a in doc["entry_auth"]:
        at.add_row(
            a["scheme"], f"{a['make_us']:.2f}", f"{a['check_us']:.2f}", f"{a['share_of_pair']:.1%}"
        )
    con.print()
    con.print(at)
    con.print(
        "  Every entry is MACed with the key file's entry key as it is written; checkpoints "
        "(every 1000 entries, every 60 s, on close)\n  are what Ed25519 signs, so an auditor "
        "with the public key alone can check everything up to the newest one."
    )

    if doc.get("postgres") and "series" in doc["postgres"]:
        from _fleet import print_fleet

        print_fleet(con, doc)
    elif doc.get("postgres"):
        con.print(f"\nPostgreSQL series skipped: {doc['postgres']['skipped']}")
    con.print()
    for line in doc["targets"]:
        con.print(line)
    if doc.get("profile"):
        pt = Table(
            box=box.SIMPLE_HEAD,
            title=f"cProfile, 1 thread, {doc['profile_pairs']} pairs: most own time (profiler "
            "overhead inflates Python-level costs)",
            title_justify="left",
        )
        for col in ("function", "where", "calls", "own µs/pair", "cum µs/pair", "own share"):
            pt.add_column(col, justify="left" if col in ("function", "where") else "right")
        for r in doc["profile"]:
            pt.add_row(
                r["function"],
                r["where"],
                f"{r['calls']:,}",
                f"{r['own_us_per_pair']:.1f}",
                f"{r['cum_us_per_pair']:.1f}",
                f"{r['own_share']:.1%}",
            )
        con.print()
        con.print(pt)
    con.print(f"\nbench took {doc['bench_seconds']:.1f} s")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n", type=int, default=400, help="pairs per series and run (default 400)")
    ap.add_argument("--repeat", type=int, default=5, help="runs (median; default 5)")
    ap.add_argument("--threads", type=int, default=4, help="writer threads (default 4)")
    ap.add_argument("--procs", type=int, default=2, help="writer processes (default 2)")
    ap.add_argument(
        "--verify-n",
        type=int,
        default=20000,
        help="entries in the larger log verified (default 20000; 0: skip it)",
    )
    ap.add_argument("--dir", type=Path, help="put the files here (default: system temp folder)")
    ap.add_argument("--image", type=Path, help="a photo to use instead of the generated one")
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 3 runs of 100 pairs, 2000-entry verify"
    )
    ap.add_argument(
        "--profile", action="store_true", help="also profile one 1-thread series (cProfile)"
    )
    ap.add_argument(
        "--pg-pairs",
        type=int,
        default=2000,
        help="pairs per PostgreSQL series and run (default 2000; 0: skip PostgreSQL)",
    )
    ap.add_argument(
        "--pg-writers",
        default="1,4,8",
        help="writer processes of the PostgreSQL series (default 1,4,8)",
    )
    ap.add_argument("--json", action="store_true", help="print machine-readable results only")
    args = ap.parse_args(argv)
    try:
        pg_writers = tuple(int(x) for x in args.pg_writers.split(",") if x.strip())
    except ValueError:
        ap.error(f"--pg-writers: expected numbers like 1,4,8, got {args.pg_writers!r}")
    if not pg_writers or min(pg_writers) < 1:
        ap.error("--pg-writers: at least one writer each")
    if args.quick:
        args.n, args.repeat, args.verify_n = min(args.n, 100), 3, min(args.verify_n, 2000)
        args.pg_pairs = min(args.pg_pairs, 200)
    if args.n < max(args.threads, args.procs, 1) or args.repeat < 1:
        ap.error("--n must be at least the number of writers, --repeat at least 1")
    if args.threads < 1 or args.procs < 1 or args.verify_n < 0:
        ap.error("--threads and --procs must be at least 1, --verify-n at least 0")
    if args.dir is not None and not args.dir.is_dir():
        ap.error(f"--dir {args.dir}: not a folder")

    started = time.perf_counter()
    photo = args.image.read_bytes() if args.image else make_photo(1536, 1024)
    image = OutboundImage(photo, veilpix.sanitize(photo), "image[]")
    plain = make_transfers(image, subjects=False)
    subject = make_transfers(image, subjects=True)

    tmp = Path(tempfile.mkdtemp(prefix="veilpix-bench-audit-", dir=args.dir))
    try:
        # The raw peer writes veilpix's own bodies: take them from a scratch log.
        scratch = tmp / "scratch.db"
        with AuditLog(scratch) as log:
            veilpix_pairs(log, plain[:1], 1)
            log.begin(subject[0]).finish(status=200)
        db = sqlite3.connect(scratch)
        bodies = db.execute("SELECT kind, body FROM entries ORDER BY seq").fetchall()
        db.close()
        rows = RawRows(begin=bodies[0][1], finish=bodies[1][1])
        subject_begin = bodies[2][1]
        ctx = Ctx(tmp, args.n, args.threads, args.procs, plain, subject, rows)

        writes, serial_log = run_writes(ctx, args.repeat, specs(args.threads, args.procs))
        verify_rows = [measure_verify("1-thread log", serial_log, args.repeat)]
        if args.verify_n:
            progress(f"building a {args.verify_n}-entry log (untimed)")
            big = tmp / "big" / "log.db"
            big.parent.mkdir()
            build_big_log(big, plain, args.verify_n)
            verify_rows.append(measure_verify("larger log", big, args.repeat))
        one = next(s for s in writes if s.key == "1/veilpix")
        progress("timing entry authentication")
        auth = measure_entry_auth(1e6 / one.ops_per_s)
        profile = profile_serial(ctx, max(args.n, 1000)) if args.profile else None
        fleet = None
        if args.pg_pairs:
            from _fleet import pgkit, run_fleet

            reason = pgkit.skip_reason()
            if reason:
                fleet = {"skipped": reason}
            else:
                series, server = run_fleet(
                    ctx,
                    mp_context(),
                    progress,
                    repeat=args.repeat,
                    pairs=max(args.pg_pairs, *pg_writers),
                    writers=pg_writers,
                )
                fleet = {
                    "server": server,
                    "pairs": args.pg_pairs,
                    "repeat": args.repeat,
                    "series": [asdict(x) for x in series],
                }
        fs = filesystem_of(tmp)
        progress("")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    targets = [
        f"target {s.group}, {s.label}: {s.ratio:.2f}× {s.peer} pairs/s (median of {len(s.ratios)} "
        f"runs, range {min(s.ratios):.2f}–{max(s.ratios):.2f}) ≥ {TARGET:.2f}: {s.verdict}"
        for s in writes
        if s.ratio is not None
    ]
    doc = {
        "veilpix": f"{veilpix.__version__} ({revision('sdk')})",
        "sqlite": sqlite3.sqlite_version,
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "dir": str(args.dir.resolve() if args.dir else Path(tempfile.gettempdir())),
        "filesystem": fs,
        "n": args.n,
        "repeat": args.repeat,
        "statistic": "median of runs; ratios: median of per-run ratios",
        "threads": args.threads,
        "procs": args.procs,
        "image": {
            "source": str(args.image) if args.image else "generated 1536x1024 JPEG with EXIF+GPS",
            "bytes_before": len(photo),
            "bytes_after": len(image.sanitized.data) if image.sanitized else 0,
        },
        "raw_rows": {
            "begin_bytes": len(rows.begin.encode()),
            "finish_bytes": len(rows.finish.encode()),
            "subject_begin_bytes": len(subject_begin.encode()),
        },
        "target_ratio": TARGET,
        "writes": [asdict(s) for s in writes],
        "verify": [asdict(v) for v in verify_rows],
        "entry_auth": [asdict(a) for a in auth],
        "targets": targets,
        "profile": profile,
        "postgres": fleet,
        "profile_pairs": max(args.n, 1000) if profile else None,
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    if fleet and "series" in fleet:
        from _fleet import fleet_targets

        doc["targets"] = [*targets, *fleet_targets(doc)]
    if args.json:
        print(json.dumps(doc, indent=1, ensure_ascii=False))
    else:
        print_report(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
