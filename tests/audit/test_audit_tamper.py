"""Tamper with a closed, fully signed transfer log through plain sqlite3, every way a person
with write access to the file could, and check that ``verify`` names what happened."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from auditkit import fill, raw
from veilpix import AuditLog, AuditLogError, ConfigError, LogIntegrityError, verify_log
from veilpix.audit._chain import checkpoint_message, entry_hash, founding_statement, genesis
from veilpix.audit._keys import KeyFile, key_id
from veilpix.cli._main import main

N = 20  # transfers -> 40 entries, checkpoints at 1 (the first entry), 8, 16, 24, 32, 40


def key_of(path: Path) -> Path:
    """Where the fixture keeps the key file: away from the log, so that ``verify_log(path)``
    checks what an auditor with the log alone can (the signatures); tests that check what the
    key file adds pass it."""
    return path.parent / "keys" / "audit.key"


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    with AuditLog(path, key_path=key_of(path), checkpoint_every=8) as log:
        fill(log, N)
    return path


def kinds(path: Path, **kw: object) -> list[tuple[str, int | None]]:
    result = verify_log(path, **kw)  # type: ignore[arg-type]
    return [(p.kind, p.seq) for p in result.problems]


def rehash_from(db: object, start: int, log_id: str) -> None:
    """What a careful forger does after an edit: recompute every hash and link onwards."""
    rows = db.execute(  # type: ignore[attr-defined]
        "SELECT seq, kind, record, ts, subject, body FROM entries WHERE seq>=? ORDER BY seq",
        (start,),
    ).fetchall()
    prev = db.execute("SELECT hash FROM entries WHERE seq=?", (start - 1,)).fetchone()  # type: ignore[attr-defined]
    prev = genesis(log_id) if prev is None else prev[0]
    for seq, kind, record, ts, subject, body in rows:
        h = entry_hash(prev, seq, kind, record, ts, subject, body)
        db.execute("UPDATE entries SET prev=?, hash=? WHERE seq=?", (prev, h, seq))  # type: ignore[attr-defined]
        prev = h


def log_id(path: Path) -> str:
    return str(raw(path).execute("SELECT value FROM meta WHERE key='log_id'").fetchone()[0])


def test_untouched_log_verifies(log_path: Path) -> None:
    result = verify_log(log_path)
    assert result.ok and result.intact
    assert (result.entries, result.records, result.pending) == (2 * N, N, 0)
    assert result.signed_through == 2 * N and result.unsigned_tail == 0
    assert main(["audit", "verify", "--log", str(log_path)]) == 0


def test_edited_field_is_caught(log_path: Path) -> None:
    db = raw(log_path)
    body = db.execute("SELECT body FROM entries WHERE seq=5").fetchone()[0]
    assert '"country":"US"' in body or '"country":"NL"' in body
    db.execute(
        "UPDATE entries SET body=replace(replace(body, '\"US\"', '\"CH\"'), '\"NL\"', '\"CH\"')"
        " WHERE seq=5"
    )
    assert kinds(log_path)[0] == ("modified", 5)
    assert main(["audit", "verify", "--log", str(log_path)]) == 1


def test_edit_with_own_hash_recomputed_breaks_the_next_link(log_path: Path) -> None:
    db = raw(log_path)
    seq, kind, record, ts, subject, body, prev = db.execute(
        "SELECT seq, kind, record, ts, subject, body, prev FROM entries WHERE seq=10"
    ).fetchone()
    assert kind == "finish" and '"status":200' in body
    body = body.replace('"status":200', '"status":201')
    db.execute(
        "UPDATE entries SET body=?, hash=? WHERE seq=10",
        (body, entry_hash(prev, seq, kind, record, ts, subject, body)),
    )
    assert kinds(log_path)[0] == ("broken-link", 11)


def test_rebuilt_chain_is_caught_by_the_checkpoints(log_path: Path) -> None:
    db = raw(log_path)
    db.execute("UPDATE entries SET body=replace(body, 'shop', 'shap') WHERE seq=11")
    rehash_from(db, 11, log_id(log_path))
    problems = kinds(log_path)
    assert problems[0] == ("checkpoint-mismatch", 16)  # the first checkpoint after the edit
    assert ("checkpoint-mismatch", 40) in problems


def test_deleted_row_is_a_gap(log_path: Path) -> None:
    raw(log_path).execute("DELETE FROM entries WHERE seq=13")
    assert kinds(log_path)[0] == ("gap", 13)


def test_deleted_head_is_a_gap_without_a_prune_bridge(log_path: Path) -> None:
    raw(log_path).execute("DELETE FROM entries WHERE seq<=3")
    result = verify_log(log_path)
    assert (result.problems[0].kind, result.problems[0].seq) == ("gap", 1)
    assert "no prune entry" in result.problems[0].message


def test_inserted_row_is_caught(log_path: Path) -> None:
    db = raw(log_path)
    # Make room after entry 9 and slide a forged entry in, chained onto entry 9.
    db.execute("UPDATE entries SET seq=seq+1000 WHERE seq>9")
    db.execute("UPDATE entries SET seq=seq-999 WHERE seq>1000")
    prev, ts = db.execute("SELECT hash, ts FROM entries WHERE seq=9").fetchone()
    body = json.dumps({"where": {"vendor": "openai"}})
    h = entry_hash(prev, 10, "begin", "forged", ts, None, body)
    db.execute(
        "INSERT INTO entries(seq, kind, record, ts, subject, body, prev, hash) VALUES"
        " (10, 'begin', 'forged', ?, NULL, ?, ?, ?)",
        (ts, body, prev, h),
    )
    assert kinds(log_path)[0] == ("broken-link", 11)


def test_forged_append_is_an_unsigned_tail(log_path: Path) -> None:
    db = raw(log_path)
    prev, ts = db.execute("SELECT hash, ts FROM entries WHERE seq=40").fetchone()
    body = json.dumps({"where": {"vendor": "openai"}})
    db.execute(
        "INSERT INTO entries(seq, kind, record, ts, subject, body, prev, hash) VALUES"
        " (41, 'begin', 'x', ?, NULL, ?, ?, ?)",
        (ts, body, prev, entry_hash(prev, 41, "begin", "x", ts, None, body)),
    )
    result = verify_log(log_path)
    assert result.intact and not result.ok
    assert (result.problems[0].kind, result.problems[0].seq) == ("unsigned-tail", 41)
    assert result.unsigned_tail == 1
    assert main(["audit", "verify", "--log", str(log_path)]) == 3


def test_reordered_rows_are_caught(log_path: Path) -> None:
    db = raw(log_path)
    a = db.execute("SELECT kind, record, ts, body, prev, hash FROM entries WHERE seq=3").fetchone()
    b = db.execute("SELECT kind, record, ts, body, prev, hash FROM entries WHERE seq=4").fetchone()
    sql = "UPDATE entries SET kind=?, record=?, ts=?, body=?, prev=?, hash=? WHERE seq=?"
    db.execute(sql, (*b, 3))
    db.execute(sql, (*a, 4))
    assert kinds(log_path)[0][1] == 3
    assert kinds(log_path)[0][0] in ("broken-link", "modified")


def test_truncated_tail_is_caught(log_path: Path) -> None:
    raw(log_path).execute("DELETE FROM entries WHERE seq>30")
    problems = kinds(log_path)
    assert problems[0] == ("truncated", 32)
    assert ("truncated", 40) in problems


def test_replaced_checkpoint_is_caught(log_path: Path) -> None:
    db = raw(log_path)
    # Move checkpoint 3 (entry 16) onto another entry, keeping its signature.
    h = db.execute("SELECT hash FROM entries WHERE seq=15").fetchone()[0]
    db.execute("UPDATE checkpoints SET seq=15, hash=? WHERE id=3", (h,))
    assert kinds(log_path)[0] == ("bad-signature", 15)


def test_checkpoint_with_another_signature_is_caught(log_path: Path) -> None:
    db = raw(log_path)
    sig = db.execute("SELECT signature FROM checkpoints WHERE id=1").fetchone()[0]
    db.execute("UPDATE checkpoints SET signature=? WHERE id=3", (sig,))
    assert ("bad-signature", 24) in kinds(log_path)


def test_deleted_checkpoint_is_caught(log_path: Path) -> None:
    raw(log_path).execute("DELETE FROM checkpoints WHERE id=2")
    assert ("checkpoint-gap", 24) in kinds(log_path)


def test_deleted_checkpoints_with_a_rebuilt_chain_are_caught(log_path: Path) -> None:
    """Without the key nobody can sign, so a forger deletes every checkpoint, rewrites and
    re-hashes the chain. The interval of forced checkpoints is signed at creation, so the
    missing ones give it away; and no writer will sign such a tail on open."""
    db = raw(log_path)
    db.execute("DELETE FROM checkpoints")
    db.execute("UPDATE entries SET body=replace(body, 'shop', 'shap')")
    rehash_from(db, 1, log_id(log_path))
    result = verify_log(log_path)
    assert not result.intact and result.unsigned_tail == 2 * N
    assert (result.problems[0].kind, result.problems[0].seq) == ("missing-checkpoint", 8)
    assert main(["audit", "verify", "--log", str(log_path)]) == 1
    # the writer knows from its key file which checkpoint it signed last
    with pytest.raises(AuditLogError, match=r"key file records checkpoint 6 .entry 40"):
        AuditLog(log_path, key_path=key_of(log_path))
    assert not verify_log(log_path).intact  # still caught: nothing was signed
    # and without that record (a key file from before it), by the missing forced checkpoint
    key = KeyFile.read(key_of(log_path))
    key.evolve(state=None).save(key_of(log_path))
    with pytest.raises(AuditLogError, match="should carry a checkpoint"):
        AuditLog(log_path, key_path=key_of(log_path))


def test_deleted_newest_checkpoints_are_caught(log_path: Path) -> None:
    raw(log_path).execute("DELETE FROM checkpoints WHERE id >= 5")
    assert kinds(log_path)[0] == ("missing-checkpoint", 32)


def test_a_forged_last_checkpoint_is_not_trusted_on_open(log_path: Path) -> None:
    db = raw(log_path)
    db.execute("UPDATE checkpoints SET signature=zeroblob(64) WHERE id=5")
    with pytest.raises(AuditLogError, match="valid signature"):
        AuditLog(log_path, key_path=key_of(log_path))


def test_a_changed_checkpoint_interval_is_caught(log_path: Path) -> None:
    raw(log_path).execute("UPDATE meta SET value='1000000' WHERE key='checkpoint_every'")
    assert kinds(log_path)[0] == ("bad-signature", None)


def test_re_signed_log_is_caught_with_the_exported_key(log_path: Path, tmp_path: Path) -> None:
    """Someone with write access but not the key rebuilds the chain and signs it with a key of
    their own. The key stored in the log then agrees; the exported copy does not."""
    pem = tmp_path / "pub.pem"
    assert main(["audit", "key", "--log", str(log_path), "-o", str(pem)]) == 0
    db = raw(log_path)
    lid = log_id(log_path)
    db.execute("UPDATE entries SET body=replace(body, 'shop', 'shap')")
    rehash_from(db, 1, lid)
    forger = KeyFile.generate(lid)
    db.execute("UPDATE meta SET value=? WHERE key='public_key'", (forger.public_raw.hex(),))
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    founding = founding_statement(lid, int(meta["checkpoint_every"]), meta["created"])
    db.execute(
        "UPDATE meta SET value=? WHERE key='founding_signature'", (forger.sign(founding).hex(),)
    )
    prev_sig = genesis(lid)
    for cid, seq, ts, reason in db.execute(
        "SELECT id, seq, ts, reason FROM checkpoints ORDER BY id"
    ).fetchall():
        head = db.execute("SELECT hash FROM entries WHERE seq=?", (seq,)).fetchone()[0]
        sig = forger.sign(checkpoint_message(lid, cid, seq, head, ts, reason, prev_sig))
        db.execute(
            "UPDATE checkpoints SET hash=?, signature=?, key_id=? WHERE id=?",
            (head, sig, key_id(forger.public_raw), cid),
        )
        prev_sig = hashlib.sha256(sig).digest()
    assert verify_log(log_path).ok  # self-consistent against its own (replaced) key
    assert main(["audit", "verify", "--log", str(log_path), "--public-key", str(pem)]) == 1
    from veilpix.audit._keys import load_public_key

    problems = kinds(log_path, public_key=load_public_key(pem))
    assert problems[0] == ("key-mismatch", None)
    assert ("bad-signature", None) in problems and ("bad-signature", 8) in problems


def test_deleted_prune_bridge_is_caught(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    path = tmp_path / "audit.db"
    with AuditLog(path, checkpoint_every=8, clock=lambda: now[0]) as log:
        fill(log, 5)
        now[0] += timedelta(days=200)
        fill(log, 5)
        pruned = log.prune("180d")
    assert pruned.records == 5 and verify_log(path).ok
    raw(path).execute("DELETE FROM entries WHERE kind='prune'")
    problems = kinds(path)
    assert problems[0] == ("gap", 1)  # entries 1..10 gone, and nothing accounts for it
    assert ("truncated", 21) in problems  # the prune entry itself was signed


def test_deleted_tombstone_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        fill(log, 3, subject_ref="subject-1")
        log.erase("subject-1")
        fill(log, 1)
    assert verify_log(path).ok
    raw(path).execute("DELETE FROM entries WHERE kind='erase'")
    problems = kinds(path)
    assert ("gap", 7) in problems
    assert ("erasure", None) in problems  # and the subject's key is gone with no record why


def test_a_subject_key_deleted_without_an_erasure_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        fill(log, 2, subject_ref="subject-1")
    raw(path).execute("DELETE FROM subject_keys")
    result = verify_log(path)
    assert not result.ok and [p.kind for p in result.problems] == ["erasure"]
    assert "no erasure accounts for" in result.problems[0].message


def test_subject_keys_whose_tags_were_swapped_erase_nobody(tmp_path: Path) -> None:
    """Someone who can write the log swaps two subjects' key tags: looking up or erasing one
    subject would reach the other's transfers. The sealed fields name the subject: refused."""
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        fill(log, 1, subject_ref="alice")
        fill(log, 1, subject_ref="bob")
    db = raw(path)
    (a,), (b,) = db.execute("SELECT tag FROM subject_keys ORDER BY created, kid").fetchall()
    db.execute("UPDATE subject_keys SET tag = 'x' WHERE tag = ?", (a,))
    db.execute("UPDATE subject_keys SET tag = ? WHERE tag = ?", (a, b))
    db.execute("UPDATE subject_keys SET tag = ? WHERE tag = 'x'", (b,))
    with AuditLog(path) as log:
        with pytest.raises(LogIntegrityError, match="names another subject"):
            list(log.records(subject="alice"))
        with pytest.raises(LogIntegrityError, match="names another subject"):
            log.erase("alice")
        assert {r.subject for r in log.records()} == {"open"}  # nobody was erased


def test_writer_refuses_a_log_whose_unsigned_tail_is_broken(log_path: Path) -> None:
    db = raw(log_path)
    prev, ts = db.execute("SELECT hash, ts FROM entries WHERE seq=40").fetchone()
    db.execute(
        "INSERT INTO entries(seq, kind, record, ts, subject, body, prev, hash) VALUES"
        " (41, 'finish', 'x', ?, NULL, '{}', ?, ?)",
        (ts, prev, b"\0" * 32),
    )
    with pytest.raises(AuditLogError, match="damaged"):
        AuditLog(log_path, key_path=key_of(log_path))


def test_a_saved_head_catches_a_rollback(log_path: Path, tmp_path: Path) -> None:
    """Cutting the newest entries together with the checkpoints that cover them, down to a
    forced checkpoint, leaves a shorter log that is valid in itself. A head saved earlier
    shows it."""
    head = verify_log(log_path).head
    assert head is not None and head.startswith("vph1:")
    saved = tmp_path / "head.txt"
    saved.write_text(head + "\n")
    assert verify_log(log_path, expect=head).ok
    db = raw(log_path)
    db.execute("DELETE FROM checkpoints WHERE id > 4")
    db.execute("DELETE FROM entries WHERE seq > 24")
    assert verify_log(log_path).ok  # in itself the shortened log is fine
    assert kinds(log_path, expect=head)[0] == ("rolled-back", 40)
    assert main(["audit", "verify", "--log", str(log_path), "--expect", str(saved)]) == 1
    with pytest.raises(ConfigError):
        verify_log(log_path, expect="vph1:nonsense")
    # The key file remembers the newest checkpoint: with it, no saved head is needed.
    assert kinds(log_path, key_path=key_of(log_path))[0] == ("rolled-back", 40)
    with pytest.raises(AuditLogError, match="cut back"):
        AuditLog(log_path, key_path=key_of(log_path))


def test_writer_refuses_a_log_whose_interval_was_changed(log_path: Path) -> None:
    db = raw(log_path)
    db.execute("DELETE FROM checkpoints")
    db.execute("UPDATE meta SET value='1000' WHERE key='checkpoint_every'")
    with pytest.raises(AuditLogError, match="founding statement"):
        AuditLog(log_path, key_path=key_of(log_path))
