"""The transfer log: lifecycle, what it stores and what it never stores, keys, erasure,
retention, concurrency across threads and processes, crashes and failing disks."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import factories
import veilpix
from auditkit import API_KEY, CLEAN, GOOGLE_KEY, PHOTO, PROMPT, file_bytes, fill, raw, transfer
from veilpix import AuditLog, AuditLogError, ConfigError, OutboundImage, verify_log
from veilpix._config import default_log_path, parse_age
from veilpix.audit._record import redact_headers, redact_url, scrub_secrets
from veilpix.audit._store import connect, key_path_for

TESTS = Path(__file__).resolve().parent.parent  # tests/: auditkit and the other helpers


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return env


# -- store --------------------------------------------------------------------------------------


def test_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "audit.db"
    with AuditLog(path) as log:
        fill(log, 1)
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        for p in (path, key_path_for(path), *(Path(f"{path}-{s}") for s in ("wal", "shm", "lock"))):
            assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p
    assert raw(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
@pytest.mark.parametrize("which", ["log", "key"])
def test_a_log_or_key_file_open_to_other_users_is_refused(tmp_path: Path, which: str) -> None:
    """Refused with the command that fixes it; veilpix does not change the mode itself (a
    key others could read may have been copied: its owner should know). Reviewers can still
    read a log that is open to their group."""
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        fill(log, 1)
    target = path if which == "log" else key_path_for(path)
    target.chmod(0o644)
    error = AuditLogError if which == "log" else ConfigError
    with pytest.raises(error, match="open to other users \\(mode 0644\\)") as err:
        AuditLog(path)
    assert "chmod 600" in err.value.hint
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not changed behind the owner's back
    if which == "log":
        with AuditLog(path, readonly=True) as reader:
            assert len(list(reader.records())) == 1


def test_a_log_file_removed_or_replaced_while_open_refuses_to_record(tmp_path: Path) -> None:
    """SQLite would go on writing to the removed file's inode: every record lost."""
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        fill(log, 1)
        moved = tmp_path / "moved.db"
        path.rename(moved)
        with pytest.raises(AuditLogError, match="is gone"):
            log.begin(transfer())
        moved.rename(path)
        log.begin(transfer()).finish(status=200)  # back where it belongs: writing resumes
        path.rename(moved)
        path.write_bytes(moved.read_bytes())  # a copy in its place is another file
        with pytest.raises(AuditLogError, match="replaced"):
            log.begin(transfer())
        path.unlink()
        moved.rename(path)


_IMMUTABLE_CHILD = """
import os, subprocess, sys
sys.path.insert(0, sys.argv[2])
import veilpix
from auditkit import fill, transfer
log = veilpix.AuditLog(sys.argv[1])
fill(log, 3)
folder = os.path.dirname(sys.argv[1])
names = [os.path.join(folder, n) for n in os.listdir(folder)]
subprocess.run(["chattr", "+i", *names], check=True)
try:
    for _ in range(200):
        log.begin(transfer())
    print("RECORDED")
except veilpix.AuditLogError as exc:
    print("REFUSED", exc.message)
finally:
    subprocess.run(["chattr", "-i", *names], check=True)
"""


def test_immutable_log_files_refuse_to_record_instead_of_crashing(tmp_path: Path) -> None:
    """Making the files immutable mid-run used to kill the process with SIGBUS (SQLite's
    shared-memory index): now every call is refused with AuditLogError (a 503 at the
    proxy). Run in a child: a crash must not take the test runner with it."""
    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    try:
        subprocess.run(["chattr", "+i", str(probe)], check=True, capture_output=True, timeout=10)
        subprocess.run(["chattr", "-i", str(probe)], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("chattr +i is not available here (needs CAP_LINUX_IMMUTABLE)")
    folder = tmp_path / "log"
    folder.mkdir()
    tests = str(TESTS)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _IMMUTABLE_CHILD, str(folder / "audit.db"), tests],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=child_env(),
        )
    finally:  # whatever became of the child: no immutable file left for pytest's clean-up
        subprocess.run(
            ["chattr", "-R", "-i", str(folder)], check=False, capture_output=True, timeout=30
        )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "REFUSED" in proc.stdout and "cannot be written" in proc.stdout, proc.stdout


def test_log_location_from_env_and_platformdirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VEILPIX_LOG", str(tmp_path / "env.db"))
    assert default_log_path() == tmp_path / "env.db"
    monkeypatch.delenv("VEILPIX_LOG")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "xdg" / "veilpix" / "audit.db"
    if sys.platform == "linux":
        assert default_log_path() == expected
    with AuditLog() as log:
        fill(log, 1)
        assert log.path == default_log_path()
    assert verify_log(default_log_path()).ok


def test_begin_is_durable_before_the_call_and_pending_reads_as_unknown(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    log = AuditLog(path)
    pending = log.begin(transfer())
    # Another reader (another process would see the same) finds it before any finish.
    with AuditLog(path, readonly=True) as reader:
        (rec,) = reader.records()
        assert rec.id == pending.id and rec.outcome == "unknown" and rec.finish is None
    pending.finish(status=200, response_bytes=10)
    with AuditLog(path, readonly=True) as reader:
        (rec,) = reader.records()
        assert rec.outcome == "sent" and rec.to_dict()["status"] == 200
        assert rec.to_dict()["latency_ms"] >= 0
    log.close()


def test_record_context_finishes_failed_on_error(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "a.db") as log:
        with pytest.raises(TimeoutError), log.record(transfer()):
            raise TimeoutError(f"read timed out (Bearer {API_KEY})")
        with log.record(transfer()):
            pass
        failed, silent = log.records()
    assert failed.outcome == "failed" and failed.to_dict()["reason"].startswith("TimeoutError")
    assert API_KEY not in failed.to_dict()["reason"]
    assert silent.outcome == "failed" and silent.to_dict()["reason"] == "no response recorded"


def test_block_records_reason_and_rule(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "a.db") as log:
        rid = log.block(transfer(), reason="vendor not allowed", rule="vendors.allowed")
        rec = log.get(rid[:8])
    d = rec.to_dict()
    assert (d["outcome"], d["reason"], d["rule"]) == (
        "blocked",
        "vendor not allowed",
        "vendors.allowed",
    )


def test_finish_twice_or_unknown_is_refused(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "a.db") as log:
        pending = log.begin(transfer())
        pending.finish(status=200)
        with pytest.raises(AuditLogError, match="already finished"):
            log.finish(pending.id, status=500)
        with pytest.raises(AuditLogError, match="no begun transfer"):
            log.finish("nope", status=200)
        with pytest.raises(ConfigError):
            log.finish(pending.id, outcome="maybe")  # type: ignore[arg-type]


# -- fields --------------------------------------------------------------------------------------


def test_who_what_where_why_are_recorded(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "a.db", mechanisms={"gemini": "SCCs (module 2)"}) as log:
        fill(log, 1, client="10.1.2.3", door="gateway", transfer_mechanism=None, consent_ref="c-1")
        (rec,) = log.records()
    d = rec.to_dict()
    assert d["who"] == {"app": "shop", "actor": "user-0", "client": "10.1.2.3", "door": "gateway"}
    w = d["where"]
    assert (w["vendor"], w["host"], w["country"], w["legal_entity"]) == (
        "gemini",
        "api.openai.com",
        "NL",
        "OpenAI, L.L.C.",
    )
    assert w["transfer_mechanism"] == "SCCs (module 2)"  # from the log's configuration
    assert d["why"]["purpose"] == "product photo editing" and d["why"]["consent_ref"] == "c-1"
    (img,) = d["what"]["images"]
    r = CLEAN.report
    assert (img["width_before"], img["width_after"], img["bytes_before"], img["bytes_after"]) == (
        r.width_in,
        r.width_out,
        len(PHOTO),
        len(CLEAN.data),
    )
    assert img["gps_removed"] and "gps" in img["metadata_found"] and img["metadata_removed"]
    assert img["faces_checked"] is False and img["faces_unblurred"] is None
    assert "image (faces not checked)" in d["what"]["categories"]
    assert d["what"]["prompt"]["length"] == len(PROMPT)
    assert d["controls"] == {
        "applied": ["content-usage-header"],
        "account_level": ["zero-data-retention"],
        "unavailable": [],
    }


def test_faces_blurred_and_unblurred_are_counted(tmp_path: Path) -> None:
    from dataclasses import replace

    report = replace(CLEAN.report, faces_checked=True, faces_found=3, faces_blurred=2)
    image = OutboundImage(PHOTO, replace(CLEAN, report=report), "image")
    with AuditLog(tmp_path / "a.db") as log:
        fill(log, 1, images=[image])
        (rec,) = log.records()
    assert rec.faces_unblurred == 1
    cats = rec.to_dict()["what"]["categories"]
    assert "face image (unblurred)" in cats and "face image (blurred)" in cats


def test_nothing_secret_or_identifying_reaches_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AuditLog(path) as log:
        fill(log, 3, consent_ref="consent-form-77", subject_ref="customer-4711")
        fill(log, 2)
        log.block(transfer(), reason=f"upstream said: invalid key {API_KEY}", rule="x")
        stored = file_bytes(path)
    for secret in (
        API_KEY,
        GOOGLE_KEY,
        PROMPT,
        "consent-form-77",
        "customer-4711",
        factories.SECRET,
        factories.SERIAL,
        factories.COMMENT,
        hashlib.sha256(PHOTO).hexdigest(),
        hashlib.sha256(CLEAN.data).hexdigest(),
        f"{factories.GPS[0]:.4f}",
    ):
        assert secret.encode() not in stored, secret
    assert b"[redacted]" in stored


def test_fingerprints_are_keyed_per_log(tmp_path: Path) -> None:
    a, b = AuditLog(tmp_path / "a.db"), AuditLog(tmp_path / "b.db")
    assert a.fingerprint(PHOTO) != b.fingerprint(PHOTO)
    assert a.fingerprint(PHOTO) != hashlib.sha256(PHOTO).hexdigest()
    fill(a, 2)
    fill(a, 1, images=[OutboundImage(factories.png(), veilpix.sanitize(factories.png()), "image")])
    assert len(list(a.records(image=PHOTO))) == 2
    assert len(list(a.records(image=CLEAN.data))) == 2  # the bytes as sent match too
    assert len(list(a.records(image=factories.png()))) == 1
    a.close()
    b.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"https://generativelanguage.googleapis.com/v1beta/models/x:generateContent?key={GOOGLE_KEY}",
            "https://generativelanguage.googleapis.com/v1beta/models/x:generateContent?key=[redacted]",
        ),
        (
            "https://user:pw@api.example.com/v1/a?alt=sse&X-Amz-Signature=abc#frag",
            "https://api.example.com/v1/a?alt=sse&X-Amz-Signature=[redacted]",
        ),
        ("http://127.0.0.1:9000/v1/images/edits", "http://127.0.0.1:9000/v1/images/edits"),
        (f"https://x.test/{API_KEY}/upload", "https://x.test/[redacted]/upload"),
    ],
)
def test_urls_lose_their_credentials(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_headers_and_text_lose_their_credentials() -> None:
    fal = "Key 3b9a3c5e-1f2a-4b7c-9d8e-0a1b2c3d4e5f:9f8e7d6c5b4a39281706f5e4d3c2b1a0"
    headers = redact_headers(
        {
            "Authorization": fal,
            "api-key": "azure-123",
            "x-api-key": "sk-ant-x",
            "X-Goog-Api-Key": "g",
            "x-key": "bfl",
            "X-Veilpix-Token": "t",
            "Cookie": "s=1",
            "User-Agent": "OpenAI/Python 3.0",
            "x-custom-auth-thing": "v",
        }
    )
    assert headers.pop("user-agent") == "OpenAI/Python 3.0"
    assert set(headers.values()) == {"[redacted]"}
    assert scrub_secrets(f"failed: {fal}") == "failed: [redacted]"
    for token in (
        API_KEY,
        GOOGLE_KEY,
        "r8_" + "a" * 37,
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36P",
    ):
        assert token not in scrub_secrets(f"token {token} end")
        assert token not in scrub_secrets(f'{{"url":"https://x.test/{token}"}}')


@pytest.mark.parametrize(
    "text",
    [
        "Turkey Holdings Limited",
        "monkey business as usual",
        "/v1/task-orchestration-service/x",
        "desk-booking-assistant-service",
        "Basically fine",
        "tokenizer settings updated",
    ],
)
def test_ordinary_words_are_not_masked(text: str) -> None:
    assert scrub_secrets(text) == text


# -- keys ------------------------------------------------------------------------------------------


def test_missing_or_foreign_key_file_refuses_writes(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "a.db") as log:
        fill(log, 1)
    AuditLog(tmp_path / "b.db").close()
    key_path_for(tmp_path / "a.db").rename(tmp_path / "a.key.bak")
    key_path_for(tmp_path / "b.db").rename(key_path_for(tmp_path / "a.db"))
    with pytest.raises(AuditLogError, match="belongs to another log"):
        AuditLog(tmp_path / "a.db")
    key_path_for(tmp_path / "a.db").unlink()
    with pytest.raises(AuditLogError, match=r"key file .* is missing"):
        AuditLog(tmp_path / "a.db")
    # Read-only review still works without it; subject fields would stay sealed.
    assert verify_log(tmp_path / "a.db").ok
    (tmp_path / "a.key.bak").rename(key_path_for(tmp_path / "a.db"))
    key_path_for(tmp_path / "a.db").write_text("{not json")
    with pytest.raises(ConfigError, match="damaged"):
        AuditLog(tmp_path / "a.db")


def test_not_a_log_and_newer_schema_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(AuditLogError):
        AuditLog(junk)
    with pytest.raises(AuditLogError, match="no transfer log"):
        AuditLog(tmp_path / "absent.db", readonly=True)
    with AuditLog(tmp_path / "a.db") as log:
        fill(log, 1)
    raw(tmp_path / "a.db").execute("PRAGMA user_version=99")
    with pytest.raises(AuditLogError, match="newer veilpix"):
        AuditLog(tmp_path / "a.db")


def test_two_processes_creating_one_log_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    code = (
        "import sys, auditkit; from veilpix import AuditLog\n"
        "log = AuditLog(sys.argv[1]); auditkit.fill(log, 5); log.close()\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], env=child_env()) for _ in range(3)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    result = verify_log(path)
    assert result.ok and result.records == 15


def test_a_writer_waits_when_another_holds_the_new_log_instead_of_failing(tmp_path: Path) -> None:
    # SQLite answers "locked" at once (no busy wait) to a connection that switches a file to
    # WAL while another holds its write lock, the state two processes creating one log meet.
    path = tmp_path / "a.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE t(a)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    try:
        db, wal = connect(path, readonly=False, busy=10)
        db.close()
    finally:
        release.join()
        other.close()
    assert wal


# -- subjects: encryption and erasure ---------------------------------------------------------------


def test_subject_fields_are_sealed_and_erasure_makes_them_unrecoverable(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    log = AuditLog(path, encrypt_prompts=True)
    ids = fill(log, 3, subject_ref="customer-4711", consent_ref="consent-form-77")
    other = fill(log, 1, subject_ref="customer-0815")
    rec = log.get(ids[0])
    assert rec.subject == "open" and rec.to_dict()["why"]["subject_ref"] == "customer-4711"
    assert rec.to_dict()["what"]["images"][0]["fingerprint_before"] == log.fingerprint(PHOTO)
    assert log.prompt(ids[0]) == PROMPT
    wrapped = raw(path).execute("SELECT wrapped FROM subject_keys").fetchall()
    assert len(list(log.records(subject="customer-4711"))) == 3

    # Without the key file a copy of the log shows the facts but not the linked fields.
    copy = tmp_path / "copy.db"
    raw(path).execute(f"VACUUM INTO '{copy}'")
    with AuditLog(copy, readonly=True) as reader:
        sealed = reader.get(ids[0])
        assert sealed.subject == "sealed" and sealed.to_dict()["why"]["subject_ref"] == "[sealed]"
        assert sealed.where["vendor"] in ("openai", "gemini")

    erased = log.erase("customer-4711", request_ref="DSR-2026-118")
    assert erased.records == 3 and erased.physically_overwritten
    rec = log.get(ids[0])
    assert rec.subject == "erased" and rec.sealed is None
    assert rec.to_dict()["why"]["subject_ref"] == "[erased]" and log.prompt(ids[0]) is None
    assert list(log.records(subject="customer-4711")) == []
    assert list(log.records(image=PHOTO)) == [log.get(other[0])]  # erased ones no longer match
    assert log.get(other[0]).subject == "open"  # other subjects untouched
    assert log.erase("customer-4711").records == 0  # idempotent
    log.close()
    result = verify_log(path)
    assert result.ok and result.erasures == 1
    stored = file_bytes(path)
    remaining = {bytes(r[0]) for r in raw(path).execute("SELECT wrapped FROM subject_keys")}
    gone = [bytes(w[0]) for w in wrapped if bytes(w[0]) not in remaining]
    assert len(gone) == 1 and gone[0] not in stored  # the destroyed key is not in any file
    assert b"DSR-2026-118" in stored  # the tombstone keeps the request reference


# -- retention ------------------------------------------------------------------------------------


def test_prune_removes_old_records_and_still_verifies(tmp_path: Path) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    path = tmp_path / "a.db"
    with AuditLog(path, checkpoint_every=4, clock=lambda: now[0]) as log:
        fill(log, 4, subject_ref="old-subject")
        pending = log.begin(transfer())  # begun before the cut, finished after it
        now[0] += timedelta(days=200)
        pending.finish(status=200)
        new = fill(log, 3)
        done = log.prune("180d")
        assert (done.records, done.entries) == (5, 9)
        assert [r.id for r in log.records()] == new
        assert raw(path).execute("SELECT count(*) FROM subject_keys").fetchone()[0] == 0
        assert log.prune("180d").records == 0
    result = verify_log(path)
    assert result.ok and result.pruned_through == 9 and result.records == 3


def test_parse_age() -> None:
    assert parse_age("180d") == timedelta(days=180)
    assert parse_age("2w") == timedelta(weeks=2) and parse_age("1y") == timedelta(days=365)
    for bad in ("", "180", "d", "-3d", "0d", "5m"):
        with pytest.raises(ConfigError):
            parse_age(bad)


# -- checkpoints -----------------------------------------------------------------------------------


def test_checkpoints_every_n_on_interval_and_on_close(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    log = AuditLog(path, checkpoint_every=10, checkpoint_seconds=0.05)
    fill(log, 5)  # 10 entries -> one checkpoint by count
    assert log.counts()["checkpoints"] >= 1
    log.begin(transfer())  # entry 11: the timer signs it
    deadline = time.monotonic() + 10
    while verify_log(path).unsigned_tail and time.monotonic() < deadline:
        time.sleep(0.02)
    assert verify_log(path).unsigned_tail == 0
    log.close()
    result = verify_log(path)
    assert result.ok and result.pending == 1


# -- concurrency -------------------------------------------------------------------------------------


def test_many_threads_write_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    log = AuditLog(path, checkpoint_every=7)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            fill(log, 15)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    assert not errors
    result = verify_log(path)
    assert result.ok and result.records == 90 and result.pending == 0


def test_many_processes_write_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    AuditLog(path).close()
    code = (
        "import sys, auditkit; from veilpix import AuditLog\n"
        "log = AuditLog(sys.argv[1], checkpoint_every=5); auditkit.fill(log, 25); log.close()\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], env=child_env()) for _ in range(4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    result = verify_log(path)
    assert result.ok and result.records == 100


# -- faults ------------------------------------------------------------------------------------------

_WRITER = """
import sys, auditkit
from veilpix import AuditLog
log = AuditLog(sys.argv[1], checkpoint_every=50)
i = 0
while True:
    p = log.begin(auditkit.transfer(i))
    print(p.id, flush=True)          # only printed once the begin is durable
    p.finish(status=200, response_bytes=1)
    i += 1
"""


def test_kill_9_under_load_loses_no_begun_record(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    AuditLog(path).close()
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    # A second writer in this process keeps the file busy at the same time.
    other = AuditLog(path, checkpoint_every=50)
    begun = []
    assert proc.stdout is not None
    for _ in range(60):
        begun.append(proc.stdout.readline().strip())
        fill(other, 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    begun += [line.strip() for line in proc.stdout if line.strip()]
    other.close()  # the surviving writer signs what it can vouch for
    # Restart: a new writer checks the unsigned tail chains on, then signs it.
    AuditLog(path).close()
    result = verify_log(path)
    assert result.ok, result.problems
    with AuditLog(path, readonly=True) as log:
        ids = {r.id: r.outcome for r in log.records()}
    assert set(begun) <= set(ids)  # every begun record is there
    assert result.pending <= 1  # at most the one in flight when killed, shown as unknown
    assert all(ids[b] in ("sent", "unknown") for b in begun)


def test_a_log_that_cannot_be_written_blocks_the_call(tmp_path: Path) -> None:
    """Disk full: the file may not grow (RLIMIT_FSIZE). The begin fails with AuditLogError and
    the send inside ``record`` never runs."""
    path = tmp_path / "a.db"
    with AuditLog(path) as log:
        fill(log, 1)
    code = """
import os, resource, signal, sys, auditkit
from veilpix import AuditLog, AuditLogError
log = AuditLog(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
size = sum(os.path.getsize(sys.argv[1] + s) for s in ("", "-wal") if os.path.exists(sys.argv[1] + s))
resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
sent = []
try:
    for i in range(200):
        with log.record(auditkit.transfer(i, prompt="x" * 5000)) as p:
            sent.append(i)
            p.finish(status=200)
except AuditLogError as exc:
    print("BLOCKED", len(sent), exc.message[:80])
"""
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
        check=False,
    )
    assert "BLOCKED" in out.stdout, out.stderr
    sent = int(out.stdout.split()[1])
    result = verify_log(path)
    assert result.intact, result.problems
    with AuditLog(path, readonly=True) as log:
        assert log.counts()["records"] >= 1 + sent  # every call that went out is in the log


def _make_read_only(path: Path) -> tuple[list[str], list[str]]:
    """Commands that make ``path`` unwritable and writable again. Root ignores file modes, so
    as root the file is made immutable (chattr +i), which binds root too."""
    if os.geteuid() != 0:
        return ["chmod", "0444", str(path)], ["chmod", "0600", str(path)]
    import shutil

    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: cannot make a file read-only")
    return ["chattr", "+i", str(path)], ["chattr", "-i", str(path)]


def test_a_read_only_log_blocks_the_call(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with AuditLog(path) as log:
        fill(log, 1)
    lock, unlock = _make_read_only(path)
    if subprocess.run(lock, capture_output=True, check=False).returncode != 0:
        pytest.skip("this file system cannot make a file read-only")
    sent = []
    try:
        with pytest.raises(AuditLogError) as info:
            log = AuditLog(path)
            with log.record(transfer()):
                sent.append(1)
        assert "readonly" in str(info.value) or "read-only" in str(info.value)
    finally:
        subprocess.run(unlock, check=True)
    assert sent == []
    assert verify_log(path).records == 1


def test_a_program_that_forgets_close_still_signs_its_tail(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    code = "import sys, auditkit; from veilpix import AuditLog\nauditkit.fill(AuditLog(sys.argv[1]), 3)\n"
    subprocess.run([sys.executable, "-c", code, str(path)], env=child_env(), check=True, timeout=60)
    result = verify_log(path)
    assert result.ok and result.records == 3


@pytest.mark.parametrize("durability", ["disk", "os"])
def test_durability_os_skips_the_fsync_per_call_and_closing_still_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durability: str
) -> None:
    from veilpix.audit import _store

    syncs: list[int] = []
    real = _store.LogFiles.sync

    def counted(self: object) -> None:
        syncs.append(1)
        real(self)  # type: ignore[arg-type]

    log = AuditLog(tmp_path / "a.db", durability=durability)  # type: ignore[arg-type]
    monkeypatch.setattr(_store.LogFiles, "sync", counted)
    fill(log, 5)
    during = len(syncs)
    log.close()
    assert during >= 5 if durability == "disk" else during <= 1, during  # (1: a signed head)
    assert len(syncs) > during  # closing makes everything durable either way
    assert verify_log(tmp_path / "a.db").records == 5


def test_durability_comes_from_the_config_and_a_bad_value_is_refused(tmp_path: Path) -> None:
    from veilpix import load_config

    cfg = tmp_path / "v.toml"
    cfg.write_text('[log]\npath = "a.db"\ndurability = "os"\n')
    with AuditLog.from_config(cfg) as log:
        assert log.durability == "os"
    cfg.write_text('[log]\ndurability = "none"\n')
    with pytest.raises(ConfigError, match="durability"):
        load_config(cfg)
    with pytest.raises(ConfigError, match="durability"):
        AuditLog(tmp_path / "b.db", durability="fast")  # type: ignore[arg-type]
