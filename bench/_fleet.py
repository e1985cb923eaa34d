"""bench/audit.py's PostgreSQL series: the fleet log (``AuditLog("postgresql://...")``) with
1, 4 and 8 writer processes against raw inserts through the same driver with the same
durability, in the same run, on a throwaway cluster on loopback (tests/pgkit.py: Debian's
server, fsync on).

* veilpix  each process opens its own fleet log handle (a writer with its own chain) on one
           database and writes ``pairs / N`` begin+finish pairs: the begin committed with
           ``synchronous_commit=on`` (on disk before the call may leave), the finish with it
           off (as the file log's finish is not fsynced).
* raw      each process, a psycopg connection (prepared statements, the same settings), does
           the same two transactions per pair with the same two rows veilpix stored (its
           bodies, a writer and seq, the hashes' bytes): INSERT + COMMIT (on), INSERT +
           COMMIT (off), each transaction in pipeline mode (one round trip), as veilpix's.

Both run ``repeat`` times, in an order rotated from run to run; the ratio is the median of
the per-run ratios. Total calls per second = pairs per second over all processes. Every
fleet log is verified afterwards (untimed): intact, one record per pair.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from _common import ROOT

sys.path.insert(0, str(ROOT / "tests"))  # pgkit: the throwaway cluster the tests use

import pgkit

RAW_TABLE = (
    "CREATE TABLE raw (pos bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " writer integer NOT NULL, seq bigint NOT NULL, kind text NOT NULL, record text,"
    " ts text NOT NULL, subject text, body text NOT NULL, prev bytea NOT NULL,"
    " hash bytea NOT NULL, mac bytea NOT NULL, UNIQUE (writer, seq))"
)
RAW_INSERT = (
    "INSERT INTO raw (writer, seq, kind, record, ts, subject, body, prev, hash, mac)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


@dataclass
class FleetSeries:
    writers: int
    pairs: int = 0  # per run, over all processes
    veilpix_runs: list[float] = field(default_factory=list)  # seconds
    raw_runs: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    veilpix_pairs_s: float = 0.0
    raw_pairs_s: float = 0.0
    ratio: float = 0.0
    verdict: str = ""
    chain: str = ""


def _worker(
    kind: str, url: str, key: str, count: int, transfers: Any, rows: Any, barrier: Any, queue: Any
) -> None:
    try:
        if kind == "veilpix":
            from audit import veilpix_pairs  # (bench/audit.py's own loop)

            from veilpix import AuditLog

            log = AuditLog(url, key_path=key)
            barrier.wait(60)
            t0 = time.perf_counter()
            veilpix_pairs(log, transfers, count)
            t1 = time.perf_counter()
            log.close()
        else:
            import os
            import uuid

            import psycopg

            db = psycopg.connect(url, autocommit=True, prepare_threshold=0)
            db.execute("SET synchronous_commit = on")
            writer = os.getpid()
            h = b"\x01" * 32
            barrier.wait(60)
            t0 = time.perf_counter()
            for i in range(count):
                rid = str(uuid.uuid4())
                # (pipeline mode, as veilpix's writer: one round trip per transaction)
                begin = (writer, 2 * i, "begin", rid, "t", None, rows.begin, h, h, h)
                finish = (writer, 2 * i + 1, "finish", rid, "t", None, rows.finish, h, h, h)
                with db.pipeline():
                    db.execute("BEGIN")
                    db.execute(RAW_INSERT, begin)
                    db.execute("COMMIT")
                with db.pipeline():
                    db.execute("BEGIN")
                    db.execute("SET LOCAL synchronous_commit = off")
                    db.execute(RAW_INSERT, finish)
                    db.execute("COMMIT")
            t1 = time.perf_counter()
            db.close()
        queue.put(("ok", t0, t1))
    except BaseException as exc:
        queue.put(("error", f"{type(exc).__name__}: {exc}", 0.0))


def _run(mp: Any, kind: str, url: str, key: str, writers: int, pairs: int, ctx: Any) -> float:
    from audit import in_processes  # (bench/audit.py's: one writer process each)

    per = pairs // writers
    args = [(kind, url, key, per, ctx.plain[k:] + ctx.plain[:k], ctx.rows) for k in range(writers)]
    return in_processes(mp, _worker, args, kind)


def run_fleet(
    ctx: Any, mp: Any, progress: Any, *, repeat: int, pairs: int, writers: tuple[int, ...]
) -> tuple[list[FleetSeries], str]:
    """The series; the server's version."""
    from veilpix import AuditLog

    cluster = pgkit.Cluster().start()
    try:
        version = str(cluster.sql("SHOW server_version")[0][0])
        series = []
        for n in writers:
            s = FleetSeries(n, pairs=(pairs // n) * n)
            url = cluster.database()
            key = str(ctx.tmp / f"fleet-{n}.key")
            AuditLog(url, key_path=key).close()  # founded untimed
            raw = cluster.database()
            cluster.sql(RAW_TABLE, db=raw.rsplit("/", 1)[1])
            for rep in range(repeat):
                order = ("veilpix", "raw") if rep % 2 == 0 else ("raw", "veilpix")
                took: dict[str, float] = {}
                for kind in order:
                    progress(f"PostgreSQL, {n} writer processes, run {rep + 1}/{repeat}: {kind}")
                    took[kind] = _run(
                        mp, kind, url if kind == "veilpix" else raw, key, n, pairs, ctx
                    )
                s.veilpix_runs.append(round(took["veilpix"], 4))
                s.raw_runs.append(round(took["raw"], 4))
                s.ratios.append(round(took["raw"] / took["veilpix"], 3))
            s.veilpix_pairs_s = s.pairs / statistics.median(s.veilpix_runs)
            s.raw_pairs_s = s.pairs / statistics.median(s.raw_runs)
            s.ratio = statistics.median(s.ratios)
            s.verdict = "PASS" if s.ratio >= 0.5 else "MISS"
            progress(f"PostgreSQL, {n} writers: verifying")
            with AuditLog(url, key_path=key, readonly=True) as ro:
                res = ro.verify()
            expected = s.pairs * repeat
            s.chain = (
                "ok"
                if res.intact and res.records == expected and res.pending == 0
                else f"{res.records} records (expected {expected}), intact={res.intact}"
            )
            series.append(s)
        return series, version
    finally:
        cluster.destroy()


def print_fleet(con: Any, doc: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    pg = doc["postgres"]
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"Fleet log on PostgreSQL {pg['server']} (loopback, fsync on): begin+finish pairs",
        title_justify="left",
    )
    for col in (
        "writer processes",
        "veilpix pairs/s",
        "raw pairs/s",
        "vp ÷ raw",
        "≥ 0.50",
        "runs vp (s)",
        "runs raw (s)",
        "chain",
    ):
        table.add_column(col, justify="left" if col in ("chain",) else "right")
    for s in pg["series"]:
        table.add_row(
            str(s["writers"]),
            f"{s['veilpix_pairs_s']:,.0f}",
            f"{s['raw_pairs_s']:,.0f}",
            f"{s['ratio']:.2f}×",
            {"PASS": "[green]PASS[/]", "MISS": "[red]MISS[/]"}.get(s["verdict"], ""),
            " ".join(f"{r:.2f}" for r in s["veilpix_runs"]),
            " ".join(f"{r:.2f}" for r in s["raw_runs"]),
            s["chain"],
        )
    con.print()
    con.print(table)
    con.print(
        f"  {pg['pairs']} pairs per series and run, {pg['repeat']} runs. A pair is one call: "
        "its begin committed durably (synchronous_commit=on)\n  before the call may leave, its "
        "finish after it (off). raw = the same two transactions and rows through psycopg,\n  "
        "no chain, no MAC, no signature, no finish check. Each veilpix process is a writer "
        "with its own chain and key."
    )


def fleet_targets(doc: dict[str, Any]) -> list[str]:
    out = [
        f"target PostgreSQL, {s['writers']} writer processes: {s['ratio']:.2f}× raw inserts "
        f"(median of {len(s['ratios'])} runs, range {min(s['ratios']):.2f}–"
        f"{max(s['ratios']):.2f}) ≥ 0.50: {s['verdict']}"
        for s in doc["postgres"]["series"]
    ]
    last = doc["postgres"]["series"][-1]
    out.append(
        f"PostgreSQL, {last['writers']} writer processes: {last['veilpix_pairs_s']:,.0f} calls/s "
        f"in all (raw: {last['raw_pairs_s']:,.0f})"
    )
    return out
