"""Tampering with a fleet log through psql, as someone with database access (and no key file)
would: verify names what was done and whose chain it was done to."""

from __future__ import annotations

from pathlib import Path

import pgkit
import pytest

from auditkit import transfer
from veilpix import AuditLog
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
