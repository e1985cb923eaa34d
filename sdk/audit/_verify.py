"""Offline verification of a transfer log with nothing but its Ed25519 public key.

The verifier recomputes every entry hash and link, checks every checkpoint signature and that
each checkpoint still matches the entry it signed, and accounts for prune bridges and erasure
tombstones (walking the chain with :func:`veilpix.audit._checks.walk`, which the writers' own
checks use too; :func:`veilpix.verify_log` opens a log read-only and runs this). It reports
every problem it finds, the first one first:

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
import json
import sqlite3
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from typing import Any

from veilpix._errors import AuditLogError, ConfigError
from veilpix.audit._chain import checkpoint_message, founding_statement, genesis
from veilpix.audit._checks import (
    RANK,
    SELECT_ENTRIES,
    Problem,
    blob,
    chain_start,
    due_checkpoints,
    mac_problem,
    missing_subject_keys,
    state_problem,
    strange,
    walk,
    whole,
)
from veilpix.audit._keys import KeyFile, key_id, verify_signature

__all__ = ["VerifyResult", "head_token", "parse_head", "verify_connection"]


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of :func:`veilpix.verify_log`. ``ok`` only when nothing at all is wrong, including an
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
    # a fleet log (PostgreSQL): one report per writer (see veilpix.audit.fleet), else empty
    writers: tuple[dict[str, Any], ...] = ()

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
        return VerifyResult(
            path=path,
            log_id=log_id,
            key_id=key_id(key),
            key_source="log" if public_key is None else "given",
            problems=(strange(exc),),
        )


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
        problems.append(
            Problem(
                "bad-signature",
                None,
                f"the log's founding statement (its id and checkpoint interval) is not signed by "
                f"key {key_id(key)}: the log was re-created or its settings altered",
            )
        )
    if public_key is not None and public_key != stored:
        problems.append(
            Problem(
                "key-mismatch",
                None,
                f"the log names signing key {key_id(stored)}, not the given {key_id(public_key)}: "
                "its checkpoints are checked against the given key",
            )
        )
    cps = db.execute(
        "SELECT id, seq, hash, ts, reason, key_id, signature FROM checkpoints ORDER BY id"
    ).fetchall()
    signed_seqs = {int(c[1]) for c in cps}
    start, problem = chain_start(db, log_id)
    if problem is not None:
        problems.append(problem)
    seq0, prev0, through, anchor = start.seq, start.prev, start.through, start.anchor
    hashes: dict[int, bytes] = {}
    begun: set[str] = set()
    finished: set[str] = set()
    subjects: set[str] = set()  # the subject keys the transfers were sealed under
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
    rows = db.execute(SELECT_ENTRIES + " ORDER BY seq")
    for row, found in walk(rows, seq0, prev0):
        s, kind, record, _ts, subject = row[:5]
        problem = found if found is not None or keys is None else mac_problem(row, keys, log_id)
        entries += 1
        forged += problem is not None and problem.kind == "forged"
        first = s if first is None else first
        last = s
        if problem is not None and problem.kind == "gap" and first == s and through is None:
            problems.append(
                Problem(
                    "gap", 1, f"entries 1..{s - 1} are missing and no prune entry accounts for them"
                )
            )
        elif problem is not None:
            problems.append(problem)
        if s in signed_seqs:
            hashes[s] = blob(row[7])
        if kind == "begin":
            records += 1
            begun.add(record)
            if isinstance(subject, str):
                subjects.add(subject)
        elif kind == "finish":
            if record in finished:
                problems.append(Problem("orphan", s, f"transfer {record} is finished twice"))
            elif record not in begun and through is None:
                problems.append(Problem("orphan", s, f"entry {s} finishes {record}, never begun"))
            finished.add(record)
        elif kind == "erase" and subject:
            erased.append((s, subject))
        elif kind == "restart":
            with suppress(ValueError, TypeError):  # altered: reported by walk already
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
        cid, cseq, chash, sig = whole(cid_), whole(cseq_), blob(chash_), blob(sig_)
        if cid != i:
            problems.append(Problem("checkpoint-gap", cseq, f"checkpoint {i} is missing"))
        message = checkpoint_message(log_id, cid, cseq, chash, cts, reason, prev_sig)
        prev_sig = hashlib.sha256(sig).digest()
        if not verify_signature(key, sig, message):
            problems.append(
                Problem(
                    "bad-signature",
                    cseq,
                    f"checkpoint {cid} (entry {cseq}) does not carry a valid signature by key "
                    f"{key_id(key)}: it was forged, altered or replaced",
                )
            )
            continue
        if cseq < last_cp_seq:
            problems.append(Problem("checkpoint-gap", cseq, f"checkpoint {cid} goes backwards"))
        last_cp_seq = max(last_cp_seq, cseq)
        valid_seqs.add(cseq)
        valid_sigs[cid] = (cseq, sig)
        if through is not None and cseq <= through:
            if cseq == through and chash != anchor:
                problems.append(
                    Problem(
                        "checkpoint-mismatch",
                        cseq,
                        f"the prune bridge does not match what checkpoint {cid} signed for entry {cseq}",
                    )
                )
            continue
        if last is None or cseq > last:
            problems.append(
                Problem(
                    "truncated",
                    cseq,
                    f"checkpoint {cid} signs entry {cseq} but the log ends at "
                    f"{'nothing' if last is None else f'entry {last}'} (the tail was cut off)",
                )
            )
            continue
        if hashes.get(cseq) != chash:
            problems.append(
                Problem(
                    "checkpoint-mismatch",
                    cseq,
                    f"checkpoint {cid} signs entry {cseq}, which is missing"
                    if cseq not in hashes
                    else f"entry {cseq} is not the entry checkpoint {cid} signed (altered or rebuilt)",
                )
            )
            continue
        signed_through = cseq if signed_through is None else max(signed_through, cseq)
        head = head_token(log_id, cid, cseq, sig)

    if every > 0 and first is not None and last is not None:
        due = due_checkpoints(first, last, every, valid_seqs)
        if due:
            more = f" (and {len(due) - 1} more)" if len(due) > 1 else ""
            problems.append(
                Problem(
                    "missing-checkpoint",
                    due[0],
                    f"entry {due[0]} should carry a checkpoint (one is signed every {every} "
                    f"entries) and none is there{more}: checkpoints were removed",
                )
            )
    if expect is not None:
        want_log, want_id, want_seq, want_sig = parse_head(expect)
        if want_log != log_id:
            raise ConfigError(f"the saved head belongs to log {want_log}, not to {log_id}")
        have = valid_sigs.get(want_id)
        if have is None or have[0] != want_seq or hashlib.sha256(have[1]).hexdigest() != want_sig:
            problems.append(
                Problem(
                    "rolled-back",
                    want_seq,
                    f"the saved head (checkpoint {want_id} at entry {want_seq}) is no longer in the "
                    "log: it was cut back, or that checkpoint was replaced",
                )
            )
    unsigned = 0
    if last is not None:
        floor = signed_through if signed_through is not None else (through or 0)
        unsigned = max(last - floor, 0)
        if unsigned:
            problems.append(
                Problem(
                    "unsigned-tail",
                    floor + 1,
                    (
                        f"{unsigned} entr{'y' if unsigned == 1 else 'ies'} after entry {floor} "
                        if floor
                        else f"{unsigned} entr{'y' if unsigned == 1 else 'ies'} "
                    )
                    + f"carr{'ies' if unsigned == 1 else 'y'} no signature yet (a writer is running, "
                    "or one stopped without closing; opening the log for writing signs the tail "
                    "after checking it)"
                    + (
                        ": their MACs were checked with the key file"
                        if keys is not None
                        else ": only the key file's MAC covers them, and no key file was at hand"
                    ),
                )
            )
    kept = {r[0] for r in db.execute("SELECT kid FROM subject_keys")}
    for s, kid in erased:
        if kid in kept:
            problems.append(Problem("erasure", s, f"erasure {s}: the subject key still exists"))
    gone = missing_subject_keys(subjects, kept, {kid for _, kid in erased})
    if gone is not None:
        problems.append(gone)
    problems.sort(
        key=lambda p: (p.kind == "unsigned-tail", -1 if p.seq is None else p.seq, RANK[p.kind])
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
        mac_since=whole(int(meta["mac_since"])) if "mac_since" in meta else None,
        restarts=tuple(restarts),
        problems=tuple(problems),
    )
