"""Benchmark: the compliance console (``veilpix audit serve``) on a large transfer log, against
the CLI's own reads of the same log, in the same run.

The log
-------
``--records N`` transfers (default 1,000,000; ``--records 20000`` for a quick run), generated
once and cached under ``$TMPDIR/veilpix-bench/console-v1-N/`` (``log.db``, its key file, the
photos, ``meta.json``); later runs reuse it, ``--fresh`` builds it again. Generation writes
1,600-2,600 transfers/s on 2 cores (a 1M log took 10 minutes, 3 GB; progress on stderr) with
``AuditLog(path, durability="os", checkpoint_every=10000)`` and a clock that spreads the
transfers over 12 months. Variety:

* 5 vendors (weights 40/22/15/15/8 %): openai (US, EU-US Data Privacy Framework), gemini
  (NL, EEA), anthropic (US, SCCs), mistral (FR, EEA), stability (GB: outside the EEA and
  *no* transfer mechanism recorded);
* 3 apps (shop 60 %, support 30 %, marketing 10 %), 2 purposes with their legal bases;
* outcomes: 5 % blocked by a rule (``log.block``: allowed_countries or allowed_vendors),
  1 % failed, 3 % left open (begun, never finished: "outcome unknown"), the rest sent;
* 10 % linked to a data subject (``subject_ref``, 5,000 subjects): their image
  fingerprints are sealed under the subject's key;
* every transfer sends one small real JPEG (480x320, camera EXIF with GPS, made with Pillow
  in memory and sanitized once with ``veilpix.sanitize``), except 3 "needle" transfers (at
  1/4, 1/2 and 3/4 of the log; the middle one linked to a subject) that send a second photo:
  the lookup's hit. A third photo is never sent: the lookup's miss.

``--log PATH`` benches an existing log instead (its key file beside it, or ``--key``); give
``--hit-photo FILE`` (a photo the log holds) for the lookup's hit. A photo matching more than
``--max-hits`` transfers (default 1000) is not looked up (see below).

What is measured (medians of ``--repeat`` runs; console and peer alternated run by run)
---------------------------------------------------------------------------------------
1. Index build, the console's background start: a new ``Console`` on the read-only log,
   ``index_job.start()`` and wait (``Index.build``: ``AuditLog.facts`` in chunks into columns).
   Peer: what ``veilpix audit stats`` runs, ``summarize(log.records())``: every transfer read
   back as a record. ``--build-repeat`` runs each (default 3), order alternated. Memory: the
   index's column arrays (``array`` buffers), the numpy copy the pages read (made once per
   change of the index), and the process's RSS growth (sampled every 20 ms: peak during the
   run, and what stays after it) for both.
2. The background verification (``verify_job``), timed once, as context (and so that the
   overview's integrity box shows a real result).
3. Pages through the application in process (``tests/consolekit.Client``: the console's own
   request -> response function, signed in, no socket), each against the CLI's SQL path for
   the same question, ``list(log.records(newest_first=True, limit=50, ...))`` (what
   ``veilpix audit list`` runs):

   ==============================  =================================================
   console                          peer (CLI)
   ==============================  =================================================
   /transfers (first page)          no filter
   the same, just after a change    the first page's runs (the index's numpy copy is
                                    made again)
   ?vendor=<most common>            --vendor
   ?vendor=&outcome=unknown&app=    --vendor --outcome unknown --app (the vendor and app
                                    with the fewest open transfers, at least one: a rare
                                    combination)
   ?before=<the middle begin seq>   --until <that transfer's begin time> (the CLI has no
                                    keyset paging; the same rows)
   ?country=third-no-mechanism      --country <the third country with the most such
                                    transfers> (the CLI has no such filter: the nearest
                                    question it can ask, which also lists blocked calls)
   ==============================  =================================================

   The overview (``/``) just after a change (totals computed again) and viewed again
   (memoized): peer ``veilpix audit stats`` (the full read of 1.); a transfer's page by full
   id: peer ``log.get(id)`` (``veilpix audit show``); "Was this photo sent?" (POST /lookup,
   multipart, as the browser sends it) for a miss and a hit: peer
   ``list(log.records(image=photo))`` (``veilpix audit list --image``: reads every
   transfer; ``--skip-slow-peers`` leaves it out). "Just after a change" is what a refresh
   that took in new entries does to the index (its version moves on); the log itself is not
   changed.
4. One HTTP round trip over loopback: ``veilpix.console._serve.start()`` (its ``start`` of
   the background jobs is skipped: the index is built and verified already), sign in with the
   login link, then ``GET /transfers`` with the session cookie over a kept-alive
   ``http.client`` connection, and with a new connection per request; peer: the same page in
   process, alternated, in the same run.

Every console answer is checked (status 200, not the "still indexing" page); list pages are
compared with the peer's rows (``same``: the same 50 transfers in the same order), the
lookup's count with the peer's, the stats totals with the index's. A row that would take
longer than ``--budget`` seconds in all (default 20) stops after the run that crossed it
(at least one run each; the runs column says how many).

Ratios are console ÷ peer, median of the per-run ratios (below 1: the console answers
faster). Timings are comparable within one run only.

Run with the project's venv::

    .venv/bin/python bench/console.py                      # 1M transfers (generated once)
    .venv/bin/python bench/console.py --records 20000      # quick: a 20k log, about 40 s
    .venv/bin/python bench/console.py --log /path/log.db --hit-photo sent.jpg --skip-slow-peers
    .venv/bin/python bench/console.py --records 20000 --json > console.json
"""

from __future__ import annotations

import argparse
import gc
import http.client
import io
import json
import os
import platform
import random
import re
import resource
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from _common import ROOT, camera_exif, progress, revision

sys.path.insert(0, str(ROOT / "tests"))  # consolekit: the in-process client the tests use

import veilpix
from veilpix import AuditLog, OutboundImage, Transfer

TAG = "v1"  # bump when the generated log changes: cached logs of another tag are not reused
PAGE = 50  # the console's page size and the CLI list's --limit here
VENDORS = (  # name, country, host, legal entity, transfer mechanism (None: none), weight
    ("openai", "US", "api.openai.com", "OpenAI, L.L.C.", "EU-US Data Privacy Framework", 40),
    ("gemini", "NL", "generativelanguage.googleapis.com", "Google Cloud EMEA Ltd", None, 22),
    ("anthropic", "US", "api.anthropic.com", "Anthropic, PBC", "SCCs (Art. 46(2)(c) GDPR)", 15),
    ("mistral", "FR", "api.mistral.ai", "Mistral AI SAS", None, 15),
    ("stability", "GB", "api.stability.ai", "Stability AI Ltd", None, 8),
)
APPS = (("shop", 60), ("support", 30), ("marketing", 10))
PURPOSES = {
    "shop": ("product photo editing", "Art. 6(1)(b) contract"),
    "support": ("customer support", "Art. 6(1)(f) legitimate interests"),
    "marketing": ("product photo editing", "Art. 6(1)(b) contract"),
}
PROMPTS = (
    "replace the background with plain white, keep the shadows",
    "remove the person in the background",
    "what is wrong with this product? the customer says it arrived damaged",
    "make the colours warmer and crop to a square",
)
RULES = (("allowed_countries", "country not allowed"), ("allowed_vendors", "vendor not allowed"))
SUBJECTS = 5000
NEEDLE_SUBJECT = "customer-needle"


class BenchError(Exception):
    """Something the benchmark cannot go on without (printed, exit status 1)."""


# --------------------------------------------------------------------------- the log


def make_photo(seed: int, width: int = 480, height: int = 320) -> bytes:
    """A small photo-like JPEG (gradients plus sensor noise) with camera EXIF and GPS."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 6.28, 3)
    rgb = np.stack(
        [
            120 + 100 * np.sin(x / width * 3.1 + phase[0]) * np.cos(y / height * 2.3),
            110 + 90 * np.cos(x / width * 4.7 + y / height * 1.9 + phase[1]),
            100 + 80 * np.sin((x + y) / (width + height) * 6.0 + phase[2]),
        ],
        axis=-1,
    )
    rgb += rng.normal(0, 6, rgb.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB").save(
        out, "JPEG", quality=85, exif=camera_exif()
    )
    return out.getvalue()


def cache_folder(n: int) -> Path:
    return Path(tempfile.gettempdir()) / "veilpix-bench" / f"console-{TAG}-{n}"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def generate(folder: Path, n: int) -> None:
    """Write an ``n``-transfer log (and its photos and ``meta.json``) into ``folder``: built
    beside it under another name and renamed at the end, so a stopped run leaves no log
    that looks complete."""
    work = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    common, needle, miss = make_photo(1), make_photo(2), make_photo(3)
    for name, data in (("photo.jpg", common), ("needle.jpg", needle), ("miss.jpg", miss)):
        (work / name).write_bytes(data)
    images = [OutboundImage(common, veilpix.sanitize(common), "image[]")]
    needle_images = [OutboundImage(needle, veilpix.sanitize(needle), "image[]")]
    needles = {n // 4: None, n // 2: NEEDLE_SUBJECT, 3 * n // 4: None}
    rnd = random.Random(20261207)
    start = datetime(2025, 12, 1, tzinfo=UTC)
    step = 365 * 86400 / n
    now = [start]
    weights = [v[5] for v in VENDORS]
    app_names, app_weights = [a for a, _ in APPS], [w for _, w in APPS]
    every = max(1, n // 100)
    tty = sys.stderr.isatty()
    t0 = time.perf_counter()
    with AuditLog(
        work / "log.db", durability="os", checkpoint_every=10000, clock=lambda: now[0]
    ) as log:
        for i in range(n):
            begun = start + timedelta(seconds=(i + 0.5 * rnd.random()) * step)
            now[0] = begun
            vendor, country, host, entity, mechanism, _ = rnd.choices(VENDORS, weights)[0]
            app = rnd.choices(app_names, app_weights)[0]
            purpose, basis = PURPOSES[app]
            subject = f"customer-{rnd.randrange(SUBJECTS):04d}" if rnd.random() < 0.10 else None
            r = rnd.random()
            if i in needles:
                subject, r = needles[i], 0.5  # sent, with the needle photo
            prompt = rnd.choice(PROMPTS)
            rule, reason = rnd.choice(RULES) if r < 0.05 else ("allowed", "")
            imgs = needle_images if i in needles else images
            size = len(imgs[0].sanitized.data) + 640 + len(prompt) if imgs[0].sanitized else None
            t = Transfer(
                vendor=vendor,
                url=f"https://{host}/v1/images/edits",
                model=f"{vendor}-image-1",
                operation="images.edit",
                legal_entity=entity,
                region="eu" if country in ("NL", "FR") else "us",
                country=country,
                transfer_mechanism=mechanism,
                app=app,
                actor=f"user-{rnd.randrange(40)}",
                purpose=purpose,
                legal_basis=basis,
                subject_ref=subject,
                images=imgs,
                prompt=prompt,
                request_bytes=size,
                headers={"Content-Type": "multipart/form-data", "User-Agent": f"{app}/2.3"},
                controls_applied=["store=false"] if vendor == "openai" else [],
                rule=rule,
            )
            if r < 0.05:
                log.block(t, reason=reason, rule=rule)
            else:
                pending = log.begin(t)
                now[0] = begun + timedelta(seconds=1 + 7 * rnd.random())
                if r < 0.06:
                    pending.finish(outcome="failed", reason="connection reset by peer")
                elif r < 0.97:
                    pending.finish(
                        status=200,
                        request_bytes=size,
                        response_bytes=200_000 + rnd.randrange(400_000),
                        vendor_request_id=f"req_{i:08x}",
                    )
                # else: left open (outcome unknown)
            if (i + 1) % every == 0 or i + 1 == n:
                rate = (i + 1) / (time.perf_counter() - t0)
                line = (
                    f"generating: {i + 1:,} of {n:,} transfers ({rate:,.0f}/s, "
                    f"{(n - i - 1) / rate / 60:.1f} min left)"
                )
                if tty:
                    progress(line)
                elif (i + 1) % max(1, n // 10) == 0:
                    _say("  " + line)
    seconds = time.perf_counter() - t0
    progress("")
    meta = {
        "tag": TAG,
        "records": n,
        "generated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(seconds, 1),
        "veilpix": veilpix.__version__,
        "needles": len(needles),
    }
    (work / "meta.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    work.rename(folder)
    _say(f"generated {n:,} transfers in {seconds / 60:.1f} min ({n / seconds:,.0f}/s): {folder}")


@dataclass
class Source:
    """The log benched, the photos for the lookup, and where they came from."""

    path: Path
    key: Path | None
    generated: bool
    miss: bytes
    hit: bytes | None
    hit_expected: int | None  # transfers known to hold the hit photo (generated logs)
    note: str


def prepare(args: argparse.Namespace) -> Source:
    if args.log is not None:
        if not args.log.is_file():
            raise BenchError(f"--log {args.log}: no such file")
        hit = args.hit_photo.read_bytes() if args.hit_photo else None
        return Source(
            args.log,
            args.key,
            False,
            make_photo(3),
            hit,
            None,
            f"existing log {args.log}",
        )
    folder = cache_folder(args.records)
    meta_file = folder / "meta.json"
    if args.fresh or not meta_file.is_file():
        minutes = args.records / 2000 / 60
        _say(
            f"building a {args.records:,}-transfer log once (about {minutes:.0f} min), cached "
            f"in {folder}"
        )
        generate(folder, args.records)
        note = f"generated {args.records:,} transfers in this run ({folder})"
    else:
        meta = json.loads(meta_file.read_text())
        note = f"cached log {folder} (generated {meta['generated']}; --fresh to rebuild)"
    meta = json.loads(meta_file.read_text())
    return Source(
        folder / "log.db",
        None,
        True,
        (folder / "miss.jpg").read_bytes(),
        args.hit_photo.read_bytes() if args.hit_photo else (folder / "needle.jpg").read_bytes(),
        None if args.hit_photo else int(meta["needles"]),
        note,
    )


# --------------------------------------------------------------------------- measuring


def rss() -> int:
    """The process's resident set size in bytes (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class RssPeak:
    """The peak RSS growth over a block (sampled every 20 ms in a thread), and what stayed."""

    def __enter__(self) -> RssPeak:
        gc.collect()
        self.base = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())
        self.grew = self.peak - self.base
        gc.collect()
        self.kept = rss() - self.base


@dataclass
class Row:
    group: str
    what: str
    console: list[float]  # seconds
    peer_label: str = ""
    peer: list[float] = field(default_factory=list)
    check: str = ""
    note: str = ""
    short: str = ""  # the row's name in the summary lines
    peer_short: str = ""  # the peer's
    borrowed: bool = False  # the peer's runs are another row's (not alternated with these)

    @property
    def ratio(self) -> float | None:
        if not self.console or not self.peer:
            return None
        if len(self.console) == len(self.peer) and not self.borrowed:
            return statistics.median(c / p for c, p in zip(self.console, self.peer, strict=True))
        return statistics.median(self.console) / statistics.median(self.peer)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["console_median_s"] = statistics.median(self.console) if self.console else None
        out["peer_median_s"] = statistics.median(self.peer) if self.peer else None
        out["ratio"] = self.ratio
        return out


def alternate(
    console: Callable[[], Any],
    peer: Callable[[], Any] | None,
    repeat: int,
    budget: float,
) -> tuple[list[float], list[float]]:
    """Up to ``repeat`` timed runs of each, alternated (console first on even runs), after
    one untimed warm-up of each (a warm-up slower than ``budget``/4 counts as a run: it
    warmed nothing a slow run notices). Stops after the run in which either side's total
    crossed ``budget`` seconds; each side runs at least once."""
    c_runs: list[float] = []
    p_runs: list[float] = []
    sides = [(console, c_runs)] + ([(peer, p_runs)] if peer is not None else [])
    for fn, runs in sides:
        t0 = time.perf_counter()
        fn()
        took = time.perf_counter() - t0
        if took > budget / 4:
            runs.append(took)
    i = 0
    while True:
        within = sum(c_runs) <= budget and sum(p_runs) <= budget
        due = [(fn, runs) for fn, runs in sides if not runs or (within and len(runs) < repeat)]
        if not due:
            return c_runs, p_runs
        for fn, runs in due if i % 2 == 0 else due[::-1]:
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
        i += 1


def once(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


# --------------------------------------------------------------------------- the console


HOST = "127.0.0.1:8790"  # the Host the in-process client sends (tests/consolekit.py)
_IDS = re.compile(r'href="/transfers/([^"?#/]+)"')
_SENT_IN = re.compile(r"was sent in <b>([\d,]+)</b>")


def new_console(log: AuditLog) -> Any:
    from veilpix.console import Console, Settings

    return Console(log, Settings(hosts=frozenset({HOST}), local_user="bench"))


def page_text(client: Any, target: str) -> str:
    r = client.get(target)
    text: str = r.body.decode()
    if r.status != 200:
        raise BenchError(f"GET {target}: status {r.status}")
    if "This page reloads itself" in text:
        raise BenchError(f"GET {target}: the console answered with its progress page")
    return text


def lookup_request(client: Any, photo: bytes, csrf: str) -> str:
    """POST /lookup as the page's form sends it (multipart, the CSRF field, same origin)."""
    b = "----veilpixbench" + secrets.token_hex(8)
    body = (
        (
            f'--{b}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf}\r\n'
            f'--{b}\r\nContent-Disposition: form-data; name="photo"; filename="photo.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + photo
        + f"\r\n--{b}--\r\n".encode()
    )
    r = client.request(
        "POST",
        "/lookup",
        body,
        [
            ("Content-Type", f"multipart/form-data; boundary={b}"),
            ("Origin", f"http://{HOST}"),
            ("Sec-Fetch-Site", "same-origin"),
        ],
    )
    if r.status != 200:
        raise BenchError(f"POST /lookup: status {r.status}")
    text: str = r.body.decode()
    return text


def lookup_count(text: str) -> int:
    if "No transfer in this log sent" in text:
        return 0
    found = _SENT_IN.search(text)
    if found is None:
        raise BenchError("POST /lookup: neither a match nor a miss on the page")
    return int(found.group(1).replace(",", ""))


def array_bytes(index: Any) -> int:
    """The index's column buffers (``array.array``), in bytes."""
    arrays = [index.seq, index.ts, index.outcome, index.subject]
    arrays += list(index.cols.values()) + list(index.nums.values())
    return sum(len(a) * a.itemsize for a in arrays)


def snapshot_bytes(index: Any) -> int:
    """The numpy copy of the columns the pages read (0 before the first page)."""
    snap = getattr(index, "_snapshot", None)
    return sum(a.nbytes for a in snap[1].values()) if snap else 0


def changed(index: Any) -> None:
    """What a refresh that took in new entries does to the index: its version moves on, so
    the next page makes the numpy copy of the columns again and recomputes the totals."""
    with index._lock:
        index._version += 1


# --------------------------------------------------------------------------- phases


def measure_build(
    log: AuditLog, repeat: int, budget: float
) -> tuple[Row, dict[str, Any], Any, list[Any]]:
    """Index build (a fresh Console's background job) vs ``summarize(log.records())``."""
    from veilpix.audit._records import summarize

    c_runs: list[float] = []
    p_runs: list[float] = []
    c_mem: list[tuple[int, int]] = []
    p_mem: list[int] = []
    console = None
    stats_rows: list[Any] = []
    for i in range(repeat):
        for which in ("index", "peer") if i % 2 == 0 else ("peer", "index"):
            if which == "index":
                console = None
                gc.collect()
                progress(f"index build, run {i + 1} of {repeat}")
                with RssPeak() as mem:
                    console = new_console(log)
                    t0 = time.perf_counter()
                    console.index_job.start()
                    console.index_job.wait()
                    c_runs.append(time.perf_counter() - t0)
                if console.index_job.error:
                    raise BenchError(f"the index build failed: {console.index_job.error}")
                c_mem.append((mem.grew, mem.kept))
            else:
                progress(f"the peer's full read (summarize(log.records())), run {i + 1}")
                with RssPeak() as mem:
                    t0 = time.perf_counter()
                    stats_rows = summarize(log.records())
                    p_runs.append(time.perf_counter() - t0)
                p_mem.append(mem.grew)
    assert console is not None
    index = console.index
    grand = index.totals().get("*")
    calls = sum(r.calls for r in stats_rows)
    check = "same totals" if grand is not None and grand.calls == calls else "DIFFERENT"
    if check != "same totals":
        raise BenchError(f"the index counts {grand.calls if grand else 0} transfers, stats {calls}")
    row = Row(
        "index",
        "index build (the console's background start)",
        c_runs,
        "audit stats: summarize(log.records())",
        p_runs,
        check,
        f"{len(index):,} transfers",
    )
    memory = {
        "columns_bytes": array_bytes(index),
        "index_rss_peak_growth": statistics.median(g for g, _ in c_mem),
        "index_rss_kept": statistics.median(k for _, k in c_mem),
        "peer_rss_peak_growth": statistics.median(p_mem),
        "transfers": len(index),
        "open_transfers_tracked": len(index.ids),
    }
    return row, memory, console, stats_rows


def measure_verify(console: Any) -> dict[str, Any]:
    progress("verifying the log (once, for the overview's integrity box)")
    seconds, _ = once(lambda: (console.verify_job.start(), console.verify_job.wait()))
    result = console.verify_job.result
    if result is None:
        raise BenchError(f"verification failed to run: {console.verify_job.error}")
    return {
        "seconds": seconds,
        "entries": result.entries,
        "ok": result.ok,
        "intact": result.intact,
    }


def pick(console: Any, log: AuditLog) -> dict[str, Any]:
    """The filter values the list pages use, taken from the log itself."""
    index = console.index
    by_vendor = index.totals(by="vendor")
    by_app = index.totals(by="app")
    if not by_vendor:
        raise BenchError("the log holds no transfers")
    vendors = sorted(by_vendor, key=lambda v: (-by_vendor[v].calls, v))
    apps = sorted(by_app, key=lambda a: (-by_app[a].calls, a))
    mid = int(index.seq[len(index.seq) // 2])
    mid_rec = log.records_at([mid])
    if not mid_rec:
        raise BenchError(f"no transfer at seq {mid}")
    no_mech = {
        country: mechs.get("", 0)
        for country, mechs in index.mechanisms().items()
        if country not in index.eea and mechs.get("", 0)
    }
    from veilpix.console._index import Filters

    # the rare combination: the vendor and app with the fewest open ("outcome unknown")
    # transfers, at least one
    combos = {
        (v, a): index.page(Filters(vendor=v, app=a, outcome="unknown"), before=None, size=1)[1]
        for v in vendors
        for a in apps
    }
    held = [k for k, n in combos.items() if n] or list(combos)
    rare_vendor, rare_app = min(held, key=lambda k: (combos[k], k))
    return {
        "vendor": vendors[0],
        "rare_vendor": rare_vendor,
        "rare_app": rare_app,
        "mid_seq": mid,
        "mid_id": mid_rec[0].id,
        "mid_ts": mid_rec[0].begun,
        "no_mech_country": max(no_mech, key=lambda c: no_mech[c]) if no_mech else None,
    }


def list_rows(
    console: Any,
    client: Any,
    log: AuditLog,
    picked: dict[str, Any],
    args: argparse.Namespace,
    notes: list[str],
) -> list[Row]:
    from veilpix.console._index import Filters

    index = console.index
    nm = picked["no_mech_country"]
    rare = {"vendor": picked["rare_vendor"], "outcome": "unknown", "app": picked["rare_app"]}
    # what, summary name, console query, peer label, peer's summary name, peer's filters
    cases: list[tuple[str, str, dict[str, Any], str, str, dict[str, Any] | None]] = [
        ("first page", "first page", {}, "CLI list", "CLI list", {}),
        (
            "first page, just after a change [1]",
            "after a change",
            {},
            "(the first page's)",
            "",
            None,
        ),
        (
            f"vendor={picked['vendor']}",
            "vendor",
            {"vendor": picked["vendor"]},
            f"CLI list --vendor {picked['vendor']}",
            "CLI",
            {"vendor": picked["vendor"]},
        ),
        (
            f"vendor={rare['vendor']}, outcome=unknown, app={rare['app']}",
            "rare combination",
            rare,
            "CLI list --vendor --outcome --app",
            "CLI",
            rare,
        ),
        (
            "deep page: before=<the middle> [2]",
            "deep page",
            {"before": picked["mid_seq"]},
            "CLI list --until <its time>",
            "CLI --until",
            {"until": picked["mid_ts"]},
        ),
        (
            "country=third-no-mechanism [3]",
            "third country, no mechanism",
            {"country": "third-no-mechanism"},
            f"CLI list --country {nm}" if nm else "CLI list",
            f"CLI --country {nm}" if nm else "CLI unfiltered",
            {"country": nm} if nm else {},
        ),
    ]
    notes += [
        "[1] what a refresh that took in new entries does: the index's version moves on, the "
        "page makes the numpy copy of the columns again (the overview also computes its "
        "totals again); the log is not changed. Its peer's runs are the first page's",
        f"[2] before={picked['mid_seq']:,}; the CLI has no keyset paging: --until "
        f"{picked['mid_ts']} (that transfer's begin time) asks for the same rows",
        "[3] the CLI has no 'outside the EEA, no mechanism' filter: "
        + (
            f"--country {nm} (the third country with the most such transfers) is the nearest "
            "question it can ask; it also lists that country's blocked calls"
            if nm
            else "the filter is left out"
        ),
    ]
    rows: list[Row] = []
    for what, short, query, peer_label, peer_short, peer_args in cases:
        target = "/transfers" + (f"?{urlencode(query)}" if query else "")
        after_change = peer_args is None
        progress(f"list page: {what}")
        filters = Filters(**{k: v for k, v in query.items() if k != "before"})
        matches = index.page(filters, before=None, size=PAGE)[1]

        def console_page(target: str = target, after_change: bool = after_change) -> str:
            if after_change:
                changed(index)
            return page_text(client, target)

        def peer(peer_args: dict[str, Any] = peer_args or {}) -> list[Any]:
            return list(log.records(newest_first=True, limit=PAGE, **peer_args))

        if after_change:  # the peer answers the same question as for the first page
            c_runs, _ = alternate(console_page, None, args.repeat, args.budget)
            first = rows[0]
            rows.append(
                Row(
                    "list",
                    what,
                    c_runs,
                    f"{first.peer_label} [1]",
                    first.peer,
                    first.check,
                    first.note,
                    short,
                    first.peer_short,
                    borrowed=True,
                )
            )
            continue
        c_runs, p_runs = alternate(console_page, peer, args.repeat, args.budget)
        shown = _IDS.findall(console_page())
        theirs = [r.id for r in peer()]
        same = shown == theirs
        if not same and query.get("country") != "third-no-mechanism":
            raise BenchError(f"{target}: the console lists other transfers than the CLI")
        rows.append(
            Row(
                "list",
                what,
                c_runs,
                peer_label,
                p_runs,
                f"same {len(shown)}" if same else "differs",
                f"{matches:,} match",
                short,
                peer_short,
            )
        )
    return rows


def page_rows(
    console: Any,
    client: Any,
    log: AuditLog,
    picked: dict[str, Any],
    stats_runs: list[float],
    args: argparse.Namespace,
    notes: list[str],
) -> list[Row]:
    index = console.index
    rows = []
    progress("overview")

    def overview_changed() -> str:
        changed(index)
        return page_text(client, "/")

    c_runs, _ = alternate(overview_changed, None, args.repeat, args.budget)
    rows.append(
        Row(
            "pages",
            "overview, just after a change [1]",
            c_runs,
            "audit stats [4]",
            stats_runs,
            "",
            "totals computed",
            "overview after a change",
            "audit stats",
            borrowed=True,
        )
    )
    notes.append(
        "[4] the runs of the index build's peer (the full read), which answers the same question: "
        "totals per vendor, country and month"
    )
    c_runs, _ = alternate(lambda: page_text(client, "/"), None, args.repeat, args.budget)
    rows.append(
        Row("pages", "overview, viewed again", c_runs, note="memoized", short="overview again")
    )

    rid = picked["mid_id"]
    progress("a transfer's page")

    def detail() -> str:
        return page_text(client, f"/transfers/{rid}")

    c_runs, p_runs = alternate(detail, lambda: log.get(rid), args.repeat, args.budget)
    if rid not in detail():
        raise BenchError(f"/transfers/{rid}: the page does not name the transfer")
    rows.append(
        Row(
            "pages",
            "a transfer's page, by full id",
            c_runs,
            "CLI show: log.get(id)",
            p_runs,
            "",
            "the middle transfer",
            "transfer page",
            "CLI show",
        )
    )
    return rows


def lookup_rows(
    console: Any, client: Any, log: AuditLog, source: Source, args: argparse.Namespace
) -> tuple[list[Row], list[str]]:
    notes: list[str] = []
    if log.keys is None:
        return [], ["lookup: not measured (no key file: the log holds keyed fingerprints)"]
    csrf = client.csrf()
    photos = [("a miss (never sent)", source.miss, 0)]
    if source.hit is not None:
        count = count_clear_matches(log, source.hit)
        if count > args.max_hits:
            notes.append(
                f"lookup hit: not measured: the photo is in {count:,} transfers (in the clear "
                f"alone) and the CLI's --image path reads every match; --max-hits {args.max_hits:,}"
            )
        else:
            photos.append(("a hit", source.hit, source.hit_expected or -1))
    else:
        notes.append("lookup hit: not measured (give --hit-photo FILE, a photo the log holds)")
    rows = []
    for what, photo, expected in photos:
        progress(f"lookup: {what}")

        def console_lookup(photo: bytes = photo) -> str:
            return lookup_request(client, photo, csrf)

        def peer(photo: bytes = photo) -> list[Any]:
            return list(log.records(image=photo))

        use_peer = None if args.skip_slow_peers else peer
        c_runs, p_runs = alternate(console_lookup, use_peer, args.repeat, args.budget)
        found = lookup_count(console_lookup())
        if expected >= 0 and found != expected:
            raise BenchError(f"lookup {what}: {found} transfers found, {expected} expected")
        check = ""
        if use_peer is not None:
            theirs = len(peer())
            if theirs != found:
                raise BenchError(f"lookup {what}: the console finds {found}, the CLI {theirs}")
            check = "same count"
        label = f"{what}: {found:,} transfer{'s' if found != 1 else ''}" if found else what
        rows.append(
            Row(
                "lookup",
                label,
                c_runs,
                "CLI list --image" if use_peer else "(skipped: --skip-slow-peers)",
                p_runs,
                check,
                f"{len(photo):,} B JPEG",
                "hit" if found else "miss",
                "CLI --image",
            )
        )
    return rows, notes


def count_clear_matches(log: AuditLog, photo: bytes) -> int:
    """Begin entries holding ``photo``'s fingerprint in the clear (a guard before looking up
    a photo that may be in every transfer)."""
    wanted = log.fingerprint(photo)
    db = sqlite3.connect(f"file:{log.path}?mode=ro", uri=True)
    try:
        return int(
            db.execute(
                "SELECT count(*) FROM entries WHERE kind='begin' AND instr(body, ?) > 0",
                (wanted,),
            ).fetchone()[0]
        )
    finally:
        db.close()


def http_rows(console: Any, client: Any, repeat: int, budget: float) -> list[Row]:
    """GET /transfers over loopback (kept-alive, and a new connection each) vs in process."""
    from veilpix.console._serve import start

    console.start = lambda: None  # start() would rebuild the index and verify again
    running = start(console, port=0)
    # start() lets the console answer to its own address only; the in-process peer keeps its own
    console.settings = replace(console.settings, hosts=console.settings.hosts | {HOST})
    rows = []
    try:
        url = urlsplit(running.login_url())
        host, port = url.hostname or "127.0.0.1", url.port or 80
        conn = http.client.HTTPConnection(host, port, timeout=120)
        conn.request("GET", f"{url.path}?{url.query}")
        resp = conn.getresponse()
        resp.read()
        cookie = (resp.getheader("Set-Cookie") or "").split(";")[0]
        if resp.status != 303 or not cookie:
            raise BenchError(f"login over HTTP: status {resp.status}, no session cookie")

        def kept() -> bytes:
            conn.request("GET", "/transfers", headers={"Cookie": cookie})
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise BenchError(f"GET /transfers over HTTP: status {r.status}")
            return body

        def fresh() -> bytes:
            c = http.client.HTTPConnection(host, port, timeout=120)
            try:
                c.request("GET", "/transfers", headers={"Cookie": cookie})
                r = c.getresponse()
                body = r.read()
            finally:
                c.close()
            if r.status != 200:
                raise BenchError(f"GET /transfers over HTTP: status {r.status}")
            return body

        inproc = lambda: page_text(client, "/transfers")  # noqa: E731
        size = len(kept())
        for what, short, fn in (
            ("GET /transfers, kept-alive connection", "kept-alive", kept),
            ("GET /transfers, a new connection each", "new connection", fresh),
        ):
            progress(f"HTTP: {what}")
            c_runs, p_runs = alternate(fn, inproc, repeat, budget)
            cost = statistics.median(c_runs) - statistics.median(p_runs)
            rows.append(
                Row(
                    "http",
                    what,
                    c_runs,
                    "the same page in process",
                    p_runs,
                    "",
                    f"{size:,} B page; the socket adds {cost * 1000:+.2f} ms",
                    short,
                    "in process",
                )
            )
        conn.close()
    finally:
        running.stop()
    return rows


# --------------------------------------------------------------------------- report


def fmt_t(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds >= 1:
        return f"{seconds:,.2f} s"
    return f"{seconds * 1000:,.2f} ms" if seconds < 0.1 else f"{seconds * 1000:,.1f} ms"


def fmt_mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB" if abs(n) >= 10e6 else f"{n / 1e6:,.1f} MB"


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return ""
    return f"{r:.2g}×" if r < 0.1 else f"{r:.2f}×"


def summaries(doc: dict[str, Any]) -> list[str]:
    """One line per target, e.g. "transfers list, 1,000,000 records: first page 5.6 ms (CLI
    list 1.2 ms, 4.7x), ..."."""
    n = doc["log"]["transfers"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in doc["rows"]:
        groups.setdefault(r["group"], []).append(r)

    def pair(r: dict[str, Any]) -> str:
        text = f"{r['short'] or r['what']} {fmt_t(r['console_median_s'])}"
        if r["peer_median_s"] is not None and r["peer_short"]:
            text += f" ({r['peer_short']} {fmt_t(r['peer_median_s'])}, {fmt_ratio(r['ratio'])})"
        return text

    out = []
    mem = doc["memory"]
    b = groups["index"][0]
    out.append(
        f"index, {n:,} records: built in {fmt_t(b['console_median_s'])} in the background "
        f"(audit stats' full read {fmt_t(b['peer_median_s'])}, {fmt_ratio(b['ratio'])}); "
        f"{fmt_mb(mem['columns_bytes'])} of columns + a {fmt_mb(mem['snapshot_bytes'])} numpy "
        f"copy; RSS +{fmt_mb(mem['index_rss_kept'])} kept (the full read's peak "
        f"+{fmt_mb(mem['peer_rss_peak_growth'])})"
    )
    names = {
        "list": "transfers list",
        "pages": "other pages",
        "lookup": '"Was this photo sent?"',
        "http": "GET /transfers over HTTP (loopback)",
    }
    for group, name in names.items():
        if groups.get(group):
            out.append(f"{name}, {n:,} records: " + ", ".join(pair(r) for r in groups[group]))
    return out


def print_report(doc: dict[str, Any]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    lg = doc["log"]
    con.print(
        f"[bold]veilpix console benchmark[/] veilpix {doc['veilpix']}, Python {doc['python']}, "
        f"SQLite {doc['sqlite']}, numpy {doc['numpy']}, {doc['cores']} cores"
    )
    con.print(
        f"log: {lg['path']} ({lg['bytes'] / 1e9:.2f} GB, {lg['entries']:,} entries, "
        f"{lg['transfers']:,} transfers); {lg['source']}"
    )
    v = doc["verify"]
    con.print(
        f"verification (background job, once, context): {fmt_t(v['seconds'])} for "
        f"{v['entries']:,} entries, {'verified' if v['ok'] else 'intact' if v['intact'] else 'NOT intact'}"
    )
    con.print(
        f"medians of up to {doc['repeat']} runs ({doc['build_repeat']} for the build), console and "
        f"peer alternated; ratio = console ÷ peer, median of per-run ratios (below 1: the console "
        "is faster)"
    )
    table = Table(box=box.SIMPLE_HEAD)
    for col in ("what", "console", "peer", "peer time", "console ÷ peer", "runs", "check", "note"):
        table.add_column(
            col,
            justify="right"
            if col in ("console", "peer time", "console ÷ peer", "runs")
            else "left",
        )
    last = None
    for r in doc["rows"]:
        if last is not None and r["group"] != last:
            table.add_section()
        last = r["group"]
        table.add_row(
            r["what"],
            fmt_t(r["console_median_s"]),
            r["peer_label"],
            fmt_t(r["peer_median_s"]),
            fmt_ratio(r["ratio"]),
            f"{len(r['console'])}"
            + (f"/{len(r['peer'])}" if r["peer"] and not r["borrowed"] else "")
            + ("/–" if r["borrowed"] else ""),
            r["check"],
            r["note"],
        )
    con.print(table)
    mem = doc["memory"]
    con.print(
        f"memory: index columns {fmt_mb(mem['columns_bytes'])} (array buffers) + "
        f"{fmt_mb(mem['snapshot_bytes'])} numpy copy read by the pages; RSS growth of an index "
        f"build: peak +{fmt_mb(mem['index_rss_peak_growth'])}, kept +{fmt_mb(mem['index_rss_kept'])} "
        f"(before the numpy copy); the full read's peak +{fmt_mb(mem['peer_rss_peak_growth'])}; "
        f"{mem['open_transfers_tracked']:,} open transfers tracked by id"
    )
    for note in doc["notes"]:
        con.print(f"  {note}")
    con.print()
    for line in doc["summary"]:
        con.print(line)
    con.print(f"\nbench took {doc['bench_seconds']:.0f} s")


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace, rows: list[Row]) -> dict[str, Any]:
    """Every measurement, into ``rows`` as they finish (what a failure leaves is printed)."""
    import numpy as np

    from consolekit import Client  # type: ignore[import-not-found]  # tests/

    started = time.perf_counter()
    source = prepare(args)
    log = AuditLog(source.path, readonly=True, key_path=source.key)
    try:
        counts = log.counts()
        progress("reading the log file once (untimed), so every reader starts warm")
        with open(source.path, "rb") as fh:
            while fh.read(1 << 22):
                pass
        build, memory, console, _ = measure_build(log, args.build_repeat, args.budget)
        verify = measure_verify(console)
        client = Client(console).login()
        picked = pick(console, log)
        notes: list[str] = []
        rows.append(build)
        rows += list_rows(console, client, log, picked, args, notes)
        memory["snapshot_bytes"] = snapshot_bytes(console.index)
        rows += page_rows(console, client, log, picked, build.peer, args, notes)
        look, lookup_notes = lookup_rows(console, client, log, source, args)
        rows += look
        notes += lookup_notes
        rows += http_rows(console, client, args.repeat, args.budget)
        progress("")
    finally:
        log.close()
    doc: dict[str, Any] = {
        "veilpix": f"{veilpix.__version__} ({revision('sdk')})",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "numpy": np.__version__,
        "cores": os.cpu_count(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "log": {
            "path": str(source.path),
            "bytes": source.path.stat().st_size,
            "entries": counts["entries"],
            "transfers": counts["records"],
            "source": source.note,
        },
        "repeat": args.repeat,
        "build_repeat": args.build_repeat,
        "budget_s": args.budget,
        "picked": picked,
        "verify": verify,
        "memory": memory,
        "rows": [r.to_dict() for r in rows],
        "notes": notes,
        "maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    doc["summary"] = summaries(doc)
    doc["bench_seconds"] = round(time.perf_counter() - started, 1)
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="The compliance console (veilpix audit serve) on a large log, against the "
        "CLI's reads of the same log in the same run. The module docstring says exactly what "
        "is measured.",
    )
    ap.add_argument(
        "--records",
        type=int,
        default=1_000_000,
        help="transfers in the generated log (default 1000000; cached under "
        "$TMPDIR/veilpix-bench/; 20000 for a quick run)",
    )
    ap.add_argument("--fresh", action="store_true", help="generate the log again even if cached")
    ap.add_argument("--log", type=Path, help="bench this existing log instead of a generated one")
    ap.add_argument("--key", type=Path, help="the key file of --log (default: beside it)")
    ap.add_argument(
        "--hit-photo",
        type=Path,
        help="a photo the log holds, for the lookup's hit (default for generated logs: the "
        "needle photo, in 3 transfers)",
    )
    ap.add_argument(
        "--max-hits",
        type=int,
        default=1000,
        help="do not look up a hit photo that more transfers than this hold (default 1000; "
        "the CLI's --image path, the peer, reads every match)",
    )
    ap.add_argument("--repeat", type=int, default=9, help="runs per page (median; default 9)")
    ap.add_argument(
        "--build-repeat",
        type=int,
        default=3,
        help="runs of the index build and its peer (default 3)",
    )
    ap.add_argument(
        "--budget",
        type=float,
        default=20.0,
        help="seconds a row may take in all before it stops repeating (default 20; one run at "
        "least)",
    )
    ap.add_argument(
        "--skip-slow-peers",
        action="store_true",
        help="leave out the lookup's peer (the CLI's --image reads every transfer: about a "
        "minute on 1M)",
    )
    ap.add_argument("--json", action="store_true", help="print machine-readable results only")
    args = ap.parse_args(argv)
    if args.records < 100 or args.repeat < 1 or args.build_repeat < 1 or args.budget <= 0:
        ap.error("--records at least 100, --repeat and --build-repeat at least 1, --budget > 0")
    if args.hit_photo is not None and not args.hit_photo.is_file():
        ap.error(f"--hit-photo {args.hit_photo}: no such file")
    done: list[Row] = []
    try:
        doc = run(args, done)
    except BaseException as exc:
        progress("")
        if done:
            print("measured before the failure:", file=sys.stderr)
            for r in done:
                d = r.to_dict()
                peer = f"; {r.peer_label} {fmt_t(d['peer_median_s'])}" if r.peer else ""
                print(f"  {r.what}: {fmt_t(d['console_median_s'])}{peer}", file=sys.stderr)
        if isinstance(exc, KeyboardInterrupt):
            return 130
        if not isinstance(exc, (BenchError, veilpix.VeilpixError, OSError)):
            traceback.print_exc()
        print(f"bench/console.py: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc, indent=1, ensure_ascii=False))
    else:
        print_report(doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
