"""What the transfer log does when someone without its key file changes it, and how to start
over on the record.

    python examples/log_integrity.py [FOLDER]

No network and no API keys. Everything is written into FOLDER (default: a new temporary
folder). The script plays both sides:

1. an app records three calls;
2. someone who can write the log file, but not read its key file, moves one call from the
   US to Germany with plain sqlite3 and recomputes the SHA-256 chain after it (the
   algorithm is public), while the app is still running;
3. the app's next call is refused (nothing would be sent), and verify names the entry;
4. the log file is then deleted; a new writer refuses to found a new log under the old key
   file, and ``veilpix audit restart`` starts over with a signed statement that verify shows
   from then on. The changed log is kept, moved aside, and still verifies as tampered.

Exit code 0 when every step behaved as described.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from veilpix import AuditLog, LogIntegrityError, Transfer, restart_log, verify_log


def entry_hash(  # noqa: PLR0917 - one argument per hashed column
    prev: bytes, seq: int, kind: str, record: str | None, ts: str, subject: str | None, body: str
) -> bytes:
    """The log's entry hash, written out from the docs: anyone can compute it."""
    fields = json.dumps(
        [seq, kind, record, ts, subject, body],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(b"veilpix-audit-entry/1\0" + prev + fields.encode()).digest()


def call(i: int) -> Transfer:
    """A stand-in for one image edit sent to OpenAI (no image: the log is the point here)."""
    return Transfer(
        vendor="openai",
        url="https://api.openai.com/v1/images/edits",
        model="gpt-image-1",
        country="US",
        app="shop",
        purpose="product photo editing",
        legal_basis="contract",
        prompt=f"remove the background, photo {i}",
    )


def forge(path: Path, seq: int) -> None:
    """Edit entry ``seq`` and rebuild the hash chain after it, as a forger would."""
    db = sqlite3.connect(path, isolation_level=None)
    body = json.loads(db.execute("SELECT body FROM entries WHERE seq=?", (seq,)).fetchone()[0])
    body["where"]["country"] = "DE"
    db.execute(
        "UPDATE entries SET body=? WHERE seq=?",
        (json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False), seq),
    )
    prev = db.execute("SELECT hash FROM entries WHERE seq=?", (seq - 1,)).fetchone()[0]
    rows = db.execute(
        "SELECT seq, kind, record, ts, subject, body FROM entries WHERE seq>=? ORDER BY seq",
        (seq,),
    ).fetchall()
    for s, kind, record, ts, subject, text in rows:
        digest = entry_hash(prev, s, kind, record, ts, subject, text)
        db.execute("UPDATE entries SET prev=?, hash=? WHERE seq=?", (prev, digest, s))
        prev = digest
    db.close()


def veilpix(*args: str) -> int:
    cmd = [sys.executable, "-m", "veilpix", *args]
    print(f"\n$ veilpix {shlex.join(args)}", flush=True)
    return subprocess.run(cmd, check=False).returncode


def main(folder: Path) -> int:
    log_path = folder / "audit.db"
    ok = True

    print("1. the app records three calls")
    log = AuditLog(log_path, checkpoint_seconds=3600)
    for i in range(3):
        log.begin(call(i)).finish(status=200)

    print("2. someone without the key file moves call 2 to Germany and rebuilds the chain")
    forge(log_path, 3)  # entries: 1 begin, 2 finish, 3 begin (call 2), ...

    print("3. the app's next call:")
    try:
        log.begin(call(3))
        print("   recorded: THIS SHOULD NOT HAPPEN")
        ok = False
    except LogIntegrityError as exc:
        print(f"   refused, nothing sent: {exc.message}")
    try:
        log.close()  # the app stops; closing does not sign the changed entries either
    except LogIntegrityError as exc:
        print(f"   and on close: {exc.message[:60]}...")
    result = verify_log(log_path)
    ok &= [(p.kind, p.seq) for p in result.problems][:1] == [("forged", 3)]
    ok &= veilpix("audit", "verify", "--log", str(log_path)) == 1

    print("\n4. the log file is deleted; the next writer refuses to start a new one:")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{log_path}{suffix}").unlink(missing_ok=True)
    try:
        AuditLog(log_path)
        ok = False
    except LogIntegrityError as exc:
        print(f"   {exc.message}")
    done = restart_log(log_path, reason="log file deleted; no backup (example)")
    print(f"   restarted: new log {done.log_id}, first entry = the signed statement")
    ok &= veilpix("audit", "verify", "--log", str(log_path)) == 0
    ok &= verify_log(log_path).restarts[0]["found"] == "missing"
    print("\nall steps behaved as described" if ok else "\nSOMETHING DID NOT BEHAVE")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1:
        target = Path(sys.argv[1])
        target.mkdir(parents=True, exist_ok=True)
        sys.exit(main(target))
    with tempfile.TemporaryDirectory(prefix="veilpix-integrity-") as tmp:
        sys.exit(main(Path(tmp)))
