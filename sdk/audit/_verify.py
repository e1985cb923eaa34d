"""Offline verification of a transfer log with nothing but its Ed25519 public key.

The verifier recomputes every entry hash and link, checks every checkpoint signature and that
each checkpoint still matches the entry it signed, and accounts for prune bridges and erasure
tombstones. It reports every problem it finds, the first one first:

- ``gap``: entries are missing (deleted rows, or a head cut without a prune bridge);
- ``broken-link``: an entry does not chain onto the one before (inserted or reordered);
- ``modified``: an entry's content no longer matches its own hash;
- ``forged``: an entry does not carry the MAC the key file's key gives it: it was written, or
  rewritten with its hashes recomputed, by someone without the key file (checked only when
  the key file is at hand; without it, entries after the last checkpoint are unchecked);
- ``bad-signature`` / ``checkpoint-gap``: a checkpoint was forged, replaced or removed;
- ``checkpoint-mismatch``: an entry differs from what a checkpoint signed (rebuilt chain);
- ``missing-checkpoint``: every ``checkpoint_every``-th entry is signed in the transaction that
  writes it, and the interval itself is signed when the log is created; a multiple without its
  checkpoint means checkpoints were deleted (and the chain after them possibly rewritten);
- ``truncated``: a checkpoint signs entries that are no longer there;
- ``unsigned-tail``: entries after the last checkpoint (a live writer between checkpoints,
  a crash not yet recovered, or rows appended by someone without the signing key);
- ``rolled-back``: a head saved earlier (``--expect``), or the newest checkpoint the key file
  recorded, is no longer in the log: the end was cut back past it, checkpoints and all;
- ``key-file``: the key file found for the log is damaged, belongs to another log, or has
  moved on to the log this one was restarted as;
- ``key-mismatch``, ``out-of-order``, ``orphan``, ``erasure``: see the messages.

Every result names its ``head``: a short token for the newest valid checkpoint. Saved outside
the log (a ticket, the SIEM, a cron job's output) and given back with ``expect=``, it turns the
one thing a chain cannot show, that nothing was cut off the end, into something it can.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from veilpix._errors import AuditLogError, ConfigError
from veilpix.audit._keys import KeyFile, key_id, verify_signature
from veilpix.audit._log import KINDS, checkpoint_message, entry_hash, founding_statement, genesis

__all__ = [
    "Problem",
    "VerifyResult",
    "authenticate",
    "check_tail",
    "verify_connection",
    "verify_log",
]

_SELECT_ENTRIES = "SELECT seq, kind, record, ts, subject, body, prev, hash, mac FROM entries"
# At one entry, the problem that explains the others comes first.
_RANK = {k: i for i, k in enumerate((
    "key-mismatch", "key-file", "gap", "broken-link", "modified", "forged", "out-of-order",
    "orphan",
    "erasure",
    "checkpoint-gap", "bad-signature", "checkpoint-mismatch", "missing-checkpoint", "truncated",
    "rolled-back",
    "unsigned-tail",
))}  # fmt: skip


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the log. ``seq`` is the entry (or checkpoint id) concerned."""

    kind: str
    seq: int | None
    message: str


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of :func:`verify_log`. ``ok`` only when nothing at all is wrong, including an
    unsigned tail; ``intact`` when no tampering was found (an unsigned tail may remain)."""

    path: str
    log_id: str
    key_id: str
    key_source: str
    entries: int = 0
    records: int = 0
    pending: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    checkpoints: int = 0
    signed_through: int | None = None
    unsigned_tail: int = 0
    pruned_through: int | None = None
    erasures: int = 0
    head: str | None = None
    # entries whose MAC holds, checked with the key file (None: no key file at hand), and
    # the first entry that got its MAC when written (older ones got it when the log was
    # upgraded)
    authenticated: int | None = None
    mac_since: int | None = None
    restarts: tuple[dict[str, Any], ...] = ()  # signed restart statements in this log
    problems: tuple[Problem, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def intact(self) -> bool:
        return all(p.kind == "unsigned-tail" for p in self.problems)

    @property
    def first_problem(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"], out["intact"] = self.ok, self.intact
        return out


def _walk(
    rows: Iterable[tuple[Any, ...]], seq: int, prev: bytes
) -> Iterator[tuple[tuple[Any, ...], Problem | None]]:
    """Check each entry against its predecessor; yield (row, first problem with it)."""
    last_ts = ""
    for row in rows:
        s, kind, record, ts, subject, body, row_prev, row_hash = row[:8]
        problem = None
        if s != seq:
            what = f"entry {seq} is" if s == seq + 1 else f"entries {seq}..{s - 1} are"
            problem = Problem("gap", seq, f"{what} missing before entry {s} (rows deleted)")
        elif _b(row_prev) != prev:
            problem = Problem(
                "broken-link", s,
                f"entry {s} does not chain onto entry {s - 1} (a row was inserted, replaced "
                "or reordered)",
            )  # fmt: skip
        elif entry_hash(_b(row_prev), s, kind, record, ts, subject, body) != _b(row_hash):
            problem = Problem("modified", s, f"entry {s} ({kind}) was altered after it was written")
        elif kind not in KINDS:
            problem = Problem("modified", s, f"entry {s} has an unknown kind {kind!r}")
        elif ts < last_ts:
            problem = Problem("out-of-order", s, f"entry {s} is dated before entry {s - 1}")
        yield row, problem
        seq, prev, last_ts = s + 1, _b(row_hash), max(ts, last_ts)


class _Start(NamedTuple):
    """Where the chain starts: the first entry expected, its ``prev``, and the prune bridge
    (the entry it cut through, the anchor hash, the prune entry's own seq), if any."""

    seq: int
    prev: bytes
    through: int | None = None
    anchor: bytes | None = None
    bridge: int | None = None


def _start(db: sqlite3.Connection, log_id: str) -> tuple[_Start, Problem | None]:
    """The start of the chain, and a problem when the newest prune entry does not describe a
    cut before itself (a forged bridge would otherwise move the start anywhere); the chain
    is then checked from the beginning."""
    row = db.execute(
        "SELECT seq, body FROM entries WHERE kind='prune' ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    plain = _Start(1, genesis(log_id))
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
            "modified", seq if type(seq) is int else None,
            f"prune entry {seq} is not a prune veilpix wrote ({exc})",
        )  # fmt: skip
    return _Start(through + 1, anchor, through, anchor, seq), None


def _b(value: object) -> bytes:
    """A stored BLOB as bytes; anything else is a value veilpix never writes there (and
    ``bytes()`` of a large integer would allocate that many bytes)."""
    if isinstance(value, bytes):
        return value
    raise TypeError(f"{type(value).__name__} where veilpix stores bytes")


def _int(value: object) -> int:
    if type(value) is not int:
        raise TypeError(f"{type(value).__name__} where veilpix stores a whole number")
    return value


def _mac_problem(row: tuple[Any, ...], keys: KeyFile, log_id: str) -> Problem | None:
    """A problem when the entry in ``row`` (``_SELECT_ENTRIES``'s columns) lacks its MAC."""
    return _forged(row[0], row[1], _b(row[7]), row[8], keys, log_id)


def _forged(  # noqa: PLR0917 - an entry's seq, kind, hash and MAC, and what checks them
    seq: int, kind: str, digest: bytes, mac: object, keys: KeyFile, log_id: str
) -> Problem | None:
    if isinstance(mac, bytes) and hmac.compare_digest(mac, keys.entry_mac(digest, log_id)):
        return None
    return Problem(
        "forged", seq,
        f"entry {seq} ({kind}) does not carry the log's MAC: it was written, or rewritten "
        "with its hashes recomputed, by someone without the key file",
    )  # fmt: skip


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
            "rolled-back", state.get("seq"),
            f"the key file records {said}, but the log ends at {now}: it was cut back, emptied "
            "or replaced by an older copy",
        )  # fmt: skip
    if row[0] != state.get("seq") or (
        hashlib.sha256(_b(row[1])).hexdigest() != state.get("signature")
    ):
        return Problem(
            "rolled-back", state.get("seq"),
            f"checkpoint {cp} is not the one the key file recorded ({said}): the log was "
            "replaced or rebuilt",
        )  # fmt: skip
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
        return _strange(exc)


def _strange(exc: BaseException) -> Problem:
    return Problem(
        "modified", None,
        f"the log holds values veilpix never writes ({type(exc).__name__}: {exc})",
    )  # fmt: skip


def _check_tail(
    db: sqlite3.Connection, log_id: str, every: int, public_key: bytes, keys: KeyFile | None
) -> Problem | None:
    if keys is not None:
        problem = state_problem(db, log_id, keys)
        if problem is not None:
            return problem
    start, problem = _start(db, log_id)
    if problem is not None:
        return problem
    seq, prev = start.seq, start.prev
    cps = db.execute(
        "SELECT id, seq, hash, ts, reason, signature FROM checkpoints ORDER BY id DESC LIMIT 2"
    ).fetchall()
    signed = 0
    if cps:
        cid, cseq, chash = _int(cps[0][0]), _int(cps[0][1]), _b(cps[0][2])
        cts, reason, sig = cps[0][3], cps[0][4], _b(cps[0][5])
        prev_sig = hashlib.sha256(_b(cps[1][5])).digest() if len(cps) > 1 else genesis(log_id)
        message = checkpoint_message(log_id, cid, cseq, chash, cts, reason, prev_sig)
        if not verify_signature(public_key, sig, message):
            return Problem(
                "bad-signature", cseq, f"checkpoint {cid} does not carry a valid signature"
            )
        signed = cseq
        if start.through is None or cseq > start.through:
            row = db.execute("SELECT hash FROM entries WHERE seq=?", (cseq,)).fetchone()
            if row is None or _b(row[0]) != chash:
                return Problem(
                    "checkpoint-mismatch", cseq, f"entry {cseq} no longer matches the last checkpoint"
                )  # fmt: skip
            seq, prev = cseq + 1, chash
    if start.bridge is not None and signed < start.bridge:
        return Problem(
            "missing-checkpoint", start.bridge,
            f"prune entry {start.bridge} carries no checkpoint (a prune signs itself): it was "
            "not written by veilpix",
        )  # fmt: skip
    head = db.execute("SELECT max(seq) FROM entries").fetchone()[0]
    if head is not None and _int(head) // every > max(signed, start.through or 0) // every:
        due = (max(signed, start.through or 0) // every + 1) * every
        return Problem(
            "missing-checkpoint", due,
            f"entry {due} should carry a checkpoint and none is there (checkpoints removed?)",
        )  # fmt: skip
    return _walk_tail(db, seq, prev, keys, log_id)


def _walk_tail(
    db: sqlite3.Connection, seq: int, prev: bytes, keys: KeyFile | None, log_id: str
) -> Problem | None:
    rows = db.execute(_SELECT_ENTRIES + " WHERE seq>=? ORDER BY seq", (seq,))
    for row, found in _walk(rows, seq, prev):
        problem = found if found is not None or keys is None else _mac_problem(row, keys, log_id)
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
        return _strange(exc)


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
    if head is None or _int(head) < kseq:
        return Problem(
            "rolled-back", head,
            f"the log was cut back to {'nothing' if head is None else f'entry {head}'} while "
            f"a writer had written or checked it up to entry {kseq}",
        )  # fmt: skip
    start, problem = _start(db, log_id)
    if problem is not None:
        return problem
    if kseq < start.seq:  # another writer pruned past it: check from the prune bridge on,
        # the prune entry (after the bridge, so walked and MAC-checked) included
        return _walk_links(db, start.seq, start.prev, keys, log_id)
    row = db.execute("SELECT hash FROM entries WHERE seq=?", (kseq,)).fetchone()
    if row is None or _b(row[0]) != khash:
        # name the first entry that gives it away, where the check on open can
        return check_tail(db, log_id, every, public_key, keys=keys) or Problem(
            "modified", kseq,
            f"entry {kseq} is no longer the entry this writer wrote or checked (replaced, or "
            "the chain rebuilt)",
        )  # fmt: skip
    return _walk_links(db, kseq + 1, khash, keys, log_id)


def _walk_links(
    db: sqlite3.Connection, seq: int, prev: bytes, keys: KeyFile, log_id: str
) -> Problem | None:
    """What a running writer checks of the entries other writers appended: one after the
    other, each linking onto the one before, each with its MAC. Their content is not hashed
    again: a MAC over a stored hash shows a key holder wrote that hash, so nobody without the
    key file can have made it; content changed under an unchanged hash is verify's to find
    (``modified``), whatever is signed afterwards."""
    rows = db.execute("SELECT seq, kind, prev, hash, mac FROM entries WHERE seq>=? ORDER BY seq",
                      (seq,))  # fmt: skip
    for s, kind, row_prev, row_hash, mac in rows:
        if s != seq or _b(row_prev) != prev:
            return _walk_tail(db, seq, prev, keys, log_id)  # the full check names it
        digest = _b(row_hash)
        problem = _forged(s, kind, digest, mac, keys, log_id)
        if problem is not None:
            return problem
        seq, prev = s + 1, digest
    return None


_HEAD = "vph1"


def head_token(log_id: str, cp_id: int, seq: int, signature: bytes) -> str:
    """``vph1:<log id>:<checkpoint id>:<entry>:<SHA-256 of the signature>``."""
    return f"{_HEAD}:{log_id}:{cp_id}:{seq}:{hashlib.sha256(signature).hexdigest()}"


def parse_head(token: str) -> tuple[str, int, int, str]:
    parts = token.strip().split(":")
    try:
        if len(parts) != 5 or parts[0] != _HEAD or len(parts[4]) != 64:
            raise ValueError(token)
        int(parts[4], 16)
        return parts[1], int(parts[2]), int(parts[3]), parts[4]
    except ValueError:
        raise ConfigError(
            f"{token.strip()[:80]!r} is not a head saved from 'veilpix audit verify'",
            hint="it looks like vph1:<log id>:<checkpoint>:<entry>:<64 hex digits>",
        ) from None


def verify_connection(
    db: sqlite3.Connection,
    *,
    public_key: bytes | None = None,
    path: str = "",
    expect: str | None = None,
    keys: KeyFile | None = None,
    key_problem: Problem | None = None,
) -> VerifyResult:
    """Verify the log open on ``db``. ``keys`` (the log's key file, or the one that wrote it
    before a restart) adds the per-entry MAC check and the check against the state the key
    file recorded; without it, entries after the last checkpoint cannot be authenticated.
    ``key_problem``: what is wrong with the key file found for this log (foreign, damaged,
    moved on to a restarted log), reported with the rest. Values of types veilpix never
    stores give a ``modified`` problem, not an exception."""
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        log_id, stored = str(meta["log_id"]), bytes.fromhex(meta["public_key"])
    except (sqlite3.Error, KeyError, ValueError, TypeError) as exc:
        raise AuditLogError(f"{path!r} is not a readable veilpix transfer log: {exc}") from exc
    try:
        return _verify(db, meta, log_id, stored, public_key, path, expect, keys, key_problem)
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError, sqlite3.Error) as exc:
        if isinstance(exc, ConfigError):  # a bad --expect: the caller's mistake, not the log's
            raise
        key = stored if public_key is None else public_key
        return VerifyResult(path=path, log_id=log_id, key_id=key_id(key),
                            key_source="log" if public_key is None else "given",
                            problems=(_strange(exc),))  # fmt: skip


def _verify(  # noqa: PLR0917 - one pass over the log, reporting as it goes
    db: sqlite3.Connection,
    meta: dict[str, Any],
    log_id: str,
    stored: bytes,
    public_key: bytes | None,
    path: str,
    expect: str | None,
    keys: KeyFile | None,
    key_problem: Problem | None,
) -> VerifyResult:
    problems: list[Problem] = [] if key_problem is None else [key_problem]
    key = stored if public_key is None else public_key
    try:
        every = int(meta["checkpoint_every"])
        founding = founding_statement(log_id, every, meta["created"])
        founded = verify_signature(key, bytes.fromhex(meta["founding_signature"]), founding)
    except (KeyError, ValueError):
        every, founded = 0, False
    if not founded:
        problems.append(Problem(
            "bad-signature", None,
            f"the log's founding statement (its id and checkpoint interval) is not signed by "
            f"key {key_id(key)}: the log was re-created or its settings altered",
        ))  # fmt: skip
    if public_key is not None and public_key != stored:
        problems.append(Problem(
            "key-mismatch", None,
            f"the log names signing key {key_id(stored)}, not the given {key_id(public_key)}: "
            "its checkpoints are checked against the given key",
        ))  # fmt: skip
    cps = db.execute(
        "SELECT id, seq, hash, ts, reason, key_id, signature FROM checkpoints ORDER BY id"
    ).fetchall()
    signed_seqs = {int(c[1]) for c in cps}
    start, problem = _start(db, log_id)
    if problem is not None:
        problems.append(problem)
    seq0, prev0, through, anchor = start.seq, start.prev, start.through, start.anchor
    hashes: dict[int, bytes] = {}
    begun: set[str] = set()
    finished: set[str] = set()
    erased: list[tuple[int, str]] = []
    restarts: list[dict[str, Any]] = []
    entries = records = forged = 0
    first = last = None
    if keys is not None and not keys.knows(log_id):
        keys = None
    if keys is not None:
        problem = state_problem(db, log_id, keys)
        if problem is not None:
            problems.append(problem)
    rows = db.execute(_SELECT_ENTRIES + " ORDER BY seq")
    for row, found in _walk(rows, seq0, prev0):
        s, kind, record, _ts, subject = row[:5]
        problem = found if found is not None or keys is None else _mac_problem(row, keys, log_id)
        entries += 1
        forged += problem is not None and problem.kind == "forged"
        first = s if first is None else first
        last = s
        if problem is not None and problem.kind == "gap" and first == s and through is None:
            problems.append(Problem(
                "gap", 1, f"entries 1..{s - 1} are missing and no prune entry accounts for them"
            ))  # fmt: skip
        elif problem is not None:
            problems.append(problem)
        if s in signed_seqs:
            hashes[s] = _b(row[7])
        if kind == "begin":
            records += 1
            begun.add(record)
        elif kind == "finish":
            if record in finished:
                problems.append(Problem("orphan", s, f"transfer {record} is finished twice"))
            elif record not in begun and through is None:
                problems.append(Problem("orphan", s, f"entry {s} finishes {record}, never begun"))
            finished.add(record)
        elif kind == "erase" and subject:
            erased.append((s, subject))
        elif kind == "restart":
            with suppress(ValueError, TypeError):  # altered: reported by _walk already
                restarts.append({"seq": s, "ts": row[3], **json.loads(row[5])})
    if first is None and through is None and cps:
        problems.append(Problem("truncated", None, "the log has checkpoints but no entries"))

    signed_through = None
    head = None
    valid_sigs: dict[int, tuple[int, bytes]] = {}
    valid_seqs: set[int] = set()
    prev_sig = genesis(log_id)
    last_cp_seq = 0
    for i, (cid_, cseq_, chash_, cts, reason, _kid, sig_) in enumerate(cps, start=1):
        cid, cseq, chash, sig = _int(cid_), _int(cseq_), _b(chash_), _b(sig_)
        if cid != i:
            problems.append(Problem("checkpoint-gap", cseq, f"checkpoint {i} is missing"))
        message = checkpoint_message(log_id, cid, cseq, chash, cts, reason, prev_sig)
        prev_sig = hashlib.sha256(sig).digest()
        if not verify_signature(key, sig, message):
            problems.append(Problem(
                "bad-signature", cseq,
                f"checkpoint {cid} (entry {cseq}) does not carry a valid signature by key "
                f"{key_id(key)}: it was forged, altered or replaced",
            ))  # fmt: skip
            continue
        if cseq < last_cp_seq:
            problems.append(Problem("checkpoint-gap", cseq, f"checkpoint {cid} goes backwards"))
        last_cp_seq = max(last_cp_seq, cseq)
        valid_seqs.add(cseq)
        valid_sigs[cid] = (cseq, sig)
        if through is not None and cseq <= through:
            if cseq == through and chash != anchor:
                problems.append(Problem(
                    "checkpoint-mismatch", cseq,
                    f"the prune bridge does not match what checkpoint {cid} signed for entry {cseq}",
                ))  # fmt: skip
            continue
        if last is None or cseq > last:
            problems.append(Problem(
                "truncated", cseq,
                f"checkpoint {cid} signs entry {cseq} but the log ends at "
                f"{'nothing' if last is None else f'entry {last}'} (the tail was cut off)",
            ))  # fmt: skip
            continue
        if hashes.get(cseq) != chash:
            problems.append(Problem(
                "checkpoint-mismatch", cseq,
                f"checkpoint {cid} signs entry {cseq}, which is missing" if cseq not in hashes
                else f"entry {cseq} is not the entry checkpoint {cid} signed (altered or rebuilt)",
            ))  # fmt: skip
            continue
        signed_through = cseq if signed_through is None else max(signed_through, cseq)
        head = head_token(log_id, cid, cseq, sig)

    if every > 0 and first is not None and last is not None:
        due = [m for m in range(-(-first // every) * every, last + 1, every) if m not in valid_seqs]
        if due:
            more = f" (and {len(due) - 1} more)" if len(due) > 1 else ""
            problems.append(Problem(
                "missing-checkpoint", due[0],
                f"entry {due[0]} should carry a checkpoint (one is signed every {every} "
                f"entries) and none is there{more}: checkpoints were removed",
            ))  # fmt: skip
    if expect is not None:
        want_log, want_id, want_seq, want_sig = parse_head(expect)
        if want_log != log_id:
            raise ConfigError(f"the saved head belongs to log {want_log}, not to {log_id}")
        have = valid_sigs.get(want_id)
        if have is None or have[0] != want_seq or hashlib.sha256(have[1]).hexdigest() != want_sig:
            problems.append(Problem(
                "rolled-back", want_seq,
                f"the saved head (checkpoint {want_id} at entry {want_seq}) is no longer in the "
                "log: it was cut back, or that checkpoint was replaced",
            ))  # fmt: skip
    unsigned = 0
    if last is not None:
        floor = signed_through if signed_through is not None else (through or 0)
        unsigned = max(last - floor, 0)
        if unsigned:
            problems.append(Problem(
                "unsigned-tail", floor + 1,
                (f"{unsigned} entr{'y' if unsigned == 1 else 'ies'} after entry {floor} "
                 if floor else f"{unsigned} entr{'y' if unsigned == 1 else 'ies'} ")
                + f"carr{'ies' if unsigned == 1 else 'y'} no signature yet (a writer is running, "
                "or one stopped without closing; opening the log for writing signs the tail "
                "after checking it)"
                + (": their MACs were checked with the key file" if keys is not None else
                   ": only the key file's MAC covers them, and no key file was at hand"),
            ))  # fmt: skip
    kept = {r[0] for r in db.execute("SELECT kid FROM subject_keys")}
    for s, kid in erased:
        if kid in kept:
            problems.append(Problem("erasure", s, f"erasure {s}: the subject key still exists"))
    problems.sort(
        key=lambda p: (p.kind == "unsigned-tail", -1 if p.seq is None else p.seq, _RANK[p.kind])
    )
    return VerifyResult(
        path=path,
        log_id=log_id,
        key_id=key_id(key),
        key_source="log" if public_key is None else "given",
        entries=entries,
        records=records,
        pending=len(begun - finished),
        first_seq=first,
        last_seq=last,
        checkpoints=len(cps),
        signed_through=signed_through,
        unsigned_tail=unsigned,
        pruned_through=through,
        erasures=len(erased),
        head=head,
        authenticated=None if keys is None else entries - forged,
        mac_since=_int(int(meta["mac_since"])) if "mac_since" in meta else None,
        restarts=tuple(restarts),
        problems=tuple(problems),
    )


def verify_log(
    path: str | Path,
    *,
    public_key: bytes | None = None,
    expect: str | None = None,
    key_path: str | Path | None = None,
) -> VerifyResult:
    """Verify the log at ``path`` read-only. ``public_key`` (raw Ed25519, see
    ``veilpix audit key``) makes the check independent of the key stored in the log;
    ``expect`` (a ``head`` saved from an earlier result) checks nothing was cut off since.
    The log's key file (``key_path``, else ``$VEILPIX_LOG_KEY``, else beside the log), when
    it can be read, adds the MAC of every entry and the newest checkpoint it recorded."""
    from veilpix.audit._log import AuditLog

    with AuditLog(path, readonly=True, key_path=key_path) as log:
        return log.verify(public_key, expect=expect)
