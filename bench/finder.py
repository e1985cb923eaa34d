"""Benchmark: the image finder (every request body searched for images, issue 14).

Three measurements, each against a peer measured in the same run:

* scan      10 MB bodies with no image, searched by ``Finder.rewrite_body`` and by the whole
            ``Guard.prepare`` (parse, policy, finder, the durable log ``begin``): a JSON chat
            request of English prose (the common case), the same prose as text/plain, and
            10 MB of random bytes. Peer: ``bytes.translate`` over the same body, the cheapest
            pass Python can make over every byte. Target: >= 200 MB/s for the finder.
* embedded  a 10 MB JSON body holding 20 camera JPEGs (about 360 KB each) as data URIs inside
            prose, and the same 20 photos in other places (a JSON Lines file in a zip in a
            multipart form, hex, base64 in a form field): ``Guard.prepare`` against
            ``veilpix.sanitize`` of the same 20 images alone (the peer): what finding,
            decoding and rebuilding add to the sanitizing that has to happen anyway.
* small     CPU time (``time.process_time``, all threads) per ``Guard.prepare`` + ``finish`` of
            a 160-byte Responses API body, this tree against ``--baseline`` (default: the
            commit before the finder landed), each in its own process, alternated
            ``--repeat`` times; the median of each. Target: within +10 %.

Usage::

    .venv/bin/python bench/finder.py                 # all three, 5 rounds
    .venv/bin/python bench/finder.py --only scan --json
    .venv/bin/python bench/finder.py --baseline abd88ef --repeat 9

The baseline is taken from git (``git archive``) into a temporary folder; nothing in the work
tree changes. Timings are comparable only within one run.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from _common import ROOT, SMALL, camera_exif, progress, revision, tree_at

MB = 1_000_000
WORDS = [
    "the",
    "a",
    "photo",
    "of",
    "light",
    "colour",
    "warm",
    "evening",
    "street",
    "market",
    "people",
    "walking",
    "under",
    "lanterns",
    "please",
    "describe",
    "mood",
    "composition",
    "background",
    "foreground",
    "and",
    "suggest",
    "three",
    "edits",
    "that",
    "keep",
    "the",
    "faces",
    "natural",
    "while",
    "making",
    "the",
    "sky",
    "more",
    "dramatic",
    "in",
    "2026",
    "with",
    "care",
]


def prose(size: int, seed: int = 7) -> str:
    rnd = random.Random(seed)
    out: list[str] = []
    n = 0
    while n < size:
        sentence = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(6, 18))) + ". "
        out.append(sentence.capitalize())
        n += len(sentence)
    return "".join(out)[:size]


def chat_body(size: int) -> bytes:
    text = prose(size - 2000)
    step = 20_000
    msgs = [
        {"role": "user" if i % 2 else "assistant", "content": text[i : i + step]}
        for i in range(0, len(text), step)
    ]
    return json.dumps({"model": "gpt-4.1", "messages": msgs}).encode()


def camera_jpeg(seed: int, side: int = 700) -> bytes:
    """A camera-like JPEG (noise, so it does not compress) with EXIF and GPS."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=85, exif=camera_exif())
    return buf.getvalue()


def best(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def guard_and_log(folder: Path) -> tuple[Any, Any]:
    from veilpix import AuditLog, Guard, Policy

    log = AuditLog(folder / "audit.db")
    return Guard(Policy(vendor_hosts={"127.0.0.1:9": "openai"}), log), log


def prepare(guard: Any, body: bytes, ctype: str | None, path: str = "/v1/responses") -> Any:
    from veilpix.guard import Outbound

    headers = [("Content-Type", ctype)] if ctype else []
    prepared = guard.prepare(Outbound("POST", f"http://127.0.0.1:9{path}", headers, body))
    prepared.finish(status=200)
    return prepared


# --------------------------------------------------------------------------- scan


def bench_scan(repeat: int) -> dict[str, Any]:
    from veilpix.finder import Finder

    table = bytes(range(256))[::-1]
    bodies = {
        "JSON chat, prose": (chat_body(10 * MB), "application/json"),
        "text/plain prose": (prose(10 * MB).encode(), "text/plain"),
        "random bytes": (random.Random(3).randbytes(10 * MB), "application/octet-stream"),
    }
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        guard, log = guard_and_log(Path(tmp))
        for name, (body, ctype) in bodies.items():
            progress(f"scan: {name}")
            mb = len(body) / MB

            def find(body: bytes = body, ctype: str = ctype) -> None:
                new, _ = Finder(lambda d, w, r: d).rewrite_body(body, ctype)
                assert new is body

            t_find = best(find, repeat)
            t_guard = best(lambda body=body, ctype=ctype: prepare(guard, body, ctype), repeat)
            t_peer = best(lambda body=body: body.translate(table), repeat)
            out[name] = {
                "mb": round(mb, 2),
                "finder_mb_s": round(mb / t_find),
                "guard_mb_s": round(mb / t_guard),
                "translate_mb_s": round(mb / t_peer),
                "finder_vs_translate": round(t_peer / t_find, 3),
            }
        log.close()
    return out


# --------------------------------------------------------------------------- embedded


def _embedded_bodies(photos: list[bytes]) -> dict[str, tuple[bytes, str, str]]:
    uris = [f"data:image/jpeg;base64,{base64.b64encode(p).decode()}" for p in photos]
    filler = prose(200_000)
    content = [{"type": "text", "text": filler[:8000]}]
    content += [{"type": "text", "text": f"here: ![photo]({uri}) {filler[:2000]}"} for uri in uris]
    chat = json.dumps({"model": "gpt-4.1", "messages": [{"role": "user", "content": content}]})
    lines = "\n".join(
        json.dumps({"custom_id": str(i), "body": {"image": u}}) for i, u in enumerate(uris)
    ).encode()
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("batch.jsonl", lines)
    form = (
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="batch.zip"\r\n'
        b"Content-Type: application/zip\r\n\r\n" + zbuf.getvalue() + b"\r\n--B--\r\n"
    )
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w:gz") as t:
        for i, p in enumerate(photos):
            info = tarfile.TarInfo(f"p{i}.jpg")
            info.size = len(p)
            t.addfile(info, io.BytesIO(p))
    hexed = json.dumps({"images": [p.hex() for p in photos]}).encode()
    return {
        "data URIs in prose, JSON": (chat.encode(), "application/json", "/v1/chat/completions"),
        "JSONL in zip in multipart": (form, "multipart/form-data; boundary=B", "/v1/files"),
        "tar.gz, no Content-Type": (tbuf.getvalue(), "", "/v1/files"),
        "hex strings in JSON": (hexed, "application/json", "/v1/responses"),
    }


def bench_embedded(repeat: int) -> dict[str, Any]:
    import veilpix

    progress("embedded: making 20 photos")
    photos = [camera_jpeg(seed) for seed in range(20)]
    policy = veilpix.Policy()

    def alone() -> None:
        for p in photos:
            veilpix.sanitize(p, policy)

    out: dict[str, Any] = {
        "photos": len(photos),
        "photo_kb": round(statistics.mean(map(len, photos)) / 1000),
    }
    t_alone = best(alone, repeat)
    out["sanitize_alone_ms"] = round(t_alone * 1000, 1)
    with tempfile.TemporaryDirectory() as tmp:
        guard, log = guard_and_log(Path(tmp))
        for name, (body, ctype, path) in _embedded_bodies(photos).items():
            progress(f"embedded: {name}")
            first = prepare(guard, body, ctype or None, path)
            assert len(first.receipt.images) == len(photos), (name, len(first.receipt.images))
            t = best(
                lambda body=body, ctype=ctype, path=path: prepare(guard, body, ctype or None, path),
                repeat,
            )
            out[name] = {
                "mb": round(len(body) / MB, 2),
                "guard_ms": round(t * 1000, 1),
                "vs_sanitize_alone": round(t / t_alone, 3),
                "added_ms": round((t - t_alone) * 1000, 1),
            }
        log.close()
    return out


# --------------------------------------------------------------------------- small calls

_CHILD = r"""
import json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import veilpix
from veilpix import AuditLog, Context, Guard, Outbound, Policy  # public: any revision has them
n = int(sys.argv[2]); body = sys.argv[3].encode()
with tempfile.TemporaryDirectory() as tmp:
    log = AuditLog(Path(tmp) / "a.db")
    guard = Guard(Policy(vendor_hosts={"127.0.0.1:9": "openai"}), log)
    req = lambda: Outbound("POST", "http://127.0.0.1:9/v1/responses",
                           [("Content-Type", "application/json"), ("Authorization", "Bearer sk-x")], body)
    ctx = Context()
    for _ in range(300):
        guard.prepare(req()).finish(status=200)
    start = time.process_time()
    for _ in range(n):  # the pipeline alone: parse, policy, finder, rebuild (no log)
        guard._run(req(), ctx, None)
    pipeline = time.process_time() - start
    start = time.process_time()
    for _ in range(n):  # and with the durable log, as a door runs it
        guard.prepare(req()).finish(status=200)
    whole = time.process_time() - start
    log.close()
print(json.dumps({"pipeline": pipeline / n * 1e6, "whole": whole / n * 1e6,
                  "veilpix": veilpix.__file__}))
"""


def default_baseline() -> str:
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", "sdk/_finder.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    return f"{added[-1]}^" if added else "HEAD"


def bench_small(baseline: str, repeat: int, n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        trees = {
            "this tree": tree_at(None, Path(tmp) / "now"),
            baseline: tree_at(baseline, Path(tmp) / "base"),
        }
        samples: dict[str, dict[str, list[float]]] = {
            k: {"pipeline": [], "whole": []} for k in trees
        }
        for r in range(repeat):
            order = list(trees) if r % 2 == 0 else list(trees)[::-1]
            for name in order:
                progress(f"small calls: {name}, round {r + 1}/{repeat}")
                env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
                got = subprocess.run(
                    [sys.executable, "-c", _CHILD, str(trees[name]), str(n), SMALL.decode()],
                    check=True,
                    capture_output=True,
                    text=True,
                    timeout=600,
                    env=env,
                    cwd=tmp,
                )
                result = json.loads(got.stdout)
                assert result["veilpix"].startswith(str(trees[name])), result
                for key in ("pipeline", "whole"):
                    samples[name][key].append(result[key])
    out: dict[str, Any] = {"baseline": baseline}
    for key in ("pipeline", "whole"):
        now, base = (statistics.median(samples[k][key]) for k in trees)
        out[key] = {
            "this tree": round(now, 1),
            baseline: round(base, 1),
            "change": round(now / base - 1, 4),
            "samples": {k: [round(v, 1) for v in samples[k][key]] for k in trees},
        }
    return out


# --------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--only", choices=("scan", "embedded", "small"), help="one measurement")
    ap.add_argument("--repeat", type=int, default=5, help="rounds per measurement (5)")
    ap.add_argument("--n", type=int, default=3000, help="small calls per process (3000)")
    ap.add_argument(
        "--baseline",
        help="git revision for the small-call peer (default: the "
        "commit before sdk/_finder.py was added)",
    )
    ap.add_argument("--json", action="store_true", help="print machine-readable results only")
    args = ap.parse_args()
    if args.repeat < 1 or args.n < 1:
        ap.error("--repeat and --n must be at least 1")
    results: dict[str, Any] = {"revision": revision("sdk", "proxy", "adapters")}
    if args.only in (None, "scan"):
        results["scan"] = bench_scan(args.repeat)
    if args.only in (None, "embedded"):
        results["embedded"] = bench_embedded(args.repeat)
    if args.only in (None, "small"):
        results["small"] = bench_small(args.baseline or default_baseline(), args.repeat, args.n)
    progress("")
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"veilpix {results['revision']}, {os.cpu_count()} cores")
    if "scan" in results:
        print("\n10 MB bodies with no image (best of", args.repeat, "rounds)")
        print(f"  {'body':24} {'finder MB/s':>12} {'guard MB/s':>11} {'translate MB/s':>15}")
        for name, r in results["scan"].items():
            print(
                f"  {name:24} {r['finder_mb_s']:>12,} {r['guard_mb_s']:>11,} {r['translate_mb_s']:>15,}"
            )
        text_bodies = {k: r for k, r in results["scan"].items() if k != "random bytes"}
        worst = min(r["finder_mb_s"] for r in text_bodies.values())
        print(
            f"  target: finder >= 200 MB/s on a 10 MB request body with no image (JSON, text): "
            f"{'met' if worst >= 200 else 'NOT met'} ({worst:,} MB/s at worst); unknown "
            f"binary: {results['scan']['random bytes']['finder_mb_s']:,} MB/s "
            "(every image signature looked for at every offset)"
        )
    if "embedded" in results:
        e = results["embedded"]
        print(
            f"\n{e['photos']} camera JPEGs of about {e['photo_kb']} KB: sanitize alone {e['sanitize_alone_ms']} ms"
        )
        print(f"  {'body':28} {'MB':>6} {'guard ms':>9} {'x sanitize alone':>17} {'added ms':>9}")
        for name, r in e.items():
            if isinstance(r, dict):
                print(
                    f"  {name:28} {r['mb']:>6} {r['guard_ms']:>9} {r['vs_sanitize_alone']:>17} {r['added_ms']:>9}"
                )
    if "small" in results:
        s = results["small"]
        print(f"\nsmall JSON call, CPU per call (median of {args.repeat} processes x {args.n})")
        for key, what in (("pipeline", "pipeline (no log)"), ("whole", "prepare + finish")):
            r = s[key]
            now, base = r["this tree"], r[s["baseline"]]
            verdict = "met" if r["change"] <= 0.10 else "NOT met"
            print(
                f"  {what:18} this tree {now} us, {s['baseline'][:12]} {base} us: "
                f"{r['change']:+.1%} (target <= +10 %: {verdict})"
            )


if __name__ == "__main__":
    main()
