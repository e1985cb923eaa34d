"""Attacks on the transfer log by someone who can write the log's files but does not have its
key file, done the way they would be: plain sqlite3, SHA-256 recomputed, files deleted, cut or
swapped for older copies. Every one must be refused by the writer (nothing signed, nothing
extended) and named by verify; starting over is explicit and stays on the record."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from auditkit import fill, raw, transfer
from veilpix import AuditLog, AuditLogError, LogIntegrityError, restart_log, verify_log
from veilpix.audit._chain import entry_hash, genesis
from veilpix.audit._keys import KeyFile
from veilpix.cli._main import main

QUIET = {"checkpoint_every": 1000, "checkpoint_seconds": 3600.0}  # no checkpoint comes by itself


def rehash_from(db: sqlite3.Connection, start: int, log_id: str) -> None:
    """What a forger who knows the (public) algorithm does after an edit."""
    rows = db.execute(
        "SELECT seq, kind, record, ts, subject, body FROM entries WHERE seq>=? ORDER BY seq",
        (start,),
    ).fetchall()
    row = db.execute("SELECT hash FROM entries WHERE seq=?", (start - 1,)).fetchone()
    prev = genesis(log_id) if row is None else row[0]
    for seq, kind, record, ts, subject, body in rows:
        digest = entry_hash(prev, seq, kind, record, ts, subject, body)
        db.execute("UPDATE entries SET prev=?, hash=? WHERE seq=?", (prev, digest, seq))
        prev = digest


def launder(path: Path, seq: int) -> None:
    """Change where a transfer went (US -> DE) and why, and rebuild the chain from there."""
    db = raw(path)
    body = json.loads(db.execute("SELECT body FROM entries WHERE seq=?", (seq,)).fetchone()[0])
    body["where"]["country"] = "DE"
    body["why"]["purpose"] = "quality assurance"
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    db.execute("UPDATE entries SET body=? WHERE seq=?", (text, seq))
    log_id = db.execute("SELECT value FROM meta WHERE key='log_id'").fetchone()[0]
    rehash_from(db, seq, log_id)
    db.close()


def problems(path: Path, **kw: object) -> list[tuple[str, int | None]]:
    return [(p.kind, p.seq) for p in verify_log(path, **kw).problems]  # type: ignore[arg-type]


def test_entries_carry_a_mac_of_their_hash(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        fill(log, 3)
        keys, log_id = log.keys, log.log_id
    assert keys is not None
    rows = raw(path).execute("SELECT hash, mac FROM entries").fetchall()
    assert len(rows) == 6 and all(mac == keys.entry_mac(h, log_id) for h, mac in rows)
    assert all(mac != keys.entry_mac(h, "another log") for h, mac in rows)
    result = verify_log(path)
    assert result.ok and result.authenticated == 6 and result.mac_since is None


# -- laundering: rewriting what the running writer has not signed yet ------------------------


def test_laundering_the_unsigned_tail_is_refused_by_the_running_writer(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    log = AuditLog(path, **QUIET)  # type: ignore[arg-type]
    fill(log, 5)  # entries 1..10; only entry 1 is signed
    launder(path, 5)  # a begin, not signed yet
    with pytest.raises(LogIntegrityError, match=r"entry 5 .* does not carry the log's MAC") as exc:
        log.begin(transfer(9))
    assert exc.value.found == "changed"
    assert "veilpix audit restart" in (exc.value.hint or "")
    # nothing the writer does afterwards signs the rewritten entries
    with pytest.raises(AuditLogError):
        log.checkpoint("manual")
    with pytest.raises(AuditLogError):
        log.close()
    assert raw(path).execute("SELECT max(seq) FROM checkpoints").fetchone()[0] == 1
    assert problems(path)[0] == ("forged", 5)
    # an auditor without the key file: the signatures cover entry 1 only, and verify says so
    keyless = verify_log(path, key_path=tmp_path / "elsewhere.key")
    assert keyless.authenticated is None and keyless.signed_through == 1
    assert keyless.unsigned_tail == 9 and not keyless.ok
    assert "no key file was at hand" in keyless.problems[0].message


def test_laundering_is_refused_after_a_crash_too(tmp_path: Path) -> None:
    """The writer died before signing; the forger edits; the next writer must not sign."""
    path = tmp_path / "audit.db"
    log = AuditLog(path, **QUIET)  # type: ignore[arg-type]
    fill(log, 4)
    log._closed = True  # a crash: no close, no checkpoint
    launder(path, 7)
    with pytest.raises(LogIntegrityError, match="entry 7"):
        AuditLog(path, **QUIET)  # type: ignore[arg-type]
    assert raw(path).execute("SELECT count(*) FROM checkpoints").fetchone()[0] == 1


def test_whole_young_log_rewritten_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    log = AuditLog(path, **QUIET)  # type: ignore[arg-type]
    fill(log, 3)
    db = raw(path)
    db.execute("DELETE FROM checkpoints")  # the forger drops the one signature in the way
    db.execute("UPDATE entries SET body=replace(body, '\"US\"', '\"CH\"')")
    log_id = db.execute("SELECT value FROM meta WHERE key='log_id'").fetchone()[0]
    rehash_from(db, 1, log_id)
    with pytest.raises(LogIntegrityError):
        log.begin(transfer(1))
    log._closed = True
    with pytest.raises(LogIntegrityError, match="key file records checkpoint 1"):
        AuditLog(path, **QUIET)  # type: ignore[arg-type]
    assert "forged" in {kind for kind, _ in problems(path)}


def test_forged_entry_appended_while_a_writer_runs(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path, **QUIET) as log:  # type: ignore[arg-type]
        fill(log, 2)
        db = raw(path)
        seq, prev, ts = db.execute(
            "SELECT seq, hash, ts FROM entries ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        body = '{"outcome":"sent"}'
        db.execute(
            "INSERT INTO entries(seq, kind, record, ts, subject, body, prev, hash, mac) VALUES"
            " (?, 'finish', 'x', ?, NULL, ?, ?, ?, randomblob(32))",
            (seq + 1, ts, body, prev, entry_hash(prev, seq + 1, "finish", "x", ts, None, body)),
        )
        with pytest.raises(LogIntegrityError, match=f"entry {seq + 1} .finish. does not carry"):
            fill(log, 1)
        db.execute("DELETE FROM entries WHERE seq=?", (seq + 1,))  # the forgery removed again
        fill(log, 1)  # and the writer goes on from what it trusts
    assert verify_log(path).ok


def test_rows_cut_while_a_writer_runs(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path, **QUIET) as log:  # type: ignore[arg-type]
        fill(log, 4)
        raw(path).execute("DELETE FROM entries WHERE seq > 5")
        with pytest.raises(LogIntegrityError, match="cut back to entry 5"):
            fill(log, 1)
        raw(path).execute("DELETE FROM entries")
        with pytest.raises(LogIntegrityError, match="entries are gone"):
            fill(log, 1)
        log._closed = True


def test_two_writers_authenticate_each_other(tmp_path: Path) -> None:
    """Honest writers on one file (two handles here; processes in test_group_commit) append
    in turn: each checks the other's entries and none is refused."""
    path = tmp_path / "audit.db"
    a = AuditLog(path, **QUIET)  # type: ignore[arg-type]
    b = AuditLog(path, **QUIET)  # type: ignore[arg-type]
    for _ in range(5):
        fill(a, 2)
        fill(b, 1)
    a.close()
    b.close()
    result = verify_log(path)
    assert result.ok and result.records == 15


def test_pruned_by_another_writer_is_not_a_cut(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    path = tmp_path / "audit.db"
    a = AuditLog(path, clock=lambda: now[0], **QUIET)  # type: ignore[arg-type]
    fill(a, 3)
    now[0] += timedelta(days=200)
    with AuditLog(path, clock=lambda: now[0], **QUIET) as b:  # type: ignore[arg-type]
        fill(b, 2)
        assert b.prune("180d").records == 3
    fill(a, 1)  # a trusted entry 6, which is gone: it goes on from the prune bridge
    a.close()
    assert verify_log(path).ok


# -- deletion, truncation, roll-back of a closed log -----------------------------------------


def test_deleted_log_is_not_silently_refounded(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        fill(log, 2)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with pytest.raises(LogIntegrityError, match=r"is missing.*belongs to log") as exc:
        AuditLog(path)
    assert exc.value.found == "missing"
    assert not path.exists()  # refused before anything was created


def test_emptied_log_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        fill(log, 2)
    path.write_bytes(b"")
    with pytest.raises(LogIntegrityError, match="is empty") as exc:
        AuditLog(path)
    assert exc.value.found == "emptied"


def test_emptied_tables_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        fill(log, 2)
    db = raw(path)
    db.execute("DELETE FROM entries")
    db.execute("DELETE FROM checkpoints")
    with pytest.raises(LogIntegrityError, match="ends at no checkpoint"):
        AuditLog(path)
    assert problems(path)[0][0] == "rolled-back"


def test_older_copy_put_back_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path, checkpoint_every=4) as log:
        fill(log, 4)
    shutil.copy(path, tmp_path / "old.db")
    with AuditLog(path, checkpoint_every=4) as log:
        fill(log, 4)
    shutil.copy(tmp_path / "old.db", path)  # valid in itself, and signed
    assert verify_log(path, key_path=tmp_path / "none.key").ok
    with pytest.raises(LogIntegrityError, match="cut back"):
        AuditLog(path)
    assert problems(path)[0][0] == "rolled-back"
    assert main(["audit", "verify", "--log", str(path)]) == 1


# -- starting over, on the record ------------------------------------------------------------


def test_restart_after_deletion_leaves_a_signed_statement(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        fill(log, 2)
        old_id, public = log.log_id, log.public_key
    path.unlink()
    done = restart_log(path, reason="disk replaced, no backup")
    assert done.found == "missing" and done.previous_log == old_id and done.moved_to is None
    keys = KeyFile.read(Path(f"{path}.key"))
    assert keys.log_id == done.log_id != old_id and keys.previous == (old_id,)
    assert keys.restart is None and keys.state is not None and keys.state["checkpoint"] == 1
    result = verify_log(path)
    assert result.ok and result.entries == 1 and len(result.restarts) == 1
    statement = result.restarts[0]
    assert statement["previous_log"] == old_id and statement["reason"] == "disk replaced, no backup"
    assert statement["previous_state"]["checkpoint"] >= 2
    with AuditLog(path) as log:  # the same keys: the exported public key still fits
        assert log.public_key == public
        fill(log, 1)
    assert verify_log(path).ok


def test_restart_moves_a_changed_log_aside_and_it_still_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    log = AuditLog(path, **QUIET)  # type: ignore[arg-type]
    fill(log, 3)
    log._closed = True
    launder(path, 3)
    before = path.read_bytes()
    assert (
        main(["audit", "restart", "--log", str(path), "--reason", "forged entries", "--json"]) == 0
    )
    moved = [p for p in tmp_path.iterdir() if ".abandoned-" in p.name and "-" not in p.suffix[-4:]]
    assert len(moved) == 1 and moved[0].read_bytes()[:100] == before[:100]
    old = verify_log(moved[0], key_path=Path(f"{path}.key"))  # the old id is in "previous"
    assert ("forged", 3) in [(p.kind, p.seq) for p in old.problems]
    new = verify_log(path)
    assert new.ok and new.restarts[0]["found"] == "changed"
    assert "entry 3" in new.restarts[0]["detail"]


def test_restart_refuses_an_intact_log_and_needs_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        fill(log, 1)
    with pytest.raises(AuditLogError, match="intact"):
        restart_log(path, reason="just because")
    assert main(["audit", "restart", "--log", str(path), "--reason", "   "]) == 2
    assert main(["audit", "restart", "--log", str(tmp_path / "nowhere.db"), "--reason", "x"]) == 2
    assert verify_log(path).ok and not list(tmp_path.glob("*.abandoned-*"))


def test_restart_interrupted_half_way_is_finished_by_the_next_writer(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        fill(log, 1)
    path.unlink()
    key_path = Path(f"{path}.key")
    keys = KeyFile.read(key_path)
    statement = {"previous_log": keys.log_id, "found": "missing", "reason": "r", "at": "t"}
    keys.evolve(log_id="new-id", previous=(keys.log_id,), state=None, restart=statement).save(
        key_path
    )  # the key file was rewritten, then the process died before creating the new log
    with AuditLog(path) as log:
        fill(log, 1)
    result = verify_log(path)
    assert result.ok and result.restarts[0]["seq"] == 1 and result.log_id == "new-id"


# -- upgrade of a log written before entries had MACs ---------------------------------------


def test_log_from_schema_1_is_upgraded_with_macs(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path, **QUIET) as log:  # type: ignore[arg-type]
        fill(log, 3)
    db = raw(path)
    db.execute("ALTER TABLE entries DROP COLUMN mac")
    db.execute("UPDATE meta SET value='1' WHERE key='schema'")
    db.execute("PRAGMA user_version=1")
    db.close()
    key_path = Path(f"{path}.key")
    KeyFile.read(key_path).evolve(state=None).save(key_path)  # key files had no state then
    with pytest.raises(AuditLogError, match="not been upgraded"):
        verify_log(path)
    with AuditLog(path, **QUIET) as log:  # type: ignore[arg-type]
        fill(log, 1)
    result = verify_log(path)
    assert result.ok and result.authenticated == 8 and result.mac_since == 7


def test_key_file_in_a_read_only_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key file records every checkpoint; where it cannot, the protection against a
    deleted log would silently be gone, so the writer refuses (root ignores modes: the
    refusal of the folder is simulated)."""
    import os

    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        fill(log, 1)
    real = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == tmp_path else real(p, mode)
    )
    with pytest.raises(AuditLogError, match="folder veilpix cannot write") as exc:
        AuditLog(path)
    assert "read-only secret" in (exc.value.hint or "")


# -- found by the adversarial review of this design (each one a way round it, now closed) ----


def unstrict(db: sqlite3.Connection, table: str) -> None:
    """Rebuild ``table`` without STRICT, so that any type can go in (what a forger can do)."""
    sql = db.execute("SELECT sql FROM sqlite_schema WHERE name=?", (table,)).fetchone()[0]
    db.execute(sql.replace(" STRICT", "").replace(f"TABLE {table}", f"TABLE {table}_x", 1))
    db.execute(f"INSERT INTO {table}_x SELECT * FROM {table}")
    db.execute(f"DROP TABLE {table}")
    db.execute(f"ALTER TABLE {table}_x RENAME TO {table}")


def test_schema_set_back_to_have_forged_entries_macd_is_refused(tmp_path: Path) -> None:
    """Claiming the pre-MAC schema would have the upgrade MAC whatever is there."""
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        fill(log, 3)
    db = raw(path)
    db.execute("UPDATE entries SET body=replace(body, '\"US\"', '\"DE\"')")
    log_id = db.execute("SELECT value FROM meta WHERE key='log_id'").fetchone()[0]
    rehash_from(db, 1, log_id)
    db.execute("ALTER TABLE entries DROP COLUMN mac")
    db.execute("PRAGMA user_version=1")
    db.close()
    with pytest.raises(LogIntegrityError, match="claims to be a schema 1 log"):
        AuditLog(path)
    assert raw(path).execute("PRAGMA user_version").fetchone()[0] == 1  # left as found


def test_entries_of_the_old_log_cannot_be_spliced_into_the_restarted_one(tmp_path: Path) -> None:
    """A restart keeps the keys; the entry MAC is bound to the log's id, so the old log's
    entries (valid MACs there) are forged here."""
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        fill(log, 3, country="US")
    old = tmp_path / "old.db"
    shutil.copy(path, old)
    path.unlink()
    restart_log(path, reason="test")
    with AuditLog(path) as log:
        fill(log, 2, country="JP")
    db = raw(path)
    db.execute("DELETE FROM entries")
    db.execute("ATTACH ? AS old", (str(old),))
    db.execute("INSERT INTO entries SELECT * FROM old.entries")
    db.execute("DETACH old")
    db.close()
    with pytest.raises(LogIntegrityError):
        AuditLog(path)
    assert "forged" in {kind for kind, _ in problems(path)}


def test_a_forged_prune_bridge_does_not_switch_authentication_off(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    log = AuditLog(path, **QUIET)  # type: ignore[arg-type]
    fill(log, 2)
    db = raw(path)
    seq, prev, ts = db.execute(
        "SELECT seq, hash, ts FROM entries ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    for through in (10**6, seq):  # past itself; or an honest-looking cut with no checkpoint
        body = json.dumps({"through": through, "anchor": prev.hex()}, separators=(",", ":"))
        digest = entry_hash(prev, seq + 1, "prune", None, ts, None, body)
        db.execute(
            "INSERT OR REPLACE INTO entries(seq, kind, record, ts, subject, body, prev, hash, mac)"
            " VALUES (?, 'prune', NULL, ?, NULL, ?, ?, ?, NULL)",
            (seq + 1, ts, body, prev, digest),
        )
        with pytest.raises(LogIntegrityError, match=rf"entry {seq + 1}\b"):
            log.checkpoint("manual")
    log._closed = True
    with pytest.raises(LogIntegrityError):
        AuditLog(path, **QUIET)  # type: ignore[arg-type]
    assert not verify_log(path).ok


def test_a_key_file_that_does_not_belong_to_the_log_is_reported(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "a" / "audit.db", tmp_path / "b" / "audit.db"
    for path in (ours, theirs):
        with AuditLog(path) as log:
            fill(log, 1)
    shutil.copy(theirs, ours)  # someone else's (valid, signed) log where ours was
    result = verify_log(ours)
    assert not result.ok and result.problems[0].kind == "key-file"
    assert "belongs to log" in result.problems[0].message
    assert main(["audit", "verify", "--log", str(ours)]) == 1
    Path(f"{ours}.key").write_text("{not json")
    damaged = verify_log(ours)
    assert damaged.problems[0].kind == "key-file" and "damaged" in damaged.problems[0].message


def test_an_abandoned_log_put_back_in_place_of_the_restarted_one(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        fill(log, 2)
    hidden = tmp_path / "hidden.db"
    path.rename(hidden)  # hidden by the attacker; the operator restarts
    restart_log(path, reason="log gone")
    with AuditLog(path) as log:
        fill(log, 1)
    hidden.replace(path)  # and the old one is put back
    with pytest.raises(LogIntegrityError) as exc:
        AuditLog(path)
    assert exc.value.found == "superseded"
    result = verify_log(path)
    assert not result.ok and result.problems[0].kind == "key-file"
    assert "has moved on" in result.problems[0].message


def test_key_file_moved_aside_stops_the_writer_at_the_next_checkpoint(tmp_path: Path) -> None:
    """Moved aside, the key file cannot record the next checkpoint: from then on every call
    is refused, so the writers cannot go on past a state the key file would forget. An older
    copy put in its place is brought up to date, and another key file is refused."""
    path, key = tmp_path / "audit.db", tmp_path / "audit.db.key"
    log = AuditLog(path, checkpoint_every=2, checkpoint_seconds=3600)
    fill(log, 1)  # entries 1 (first) and 2 (every 2nd) are signed and recorded
    old_copy = key.read_bytes()
    key.rename(tmp_path / "stash")
    fill(log, 1)  # entry 4 is signed, and the key file cannot record it
    with pytest.raises(AuditLogError, match="cannot record the transfer log's newest checkpoint"):
        log.begin(transfer(1))
    (tmp_path / "stash").rename(key)
    fill(log, 2)  # back: the pending state is recorded first, then writing resumes
    recorded = KeyFile.read(key).state
    assert recorded is not None and recorded["seq"] == 8
    (tmp_path / "copy").write_bytes(old_copy)  # an older copy of the key file in its place
    (tmp_path / "copy").chmod(0o600)
    (tmp_path / "copy").replace(key)
    fill(log, 1)
    recorded = KeyFile.read(key).state
    assert recorded is not None and recorded["seq"] == 10  # brought up to date
    other = KeyFile.generate("someone else's")
    other.save(key)
    fill(log, 1)  # entry 12's checkpoint cannot be recorded in a foreign key file ...
    with pytest.raises(AuditLogError, match="cannot record"):
        log.begin(transfer(2))  # ... so nothing more is written
    log._closed = True


def test_restart_moves_the_set_aside_finishes_with_the_old_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        fill(log, 1)
    Path(f"{path}-finishes").write_text('{"finish":{},"mac":"00"}\n')
    raw(path).execute("DELETE FROM entries")
    done = restart_log(path, reason="test")
    assert done.moved_to is not None and Path(f"{done.moved_to}-finishes").is_file()


def test_set_aside_finishes_are_not_read_through_a_symlink_or_a_fifo(tmp_path: Path) -> None:
    import os
    import threading

    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        fill(log, 1)
    spill = Path(f"{path}-finishes")
    spill.symlink_to(Path(f"{path}.key"))
    with AuditLog(path) as log:
        fill(log, 1)
    KeyFile.read(Path(f"{path}.key"))  # untouched
    spill.unlink()
    os.mkfifo(spill)
    done = threading.Event()

    def open_it() -> None:
        with AuditLog(path):
            done.set()

    t = threading.Thread(target=open_it, daemon=True)
    t.start()
    t.join(10)
    assert done.is_set(), "opening the log hung on a FIFO"


@pytest.mark.parametrize(
    ("table", "sql", "writer_sees_it"),
    [
        # the newest checkpoint (on close, at entry 4), which a writer checks on open
        ("checkpoints", "UPDATE checkpoints SET signature=9000000000000000000 WHERE id=2", True),
        ("entries", "UPDATE entries SET hash='text' WHERE seq=4", True),
        # entries behind that checkpoint: verify's to find, the writer does not read them
        ("entries", "UPDATE entries SET hash='text' WHERE seq=2", False),
        ("entries", "UPDATE entries SET mac=9000000000000000000 WHERE seq=2", False),
        ("meta", "UPDATE meta SET value='x' WHERE key='checkpoint_every'", True),
        ("meta", "INSERT INTO meta VALUES ('mac_since', 'x')", False),
    ],
)
def test_values_veilpix_never_writes_are_reported_not_crashed_on(
    tmp_path: Path, table: str, sql: str, writer_sees_it: bool
) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        fill(log, 2)
    db = raw(path)
    unstrict(db, table)
    db.execute(sql)
    db.close()
    result = verify_log(path)  # no MemoryError from bytes(<huge int>), no TypeError
    assert not result.ok
    if writer_sees_it:
        with pytest.raises(LogIntegrityError):
            AuditLog(path)
    else:
        AuditLog(path).close()


def test_a_log_whose_tables_were_dropped_can_be_restarted(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        fill(log, 1)
    db = raw(path)
    for table in ("entries", "checkpoints", "meta", "subject_keys"):
        db.execute(f"DROP TABLE {table}")
    db.close()
    with pytest.raises(LogIntegrityError) as exc:
        AuditLog(path)
    assert exc.value.found == "emptied"
    assert restart_log(path, reason="tables dropped").found == "emptied"
    assert verify_log(path).ok
