"""The chain checks a writer runs before it extends a log, and the walk verify shares with them.

:func:`check_tail` is what a writer checks on open (the last checkpoint, the key file's
recorded state, the tail's links and MACs); :func:`authenticate` what a running writer checks
of the entries other writers appended since it last looked. Both, like the full verification
(:mod:`veilpix.audit._verify`), walk entries with :func:`walk`, which checks each against the
one before it (sequence, link, hash, kind, time), and report a :class:`Problem` instead of
raising: values of types veilpix never stores are a problem too, not an error.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, get_args

from veilpix.audit._chain import KINDS, checkpoint_message, entry_hash, genesis
from veilpix.audit._keys import KeyFile, verify_signature

__all__ = [
    "RANK",
    "SELECT_ENTRIES",
    "Problem",
    "ProblemKind",
    "Start",
    "Walker",
    "authenticate",
    "blob",
    "chain_start",
    "check_tail",
    "due_checkpoints",
    "mac_problem",
    "missing_subject_keys",
    "state_problem",
    "strange",
    "walk",
    "whole",
]

SELECT_ENTRIES = "SELECT seq, kind, record, ts, subject, body, prev, hash, mac FROM entries"
# What can be wrong with a log (see :mod:`veilpix.audit._verify`). At one entry, the problem
# that explains the others comes first: this order.
ProblemKind = Literal[
    "key-mismatch",
    "key-file",
    "writer-forged",
    "writer-removed",
    "gap",
    "broken-link",
    "modified",
    "forged",
    "out-of-order",
    "orphan",
    "erasure",
    "checkpoint-gap",
    "bad-signature",
    "checkpoint-mismatch",
    "missing-checkpoint",
    "truncated",
    "rolled-back",
    "unsigned-tail",
]
RANK = {k: i for i, k in enumerate(get_args(ProblemKind))}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the log. ``seq`` is the entry (or checkpoint id) concerned; in a
    fleet log, ``writer`` is the writer whose chain holds it (None: the fleet as a whole)."""

    kind: ProblemKind
    seq: int | None
    message: str
    writer: int | None = None


def walk(
    rows: Iterable[tuple[Any, ...]], seq: int, prev: bytes
) -> Iterator[tuple[tuple[Any, ...], Problem | None]]:
    """Check each entry against its predecessor; yield (row, first problem with it)."""
    walker = Walker(seq, prev)
    for row in rows:
        yield row, walker.step(row)


class Walker:
    """:func:`walk` one entry at a time (a fleet's verify feeds each writer's its rows)."""

    __slots__ = ("last_ts", "prev", "seq")

    def __init__(self, seq: int, prev: bytes) -> None:
        self.seq, self.prev, self.last_ts = seq, prev, ""

    def step(self, row: tuple[Any, ...]) -> Problem | None:
        """The first problem with the entry in ``row`` (``SELECT_ENTRIES``'s columns)."""
        s, kind, record, ts, subject, body, row_prev, row_hash = row[:8]
        seq, prev = self.seq, self.prev
        problem = None
        if s != seq:
            what = f"entry {seq} is" if s == seq + 1 else f"entries {seq}..{s - 1} are"
            problem = Problem("gap", seq, f"{what} missing before entry {s} (rows deleted)")
        elif blob(row_prev) != prev:
            problem = Problem(
                "broken-link",
                s,
                f"entry {s} does not chain onto entry {s - 1} (a row was inserted, replaced "
                "or reordered)",
            )
        elif entry_hash(blob(row_prev), s, kind, record, ts, subject, body) != blob(row_hash):
            problem = Problem("modified", s, f"entry {s} ({kind}) was altered after it was written")
        elif kind not in KINDS:
            problem = Problem("modified", s, f"entry {s} has an unknown kind {kind!r}")
        elif ts < self.last_ts:
            problem = Problem("out-of-order", s, f"entry {s} is dated before entry {s - 1}")
        self.seq, self.prev, self.last_ts = s + 1, blob(row_hash), max(ts, self.last_ts)
        return problem


def due_checkpoints(first: int, last: int, every: int, valid: set[int]) -> list[int]:
    """The multiples of ``every`` from ``first`` to ``last`` that carry no valid checkpoint
    (every such entry is signed in the transaction that writes it)."""
    if every <= 0:
        return []
    return [m for m in range(-(-first // every) * every, last + 1, every) if m not in valid]


def missing_subject_keys(
    subjects: set[str], kept: set[str], erased: set[str], writer: int | None = None
) -> Problem | None:
    """A problem when subject keys the transfers were sealed under are gone and no erasure
    accounts for them: deleted behind veilpix's back (a subject "erased" without a record)."""
    gone = sorted(subjects - kept - erased)
    if not gone:
        return None
    return Problem(
        "erasure",
        None,
        f"{len(gone)} subject key{'s are' if len(gone) > 1 else ' is'} missing that no "
        f"erasure accounts for (first: {gone[0]}): deleted behind veilpix's back, their "
        "transfers' subject fields unreadable without a record of why",
        writer,
    )


class Start(NamedTuple):
    """Where the chain starts: the first entry expected, its ``prev``, and the prune bridge
    (the entry it cut through, the anchor hash, the prune entry's own seq), if any."""

    seq: int
    prev: bytes
    through: int | None = None
    anchor: bytes | None = None
    bridge: int | None = None


def chain_start(db: sqlite3.Connection, log_id: str) -> tuple[Start, Problem | None]:
    """The start of the chain, and a problem when the newest prune entry does not describe a
    cut before itself (a forged bridge would otherwise move the start anywhere); the chain
    is then checked from the beginning."""
    row = db.execute(
        "SELECT seq, body FROM entries WHERE kind='prune' ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    plain = Start(1, genesis(log_id))
    if row is None:
        return plain, None
    seq = row[0]
    try:
        bridge = json.loads(row[1])
        through, anchor = bridge["through"], bytes.fromhex(bridge["anchor"])
        if type(through) is not int or type(seq) is not int or not 0 < through < seq:
            raise ValueError("it does not cut before itself")
        if len(anchor) != 32:
            raise ValueError("its anchor is not a hash")
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        return plain, Problem(
            "modified",
            seq if type(seq) is int else None,
            f"prune entry {seq} is not a prune veilpix wrote ({exc})",
        )
    return Start(through + 1, anchor, through, anchor, seq), None


def blob(value: object) -> bytes:
    """A stored BLOB as bytes; anything else is a value veilpix never writes there (and
    ``bytes()`` of a large integer would allocate that many bytes)."""
    if isinstance(value, bytes):
        return value
    raise TypeError(f"{type(value).__name__} where veilpix stores bytes")


def whole(value: object) -> int:
    if type(value) is not int:
        raise TypeError(f"{type(value).__name__} where veilpix stores a whole number")
    return value


def mac_problem(row: tuple[Any, ...], keys: KeyFile, log_id: str) -> Problem | None:
    """A problem when the entry in ``row`` (``SELECT_ENTRIES``'s columns) lacks its MAC."""
    return _forged(row[0], row[1], blob(row[7]), row[8], keys, log_id)


def _forged(  # noqa: PLR0917 - an entry's seq, kind, hash and MAC, and what checks them
    seq: int, kind: str, digest: bytes, mac: object, keys: KeyFile, log_id: str
) -> Problem | None:
    if isinstance(mac, bytes) and hmac.compare_digest(mac, keys.entry_mac(digest, log_id)):
        return None
    return Problem(
        "forged",
        seq,
        f"entry {seq} ({kind}) does not carry the log's MAC: it was written, or rewritten "
        "with its hashes recomputed, by someone without the key file",
    )


def state_problem(db: sqlite3.Connection, log_id: str, keys: KeyFile) -> Problem | None:
    """The log against the newest checkpoint its key file recorded: that checkpoint must still
    be there, unchanged (a missing one means the log was cut back or emptied behind it)."""
    state = keys.state or {}
    cp = int(state.get("checkpoint") or 0)
    if keys.log_id != log_id or state.get("log_id") != log_id or not cp:
        return None
    row = db.execute("SELECT seq, signature FROM checkpoints WHERE id=?", (cp,)).fetchone()
    said = f"checkpoint {cp} (entry {state.get('seq')}, signed {state.get('ts')})"
    if row is None:
        newest = db.execute("SELECT max(id), max(seq) FROM checkpoints").fetchone()
        now = (
            "no checkpoint" if newest[0] is None else f"checkpoint {newest[0]} (entry {newest[1]})"
        )
        return Problem(
            "rolled-back",
            state.get("seq"),
            f"the key file records {said}, but the log ends at {now}: it was cut back, emptied "
            "or replaced by an older copy",
        )
    if row[0] != state.get("seq") or (
        hashlib.sha256(blob(row[1])).hexdigest() != state.get("signature")
    ):
        return Problem(
            "rolled-back",
            state.get("seq"),
            f"checkpoint {cp} is not the one the key file recorded ({said}): the log was "
            "replaced or rebuilt",
        )
    return None


def check_tail(
    db: sqlite3.Connection,
    log_id: str,
    every: int,
    public_key: bytes,
    *,
    keys: KeyFile | None = None,
) -> Problem | None:
    """The check a writer runs on open before it extends and signs the log: the last
    checkpoint is genuine (signature, link to the one before) and signs an entry after any
    prune bridge (a real prune signs itself), the key file's recorded state is still there,
    the tail chains onto what the checkpoint signed and (with ``keys``) every tail entry
    carries its MAC, and the tail does not run past a multiple of ``every`` (where a
    checkpoint must be: a longer unsigned tail means checkpoints were removed). The rest is
    verify's job. Values of types veilpix never stores are a problem too, not an error."""
    try:
        return _check_tail(db, log_id, every, public_key, keys)
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
        return strange(exc)


def strange(exc: BaseException) -> Problem:
    return Problem(
        "modified",
        None,
        f"the log holds values veilpix never writes ({type(exc).__name__}: {exc})",
    )


def _check_tail(
    db: sqlite3.Connection, log_id: str, every: int, public_key: bytes, keys: KeyFile | None
) -> Problem | None:
    if keys is not None:
        problem = state_problem(db, log_id, keys)
        if problem is not None:
            return problem
    start, problem = chain_start(db, log_id)
    if problem is not None:
        return problem
    seq, prev = start.seq, start.prev
    cps = db.execute(
        "SELECT id, seq, hash, ts, reason, signature FROM checkpoints ORDER BY id DESC LIMIT 2"
    ).fetchall()
    signed = 0
    if cps:
        cid, cseq, chash = whole(cps[0][0]), whole(cps[0][1]), blob(cps[0][2])
        cts, reason, sig = cps[0][3], cps[0][4], blob(cps[0][5])
        prev_sig = hashlib.sha256(blob(cps[1][5])).digest() if len(cps) > 1 else genesis(log_id)
        message = checkpoint_message(log_id, cid, cseq, chash, cts, reason, prev_sig)
        if not verify_signature(public_key, sig, message):
            return Problem(
                "bad-signature", cseq, f"checkpoint {cid} does not carry a valid signature"
            )
        signed = cseq
        if start.through is None or cseq > start.through:
            row = db.execute("SELECT hash FROM entries WHERE seq=?", (cseq,)).fetchone()
            if row is None or blob(row[0]) != chash:
                return Problem(
                    "checkpoint-mismatch",
                    cseq,
                    f"entry {cseq} no longer matches the last checkpoint",
                )
            seq, prev = cseq + 1, chash
    if start.bridge is not None and signed < start.bridge:
        return Problem(
            "missing-checkpoint",
            start.bridge,
            f"prune entry {start.bridge} carries no checkpoint (a prune signs itself): it was "
            "not written by veilpix",
        )
    head = db.execute("SELECT max(seq) FROM entries").fetchone()[0]
    if head is not None and whole(head) // every > max(signed, start.through or 0) // every:
        due = (max(signed, start.through or 0) // every + 1) * every
        return Problem(
            "missing-checkpoint",
            due,
            f"entry {due} should carry a checkpoint and none is there (checkpoints removed?)",
        )
    return _walk_tail(db, seq, prev, keys, log_id)


def _walk_tail(
    db: sqlite3.Connection, seq: int, prev: bytes, keys: KeyFile | None, log_id: str
) -> Problem | None:
    rows = db.execute(SELECT_ENTRIES + " WHERE seq>=? ORDER BY seq", (seq,))
    for row, found in walk(rows, seq, prev):
        problem = found if found is not None or keys is None else mac_problem(row, keys, log_id)
        if problem is not None:
            return problem
    return None


def authenticate(  # noqa: PLR0917 - what a writer knows about its log
    db: sqlite3.Connection,
    log_id: str,
    keys: KeyFile,
    known: tuple[int, bytes] | None,
    public_key: bytes,
    every: int,
) -> Problem | None:
    """What a running writer checks when the log's head is not the entry it last wrote or
    checked (``known``: its seq and hash): that entry is unchanged and every entry after it
    links on and carries its MAC. Nothing known yet: as on open (:func:`check_tail`)."""
    if known is None:
        return check_tail(db, log_id, every, public_key, keys=keys)
    try:
        return _authenticate(db, log_id, keys, known, public_key, every)
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
        return strange(exc)


def _authenticate(  # noqa: PLR0917
    db: sqlite3.Connection,
    log_id: str,
    keys: KeyFile,
    known: tuple[int, bytes],
    public_key: bytes,
    every: int,
) -> Problem | None:
    kseq, khash = known
    head = db.execute("SELECT max(seq) FROM entries").fetchone()[0]
    if head is None or whole(head) < kseq:
        return Problem(
            "rolled-back",
            head,
            f"the log was cut back to {'nothing' if head is None else f'entry {head}'} while "
            f"a writer had written or checked it up to entry {kseq}",
        )
    start, problem = chain_start(db, log_id)
    if problem is not None:
        return problem
    if kseq < start.seq:  # another writer pruned past it: check from the prune bridge on,
        # the prune entry (after the bridge, so walked and MAC-checked) included
        return _walk_links(db, start.seq, start.prev, keys, log_id)
    row = db.execute("SELECT hash FROM entries WHERE seq=?", (kseq,)).fetchone()
    if row is None or blob(row[0]) != khash:
        # name the first entry that gives it away, where the check on open can
        return check_tail(db, log_id, every, public_key, keys=keys) or Problem(
            "modified",
            kseq,
            f"entry {kseq} is no longer the entry this writer wrote or checked (replaced, or "
            "the chain rebuilt)",
        )
    return _walk_links(db, kseq + 1, khash, keys, log_id)


def _walk_links(
    db: sqlite3.Connection, seq: int, prev: bytes, keys: KeyFile, log_id: str
) -> Problem | None:
    """What a running writer checks of the entries other writers appended: one after the
    other, each linking onto the one before, each with its MAC. Their content is not hashed
    again: a MAC over a stored hash shows a key holder wrote that hash, so nobody without the
    key file can have made it; content changed under an unchanged hash is verify's to find
    (``modified``), whatever is signed afterwards."""
    rows = db.execute(
        "SELECT seq, kind, prev, hash, mac FROM entries WHERE seq>=? ORDER BY seq", (seq,)
    )
    for s, kind, row_prev, row_hash, mac in rows:
        if s != seq or blob(row_prev) != prev:
            return _walk_tail(db, seq, prev, keys, log_id)  # the full check names it
        digest = blob(row_hash)
        problem = _forged(s, kind, digest, mac, keys, log_id)
        if problem is not None:
            return problem
        seq, prev = s + 1, digest
    return None
