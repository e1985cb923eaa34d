"""Benchmark: which PostgreSQL driver the fleet log uses, chosen by measurement.

The fleet log's writer does one thing many times: a transaction that inserts a few entry rows
(a begin is ~1.8 kB of JSON text plus three 32-byte hashes; a finish ~150 B) and commits with
``synchronous_commit=on`` (durable before the call may leave). Both candidates do exactly that
here, against the same throwaway cluster (``tests/pgkit.py``: Debian's server on loopback,
fsync on), in the same run:

* psycopg 3    synchronous, the way veilpix's writer thread uses it: server-side prepared
               statements (prepare_threshold=0), ``executemany`` in pipeline mode, binary
               parameters.
* asyncpg      its own event loop, ``executemany`` on a prepared statement, awaited. The
               writer would need a loop thread of its own to use it (its callers are threads
               and event loops of all kinds); that hop is not counted here.

Series: transactions of 1 row (a lone begin) and of 16 rows (a group commit under load), one
connection; then 8 connections at once (8 processes' writers), rows per second in all.

    python bench/pg_driver.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import secrets
import sys
import time
from typing import Any

from _common import ROOT, revision

sys.path.insert(0, str(ROOT / "tests"))  # pgkit: the throwaway cluster the tests use

import pgkit

TABLE = (
    "CREATE TABLE IF NOT EXISTS e(writer int NOT NULL, seq bigint NOT NULL, kind text NOT NULL,"
    " record text, ts text NOT NULL, subject text, body text NOT NULL, prev bytea NOT NULL,"
    " hash bytea NOT NULL, mac bytea NOT NULL, PRIMARY KEY (writer, seq))"
)
BODY = json.dumps({"pad": "x" * 1750})


def rows(writer: int, start: int, n: int) -> list[tuple[Any, ...]]:
    h = secrets.token_bytes(32)
    return [
        (writer, s, "begin", f"r{s}", "2026-12-07T00:00:00.000000Z", None, BODY, h, h, h)
        for s in range(start, start + n)
    ]


INSERT_PG = "INSERT INTO e VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
COPY_PG = "COPY e FROM STDIN"
INSERT_APG = "INSERT INTO e VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"


def run_psycopg(url: str, writer: int, batch: int, seconds: float) -> tuple[int, float]:
    import psycopg

    done = 0
    with psycopg.connect(url, prepare_threshold=0) as conn:
        t0 = time.perf_counter()
        end = t0 + seconds
        seq = 1
        while time.perf_counter() < end:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(INSERT_PG, rows(writer, seq, batch))
            seq += batch
            done += batch
        return done, time.perf_counter() - t0


def run_psycopg_copy(url: str, writer: int, batch: int, seconds: float) -> tuple[int, float]:
    import psycopg

    done = 0
    with psycopg.connect(url) as conn:
        t0 = time.perf_counter()
        end = t0 + seconds
        seq = 1
        while time.perf_counter() < end:
            with conn.transaction(), conn.cursor() as cur, cur.copy(COPY_PG) as copy:
                for row in rows(writer, seq, batch):
                    copy.write_row(row)
            seq += batch
            done += batch
        return done, time.perf_counter() - t0


def run_asyncpg(url: str, writer: int, batch: int, seconds: float) -> tuple[int, float]:
    import asyncpg

    async def main() -> tuple[int, float]:
        conn = await asyncpg.connect(url)
        try:
            stmt = await conn.prepare(INSERT_APG)
            done, seq = 0, 1
            t0 = time.perf_counter()
            end = t0 + seconds
            while time.perf_counter() < end:
                async with conn.transaction():
                    await stmt.executemany(rows(writer, seq, batch))
                seq += batch
                done += batch
            return done, time.perf_counter() - t0
        finally:
            await conn.close()

    return asyncio.run(main())


RUNNERS = {"psycopg": run_psycopg, "psycopg COPY": run_psycopg_copy, "asyncpg": run_asyncpg}
# (asyncpg is the peer only: pip install asyncpg to run this script; veilpix does not use it)


def _worker(args: tuple[str, str, int, int, float]) -> tuple[int, float]:
    name, url, writer, batch, seconds = args
    return RUNNERS[name](url, writer, batch, seconds)


def measure(cluster: pgkit.Cluster, name: str, batch: int, procs: int, seconds: float) -> float:
    url = cluster.database()
    cluster.sql(TABLE, db=url.rsplit("/", 1)[1])
    ctx = mp.get_context("spawn")
    with ctx.Pool(procs) as pool:
        pool.map(_imports, range(procs))  # the drivers imported before the clock starts
        done = pool.map(_worker, [(name, url, w, batch, seconds) for w in range(1, procs + 1)])
    # each connection timed itself over the same span: rows per second over all of them
    return sum(n for n, _ in done) / max(t for _, t in done)


def _imports(_: int) -> None:
    import asyncpg  # noqa: F401
    import psycopg  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per series (default 3)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    reason = pgkit.skip_reason()
    try:
        import asyncpg  # noqa: F401 - the peer, installed for this script only
    except ImportError:
        reason = reason or "asyncpg, the peer, is not installed: pip install asyncpg"
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    cluster = pgkit.Cluster().start()
    out: dict[str, Any] = {"revision": revision("bench"), "cpus": os.cpu_count(), "series": []}
    try:
        for procs, batch in ((1, 1), (1, 16), (8, 1), (8, 16)):
            line = {"connections": procs, "rows_per_txn": batch}
            for name in RUNNERS:
                # one warm-up pass (spawned interpreters, the server's caches), then the count
                measure(cluster, name, batch, procs, 0.5)
                line[name] = measure(cluster, name, batch, procs, args.seconds)
            best = max(line["psycopg"], line["psycopg COPY"])
            line["psycopg/asyncpg"] = best / line["asyncpg"]
            out["series"].append(line)
            if not args.json:
                print(
                    f"{procs} conn, {batch:2d} rows/txn: "
                    + "   ".join(f"{n} {line[n]:8,.0f}" for n in RUNNERS)
                    + f"  rows/s   psycopg's best / asyncpg {line['psycopg/asyncpg']:.2f}x",
                    flush=True,
                )
    finally:
        cluster.destroy()
    if args.json:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
