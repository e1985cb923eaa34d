"""Tampering with a fleet log through psql, as someone with database access (and no key file)
would: verify names what was done and whose chain it was done to."""

from __future__ import annotations

from pathlib import Path

import pgkit
import pytest

from auditkit import transfer
from veilpix import AuditLog, AuditLogError
from veilpix.audit._verify import VerifyResult


@pytest.fixture
def fleet(pg: pgkit.Cluster, fleet_url: str, fleet_key: Path) -> str:
    """Two writers, one after the other and then interleaved, all closed: writer 1 has 24
    entries, writer 2 has 24 (checkpoints every 5)."""
    a = AuditLog(fleet_url, key_path=fleet_key, checkpoint_every=5)
    b = AuditLog(fleet_url, key_path=fleet_key, checkpoint_every=5)
    for i in range(12):
        for log in (a, b):
            log.begin(transfer(i)).finish(status=200)
    a.close()
    b.close()
    assert _verify(fleet_url, fleet_key).ok
    return fleet_url


def _verify(url: str, key: Path | None, **kwargs: object) -> VerifyResult:
    with AuditLog(url, key_path=key, readonly=True) as ro:
        return ro.verify(**kwargs)  # type: ignore[arg-type]


def _kinds(result: VerifyResult) -> set[tuple[str, int | None]]:
    return {(p.kind, p.writer) for p in result.problems}


def test_an_edited_entry_is_named_with_its_writer(
    pg: pgkit.Cluster, fleet: str, fleet_key: Path
) -> None:
    pg.psql(
        fleet,
        "UPDATE veilpix.entries SET body = replace(body, 'openai', 'mistral')"
        " WHERE writer = 2 AND seq = 7",
    )
    result = _verify(fleet, fleet_key)
    assert ("modified", 2) in _kinds(result)
    assert all(p.writer == 2 for p in result.problems if p.writer is not None)


def test_a_deleted_entry_is_a_gap(pg: pgkit.Cluster, fleet: str, fleet_key: Path) -> None:
    pg.psql(fleet, "DELETE FROM veilpix.entries WHERE writer = 1 AND seq = 9")
    assert ("gap", 1) in _kinds(_verify(fleet, fleet_key))


def test_reordered_entries_break_the_links(pg: pgkit.Cluster, fleet: str, fleet_key: Path) -> None:
    pg.psql(
        fleet,
        "UPDATE veilpix.entries SET seq = -1 WHERE writer = 1 AND seq = 12;"
        " UPDATE veilpix.entries SET seq = 12 WHERE writer = 1 AND seq = 13;"
        " UPDATE veilpix.entries SET seq = 13 WHERE writer = 1 AND seq = -1",
    )
    kinds = _kinds(_verify(fleet, None))  # (without the key file too)
    assert ("broken-link", 1) in kinds


def test_one_writers_chain_cut_back_with_its_checkpoints(
    pg: pgkit.Cluster, fleet: str, fleet_key: Path
) -> None:
    """The other writer's later checkpoints sign over the cut: a hole in the fleet's line."""
    pg.psql(
        fleet,
        "DELETE FROM veilpix.entries WHERE writer = 1 AND seq > 10;"
        " DELETE FROM veilpix.checkpoints WHERE writer = 1 AND seq > 10",
    )
    result = _verify(fleet, None)
    assert "checkpoint-gap" in {k for k, _ in _kinds(result)}
    assert not result.ok
    states = {w["writer"]: w["state"] for w in result.writers}
    assert states == {1: "stopped", 2: "closed"}  # writer 1 lost its final checkpoint


def test_a_truncated_chain_whose_checkpoints_stay_is_truncated(
    pg: pgkit.Cluster, fleet: str, fleet_key: Path
) -> None:
    pg.psql(fleet, "DELETE FROM veilpix.entries WHERE writer = 2 AND seq > 16")
    assert ("truncated", 2) in _kinds(_verify(fleet, fleet_key))


def test_a_removed_writer(pg: pgkit.Cluster, fleet: str, fleet_key: Path) -> None:
    pg.psql(
        fleet,
        "DELETE FROM veilpix.entries WHERE writer = 1;"
        " DELETE FROM veilpix.checkpoints WHERE writer = 1;"
        " DELETE FROM veilpix.writers WHERE id = 1",
    )
    kinds = _kinds(_verify(fleet, None))
    assert ("writer-removed", 1) in kinds
    assert any(kind == "checkpoint-gap" for kind, _ in kinds)


def test_a_forged_writer_with_a_key_of_its_own(
    pg: pgkit.Cluster, fleet: str, fleet_key: Path
) -> None:
    """Someone registers a writer of their own: its registration lacks the fleet's signature."""
    pg.psql(
        fleet,
        "INSERT INTO veilpix.writers SELECT 3, 'attacker:1', registered, public_key, hash,"
        " hash, fleet_signature, writer_signature FROM veilpix.writers WHERE id = 2",
    )
    assert ("writer-forged", 3) in _kinds(_verify(fleet, None))


def test_the_newest_checkpoints_removed_are_caught_by_a_saved_head(
    pg: pgkit.Cluster, fleet: str, fleet_key: Path
) -> None:
    head = _verify(fleet, None).head
    assert head is not None
    newest = int(head.split(":")[2])
    pg.psql(fleet, f"DELETE FROM veilpix.checkpoints WHERE fid = {newest}")
    result = _verify(fleet, None, expect=head)
    assert "rolled-back" in {k for k, _ in _kinds(result)}
    # the key file of a machine that wrote it knows too
    assert "rolled-back" in {k for k, _ in _kinds(_verify(fleet, fleet_key))}


def test_forged_tail_entry_without_the_key_file(
    pg: pgkit.Cluster, fleet_url: str, fleet_key: Path
) -> None:
    """Rows appended to a running writer's unsigned tail by someone without the key file
    (hashes recomputed) fail the MAC, and no writer signs them."""
    log = AuditLog(fleet_url, key_path=fleet_key, checkpoint_every=100)
    try:
        log.begin(transfer(1)).finish(status=200)
        pg.psql(
            fleet_url,
            "UPDATE veilpix.entries SET mac = '\\x00' WHERE writer = 1 AND seq = 2",
        )
        result = log.verify()
    finally:
        log._closed = True  # (a writer gone without closing: its tail stays unsigned)
        log._db.close()
    assert ("forged", 1) in _kinds(result)
    with AuditLog(fleet_url, key_path=fleet_key) as next_writer:  # refuses to adopt it
        del next_writer
    after = _verify(fleet_url, fleet_key)
    assert ("forged", 1) in _kinds(after)
    assert [w["state"] for w in after.writers if w["writer"] == 1] == ["stopped"]


# -- found by review: what a database user without the key file must not get past ------------


def _append(url: str, writer: int, kind: str, record: str | None, body: str) -> None:
    """Append an entry to ``writer``'s chain with its hash right (the algorithm is public)
    and a MAC nobody without the key file can make."""
    import psycopg

    from veilpix.audit._chain import entry_hash

    with psycopg.connect(url, autocommit=True) as db:
        seq, prev, ts = db.execute(
            "SELECT seq, hash, ts FROM veilpix.entries WHERE writer = %s ORDER BY seq DESC LIMIT 1",
            (writer,),
        ).fetchone()
        digest = entry_hash(prev, seq + 1, kind, record, ts, None, body)
        db.execute(
            "INSERT INTO veilpix.entries (writer, seq, kind, record, ts, subject, body, prev,"
            " hash, mac) VALUES (%s, %s, %s, %s, %s, NULL, %s, %s, %s, '\\x00')",
            (writer, seq + 1, kind, record, ts, body, prev, digest),
        )


def test_an_entry_appended_to_a_closed_writers_chain(fleet: str) -> None:
    """Not an unsigned tail: a closed chain takes nothing more, whoever signs."""
    _append(fleet, 1, "begin", "fake0000-0000-4000-8000-000000000001", '{"where":{}}')
    result = _verify(fleet, None)
    assert not result.intact and ("forged", 1) in _kinds(result)


def test_a_prune_entry_nobody_signed_accounts_for_nothing(
    pg: pgkit.Cluster, fleet: str, fleet_key: Path
) -> None:
    """Writer 2's first 15 entries deleted and 'explained' by a prune entry put at the end of
    writer 1's chain: the bridge is not signed, so the entries are missing."""
    import json

    (anchor,) = pg.sql(
        "SELECT encode(hash, 'hex') FROM veilpix.entries WHERE writer = 2 AND seq = 15",
        db=fleet.rsplit("/", 1)[1],
    )[0]
    body = json.dumps(
        {
            "anchor": anchor,
            "cutoff": "2000-01-01",
            "entries": 15,
            "older_than": "1d",
            "records": 8,
            "through": 15,
            "writer": 2,
        },
        separators=(",", ":"),
        sort_keys=True,
    )
    _append(fleet, 1, "prune", None, body)
    pg.psql(fleet, "DELETE FROM veilpix.entries WHERE writer = 2 AND seq <= 15")
    for key in (None, fleet_key):
        result = _verify(fleet, key)
        assert not result.intact and ("gap", 2) in _kinds(result)


def test_the_fleets_key_replaced_in_the_database(
    pg: pgkit.Cluster, fleet: str, fleet_key: Path
) -> None:
    """A new key in meta (the founding statement and the registrations re-signed with it)
    passes a check against the database's own key, not one against the key file's."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from veilpix.audit._chain import founding_statement
    from veilpix.audit.fleet._chain import registration

    db = fleet.rsplit("/", 1)[1]
    evil = Ed25519PrivateKey.generate()
    raw = evil.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    meta = dict(pg.sql("SELECT key, value FROM veilpix.meta", db=db))  # type: ignore[arg-type]
    founding = founding_statement(
        str(meta["log_id"]), int(meta["checkpoint_every"]), str(meta["created"])
    )
    pg.psql(
        fleet,
        f"UPDATE veilpix.meta SET value = '{raw.hex()}' WHERE key = 'public_key';"
        f" UPDATE veilpix.meta SET value = '{evil.sign(founding).hex()}'"
        " WHERE key = 'founding_signature'",
    )
    for wid, name, registered, pub, prev in pg.sql(
        "SELECT id, name, registered, public_key, prev FROM veilpix.writers", db=db
    ):
        statement = registration(
            str(meta["log_id"]), wid, name, registered, bytes(pub), bytes(prev)
        )  # type: ignore[arg-type]
        pg.psql(
            fleet,
            f"UPDATE veilpix.writers SET fleet_signature = '\\x{evil.sign(statement).hex()}'"
            f" WHERE id = {wid}",
        )
    assert _verify(fleet, None).ok  # (the database alone agrees with itself)
    result = _verify(fleet, fleet_key)
    assert ("key-mismatch", None) in _kinds(result) and not result.intact
    with pytest.raises(AuditLogError, match="key was replaced"):
        AuditLog(fleet, key_path=fleet_key)


def test_settings_veilpix_never_writes(pg: pgkit.Cluster, fleet: str, fleet_key: Path) -> None:
    pg.psql(fleet, "UPDATE veilpix.meta SET value = 'zz' WHERE key = 'public_key'")
    result = _verify(fleet, None)
    assert ("bad-signature", None) in _kinds(result)
    with pytest.raises(AuditLogError, match="never writes"):
        AuditLog(fleet, key_path=fleet_key)


def test_a_subject_key_deleted_without_an_erasure(
    pg: pgkit.Cluster, fleet_url: str, fleet_key: Path
) -> None:
    with AuditLog(fleet_url, key_path=fleet_key) as log:
        log.begin(transfer(1, subject_ref="erin")).finish(status=200)
    pg.psql(fleet_url, "DELETE FROM veilpix.subject_keys")
    result = _verify(fleet_url, None)
    assert ("erasure", None) in _kinds(result)
