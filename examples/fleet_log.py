"""Several machines, one transfer log on PostgreSQL.

    python examples/fleet_log.py postgresql://USER@HOST:PORT/DATABASE [KEY_FILE]

The database should be an empty one you made for this (``createdb veilpix_demo``); the
password comes from PGPASSWORD, ~/.pgpass or the URL. No API keys, no network beyond the
database. KEY_FILE is where the fleet's key file is written (default: a new temporary
folder); on real machines it is copied, mode 0600, to every machine that writes.

What it shows:

1. three writers (standing in for three app servers or gateway workers) record calls at the
   same time, each on a chain of its own;
2. a photo is found whichever writer sent it, and a data subject is erased across all;
3. verify proves every writer's chain from the database alone and reports each writer;
4. someone with database access deletes the newest entries of one writer, checkpoints and
   all: verify names the writer.

Exit code 0 when every step behaved as described.
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

from veilpix import AuditLog, OutboundImage, Transfer, sanitize

PHOTO = (  # a tiny JPEG standing in for a customer's photo
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xdb\x00C\x00"
    + bytes(range(1, 65))
    + b"\xff\xc0\x00\x0b\x08\x00\x01\x00\x01\x01\x01\x11\x00\xff\xc4\x00\x14\x00\x01"
    + b"\x00" * 15
    + b"\x09\xff\xc4\x00\x14\x10\x01"
    + b"\x00" * 16
    + b"\xff\xda\x00\x08\x01\x01\x00\x00?\x00\x2a\xff\xd9"
)


def call(machine: int, i: int, subject: str | None = None) -> Transfer:
    image = OutboundImage(PHOTO, sanitize(PHOTO), "image[]") if i == 0 else None
    return Transfer(
        vendor="openai",
        url="https://api.openai.com/v1/images/edits",
        model="gpt-image-1",
        country="US",
        transfer_mechanism="EU-US Data Privacy Framework",
        app=f"shop-{machine}",
        purpose="product photo editing",
        legal_basis="contract",
        images=[image] if image else [],
        subject_ref=subject,
    )


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    url = sys.argv[1]
    key = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp()) / "fleet.key"

    # 1. three writers at once (threads here; processes or machines alike)
    def machine(m: int) -> None:
        with AuditLog(url, key_path=key, checkpoint_every=10) as log:
            for i in range(12):
                pending = log.begin(call(m, i, subject="customer-4711" if i == 5 else None))
                pending.finish(status=200)  # (the vendor call would go between the two)

    with AuditLog(url, key_path=key):  # the first open founds the fleet and its key file
        pass
    threads = [threading.Thread(target=machine, args=(m,)) for m in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    with AuditLog(url, key_path=key) as log:
        # 2. one photo, whoever sent it; one subject, erased everywhere
        sent = log.with_image(PHOTO)
        print(
            f"the photo was sent {len(sent)} times, by apps {sorted({r.who['app'] for r in sent})}"
        )
        erased = log.erase("customer-4711", request_ref="DSR-2026-7")
        print(f"erased the subject-linked fields of {erased.records} transfers")
        # 3. verify: every writer's chain, from the database alone
        result = log.verify()
    print(f"verify: {'OK' if result.ok else 'PROBLEMS'}, head {result.head}")
    for w in result.writers:
        print(f"  writer {w['writer']} ({w['name']}): {w['state']}, {w['entries']} entries")
    ok = result.ok and len(sent) == 3 and erased.records == 3

    # 4. tampering with one writer's chain, as someone with database access would
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        writer = min(w["writer"] for w in result.writers if w["entries"] >= 12)
        db.execute("DELETE FROM veilpix.entries WHERE writer = %s AND seq > 8", (writer,))
        db.execute("DELETE FROM veilpix.checkpoints WHERE writer = %s AND seq > 8", (writer,))
    with AuditLog(url, key_path=key, readonly=True) as log:
        after = log.verify()
    named = {p.writer for p in after.problems if p.kind != "unsigned-tail"}
    print(f"after deleting writer {writer}'s newest entries: {after.problems[0].message}")
    ok = ok and not after.ok and (writer in named or None in named)
    print("every step behaved as described" if ok else "something did not behave as described")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
