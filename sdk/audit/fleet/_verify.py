"""Verifying a fleet log from the database alone, with the fleet's public key.

What is checked, and what each finding means (the kinds are the file log's, see
:mod:`veilpix.audit._verify`, plus two of the registry's):

- the founding statement carries the fleet key's signature (``bad-signature``);
- the registry: writers numbered 1, 2, ... without a hole, each linking the one before,
  each registration signed by the fleet key and by the writer's own key
  (``writer-removed``: a registration deleted; ``writer-forged``: one nobody holding the key
  file made, or altered);
- the fleet's line of checkpoints: numbered without a hole, each naming the one before, each
  signed by its writer's registered key (or, ``adopted``, by the writer that closed a dead
  writer's chain): a writer removed or cut back, checkpoints and all, leaves a hole here
  (``checkpoint-gap``) unless it was the newest thing in the whole fleet, which only a head
  saved elsewhere (``--expect``) or a machine's key file can show (``rolled-back``);
- each writer's chain as the file log's: links, hashes, MACs (with the key file), kinds,
  dates, its own checkpoints (every ``checkpoint_every``-th entry and the first), what they
  signed still there (``truncated``, ``checkpoint-mismatch``), prune bridges;
- across the fleet: every finish has its begin (``orphan``), an erased subject's key is gone.

Every problem names its writer; the result lists each writer with its state (``running``:
its process holds the chain's lock now; ``stopped``: it stopped without closing
(killed, or its final checkpoints deleted) and no writer has closed its chain yet;
``closed``; ``adopted``: stopped without closing and closed by another writer, after checking
its tail; ``unused``: registered, never wrote).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import suppress
from typing import Any

from veilpix._errors import AuditLogError, ConfigError
from veilpix.audit._chain import founding_statement, genesis
from veilpix.audit._checks import (
    RANK,
    Problem,
    Walker,
    blob,
    due_checkpoints,
    mac_problem,
    missing_subject_keys,
    strange,
    whole,
)
from veilpix.audit._keys import KeyFile, key_id, verify_signature
from veilpix.audit._verify import VerifyResult
from veilpix.audit.fleet._chain import LOCK_WRITER, chain_id, checkpoint_message, registration

__all__ = ["fleet_head", "parse_fleet_head", "verify_fleet"]

_HEAD = "vpf1"


def fleet_head(fleet_id: str, fid: int, signature: bytes) -> str:
    """``vpf1:<fleet id>:<fleet checkpoint>:<SHA-256 of its signature>``."""
    return f"{_HEAD}:{fleet_id}:{fid}:{hashlib.sha256(signature).hexdigest()}"


def parse_fleet_head(token: str) -> tuple[str, int, str]:
    parts = token.strip().split(":")
    try:
        if len(parts) != 4 or parts[0] != _HEAD or len(parts[3]) != 64:
            raise ValueError(token)
        int(parts[3], 16)
        return parts[1], int(parts[2]), parts[3]
    except ValueError:
        raise ConfigError(
            f"{token.strip()[:80]!r} is not a head saved from 'veilpix audit verify' of a "
            "fleet log",
            hint="it looks like vpf1:<fleet id>:<checkpoint>:<64 hex digits>",
        ) from None


_ENTRIES = (
    "SELECT writer, seq, kind, record, ts, subject, body, prev, hash, mac"
    " FROM veilpix.entries ORDER BY writer, seq"
)


def verify_fleet(
    db: Any,
    *,
    where: str,
    public_key: bytes | None = None,
    expect: str | None = None,
    keys: KeyFile | None = None,
) -> VerifyResult:
    """Verify the fleet log open on ``db`` (``where``: how to name it). ``keys`` (the fleet's
    key file) adds every entry's MAC and the check against the newest checkpoint it
    recorded."""
    try:
        meta = dict(db.execute("SELECT key, value FROM veilpix.meta").fetchall())
        fleet_id = str(meta["log_id"])
    except Exception as exc:  # noqa: BLE001 - any driver or shape error: not a fleet log
        raise AuditLogError(f"{where} is not a readable veilpix transfer log: {exc}") from None
    try:
        stored = bytes.fromhex(str(meta.get("public_key", "")))
    except ValueError:
        stored = b""  # (the founding statement then fails to verify: reported)
    # The key registrations and checkpoints are checked against: the one given, else the key
    # file's (a key replaced in the database is found out), else the database's own.
    own = keys.public_raw if keys is not None and keys.log_id == fleet_id else None
    key = public_key or own or stored
    try:
        return _Verify(db, meta, fleet_id, key, keys).run(
            where, stored, public_key or own, expect, "given" if public_key else "key file"
        )
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
        if isinstance(exc, ConfigError):
            raise
        return VerifyResult(
            path=where,
            log_id=fleet_id,
            key_id=key_id(key),
            key_source="log" if public_key is None and own is None else "given",
            problems=(strange(exc),),
        )


class _Writer:
    """What verify learns about one writer as it goes."""

    def __init__(self, writer: int, name: str, registered: str, public_key: bytes) -> None:
        self.writer, self.name, self.registered = writer, name, registered
        self.public_key = public_key
        self.valid = False  # registration signed by the fleet key and its own
        self.entries = 0
        self.first: int | None = None
        self.last: int | None = None
        self.checkpoints: dict[int, tuple[int, bytes, bytes]] = {}  # seq -> (id, hash, sig)
        self.signed_through: int | None = None
        self.final: str | None = None  # "close" or "adopted"
        self.through: int | None = None  # a prune bridge's cut
        self.anchor: bytes | None = None
        self.unsigned = 0
        self.problems = 0
        self.running = False  # its session lock is held now
        self.final_seq = 0  # the entry its final checkpoint signed
        self.bridge_from: tuple[int, int] | None = None  # the prune entry of ``through``
        self.first_problem: int | None = None  # its first entry with a problem
        self.matched: set[int] = set()  # entries a valid checkpoint signs, as they are
        self.ended = False

    def report(self) -> dict[str, Any]:
        state = {"close": "closed", "adopted": "adopted"}.get(self.final or "", "")
        if not state and not self.running and not self.entries and not self.checkpoints:
            state = "unused"  # registered, never wrote (its entries are not missing: verify
            # would find the fleet's checkpoints of them)
        state = state or ("running" if self.running else "stopped")
        return {
            "writer": self.writer,
            "name": self.name,
            "registered": self.registered,
            "key_id": key_id(self.public_key) if self.public_key else None,
            "state": state,
            "entries": self.entries,
            "first_seq": self.first,
            "last_seq": self.last,
            "checkpoints": len(self.checkpoints),
            "signed_through": self.signed_through,
            "unsigned_tail": self.unsigned,
            "pruned_through": self.through,
            "problems": self.problems,
        }


class _Verify:
    def __init__(
        self, db: Any, meta: dict[str, str], fleet_id: str, key: bytes, keys: KeyFile | None
    ) -> None:
        self.db, self.meta, self.fleet_id, self.key = db, meta, fleet_id, key
        self.keys = keys if keys is not None and keys.knows(fleet_id) else None
        self.problems: list[Problem] = []
        self.writers: dict[int, _Writer] = {}

    def problem(self, kind: Any, seq: int | None, message: str, writer: int | None = None) -> None:
        self.problems.append(Problem(kind, seq, message, writer))
        if writer is not None and writer in self.writers:
            self.writers[writer].problems += 1

    def run(
        self,
        where: str,
        stored: bytes,
        public_key: bytes | None,
        expect: str | None,
        source: str,
    ) -> VerifyResult:
        self.source = source
        self._founding(stored, public_key)
        self._registry()
        self._running()
        valid_fids = self._checkpoints()
        totals = self._chains()
        head = None
        if valid_fids:
            fid, sig = max(valid_fids.items())
            head = fleet_head(self.fleet_id, fid, sig)
        if expect is not None:
            self._expect(expect, valid_fids)
        if self.keys is not None:
            self._state(valid_fids)
        kept = {r[0] for r in self.db.execute("SELECT kid FROM veilpix.subject_keys")}
        erased = {kid for _, _, kid in totals["erased"]}
        for seq, writer, kid in totals["erased"]:
            if kid in kept:
                self.problem(
                    "erasure", seq, f"erasure {writer}:{seq}: the subject key still exists", writer
                )
        gone = missing_subject_keys(totals["subjects"], kept, erased)
        if gone is not None:
            self.problem(gone.kind, gone.seq, gone.message)
        self.problems.sort(
            key=lambda p: (
                p.kind == "unsigned-tail",
                -1 if p.writer is None else p.writer,
                -1 if p.seq is None else p.seq,
                RANK[p.kind],
            )
        )
        reports = tuple(w.report() for w in sorted(self.writers.values(), key=lambda w: w.writer))
        return VerifyResult(
            path=where,
            log_id=self.fleet_id,
            key_id=key_id(self.key),
            key_source="log" if public_key is None else self.source,
            entries=totals["entries"],
            records=totals["records"],
            pending=totals["pending"],
            first_seq=totals["first"],
            last_seq=totals["last"],
            checkpoints=totals["checkpoints"],
            signed_through=None,
            unsigned_tail=sum(w.unsigned for w in self.writers.values()),
            erasures=len(totals["erased"]),
            head=head,
            authenticated=None if self.keys is None else totals["entries"] - totals["forged"],
            problems=tuple(self.problems),
            writers=reports,
        )

    # -- the fleet's own facts -----------------------------------------------------------------

    def _founding(self, stored: bytes, public_key: bytes | None) -> None:
        try:
            every = int(self.meta["checkpoint_every"])
            founding = founding_statement(self.fleet_id, every, self.meta["created"])
            founded = verify_signature(
                self.key, bytes.fromhex(self.meta["founding_signature"]), founding
            )
        except (KeyError, ValueError):
            every, founded = 0, False
        self.every = every
        if not founded:
            self.problem(
                "bad-signature",
                None,
                f"the fleet's founding statement (its id and checkpoint interval) is not "
                f"signed by key {key_id(self.key)}: the log was re-created or its settings "
                "altered",
            )
        if public_key is not None and public_key != stored:
            self.problem(
                "key-mismatch",
                None,
                f"the log names key {key_id(stored) if stored else '(unreadable)'}, not the "
                f"{'given' if self.source == 'given' else 'key file'}'s {key_id(public_key)}: "
                "the fleet's key was replaced in the database, or the key is another fleet's; "
                "registrations and the founding statement are checked against the "
                f"{'given' if self.source == 'given' else 'key file'}'s",
            )
        if not str(self.meta.get("schema", "")).isdigit():
            self.problem("modified", None, "the log's schema version was altered")

    def _registry(self) -> None:
        rows = self.db.execute(
            "SELECT id, name, registered, public_key, prev, hash, fleet_signature,"
            " writer_signature FROM veilpix.writers ORDER BY id"
        ).fetchall()
        expected, prev = 1, genesis(self.fleet_id)
        for wid, name, registered, pub, row_prev, row_hash, fleet_sig, own_sig in rows:
            writer = whole(wid)
            w = self.writers[writer] = _Writer(writer, str(name), str(registered), blob(pub))
            if writer != expected:
                what = (
                    f"writer {expected} is"
                    if writer == expected + 1
                    else f"writers {expected}..{writer - 1} are"
                )
                self.problem(
                    "writer-removed",
                    None,
                    f"{what} missing from the registry (removed from the database)",
                    expected,
                )
            statement = registration(
                self.fleet_id, writer, str(name), str(registered), blob(pub), blob(row_prev)
            )
            if blob(row_prev) != prev and writer == expected:
                self.problem(
                    "writer-removed",
                    None,
                    f"the registration of writer {writer} does not link onto writer "
                    f"{writer - 1}'s (a registration was replaced or removed)",
                    writer,
                )
            if not verify_signature(self.key, blob(fleet_sig), statement) or not (
                verify_signature(blob(pub), blob(own_sig), statement)
            ):
                self.problem(
                    "writer-forged",
                    None,
                    f"writer {writer} ({name}) was not registered by a holder of the fleet's "
                    "key file, or its registration was altered: its entries are not trusted",
                    writer,
                )
            elif hashlib.sha256(statement).digest() != blob(row_hash):
                self.problem(
                    "writer-forged",
                    None,
                    f"writer {writer}'s registration hash was altered",
                    writer,
                )
            else:
                w.valid = True
            expected, prev = writer + 1, blob(row_hash)

    def _running(self) -> None:
        """Which writers hold their session lock now (a read of pg_locks: nothing is taken)."""
        with suppress(Exception):  # (a role that may not read pg_locks: states stay unknown)
            for (objid,) in self.db.execute(
                "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s"
                " AND objsubid = 2 AND granted",
                (LOCK_WRITER & 0xFFFFFFFF,),
            ):
                w = self.writers.get(int(objid))
                if w is not None:
                    w.running = True

    def _checkpoints(self) -> dict[int, bytes]:
        """Check the fleet's line of checkpoints; the valid ones by fid (their signatures)."""
        rows = self.db.execute(
            "SELECT fid, writer, id, seq, hash, ts, reason, signer, fleet_prev, signature"
            " FROM veilpix.checkpoints ORDER BY fid"
        ).fetchall()
        self.checkpoint_count = len(rows)
        valid: dict[int, bytes] = {}
        expected, fleet_prev = 1, genesis(self.fleet_id)
        own: dict[int, tuple[int, bytes]] = {}  # writer -> (its last checkpoint id, sig hash)
        for fid_, wid, cid_, cseq_, chash_, cts, reason, signer_, fprev_, sig_ in rows:
            fid, writer, cid, cseq = whole(fid_), whole(wid), whole(cid_), whole(cseq_)
            signer, chash, sig = whole(signer_), blob(chash_), blob(sig_)
            if fid != expected:
                self.problem(
                    "checkpoint-gap",
                    fid,
                    f"fleet checkpoint{'s' if fid > expected + 1 else ''} "
                    f"{expected}{f'..{fid - 1}' if fid > expected + 1 else ''} "
                    f"{'are' if fid > expected + 1 else 'is'} missing before checkpoint {fid} "
                    "(writer {writer}'s): a writer's checkpoints were deleted (a writer removed "
                    "or cut back; a writer that stopped without its final checkpoint is the "
                    "one to look at)".replace("{writer}", str(writer)),
                )
            elif blob(fprev_) != fleet_prev:
                self.problem(
                    "checkpoint-gap",
                    fid,
                    f"fleet checkpoint {fid} does not follow checkpoint {fid - 1} (replaced or "
                    "reordered)",
                    writer,
                )
            expected, fleet_prev = fid + 1, hashlib.sha256(sig).digest()
            w = self.writers.get(writer)
            signing = self.writers.get(signer)
            last_id, prev = own.get(writer, (0, genesis(chain_id(self.fleet_id, writer))))
            message = checkpoint_message(
                self.fleet_id,
                fid,
                blob(fprev_),
                writer,
                cid,
                cseq,
                chash,
                cts,
                reason,
                prev,
                signer,
            )
            if (
                w is None
                or signing is None
                or not signing.valid
                or (signer != writer and reason != "adopted")
            ):
                self.problem(
                    "bad-signature",
                    cseq,
                    f"fleet checkpoint {fid} claims writer {writer}"
                    f"{'' if signer == writer else f' signed by writer {signer}'}, who is not "
                    "a registered writer that may sign it",
                    writer,
                )
                continue
            if not verify_signature(signing.public_key, sig, message):
                self.problem(
                    "bad-signature",
                    cseq,
                    f"checkpoint {cid} of writer {writer} (entry {cseq}) does not carry a valid "
                    f"signature by writer {signer}'s key: it was forged, altered or replaced",
                    writer,
                )
                continue
            if cid != last_id + 1:
                self.problem(
                    "checkpoint-gap",
                    cseq,
                    f"checkpoint {last_id + 1} of writer {writer} is missing",
                    writer,
                )
            if w.final is not None:
                self.problem(
                    "bad-signature",
                    cseq,
                    f"writer {writer} has a checkpoint after its chain was {w.final}d",
                    writer,
                )
            own[writer] = (cid, hashlib.sha256(sig).digest())
            w.checkpoints[cseq] = (cid, chash, sig)
            if reason in ("close", "adopted"):
                w.final = "close" if reason == "close" else "adopted"
                w.final_seq = cseq
            valid[fid] = sig
        return valid

    # -- the writers' chains -------------------------------------------------------------------

    def _bridges(self) -> None:
        """Each writer's newest prune bridge (from the prune entries of every chain)."""
        for wid, seq, body in self.db.execute(
            "SELECT writer, seq, body FROM veilpix.entries WHERE kind = 'prune'"
        ):
            try:
                doc = json.loads(body)
                cut, through = int(doc["writer"]), doc["through"]
                anchor = bytes.fromhex(doc["anchor"])
                if type(through) is not int or through < 1 or len(anchor) != 32:
                    raise ValueError("not a cut")
            except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
                self.problem(
                    "modified", seq, f"prune entry {seq} is not a prune veilpix wrote ({exc})", wid
                )
                continue
            w = self.writers.get(cut)
            if w is not None and (w.through is None or through > w.through):
                w.through, w.anchor = through, anchor
                w.bridge_from = (int(wid), int(seq))

    def _check_bridges(self) -> None:
        """A prune bridge counts only when the prune entry is genuine: its own chain checks
        out up to it and a valid checkpoint of that chain signs it (a real prune signs
        itself). Else the entries it would account for are missing. And where the cut writer
        has a valid checkpoint at the cut itself, the bridge's anchor must be what it signed."""
        for w in self.writers.values():
            if w.through is None or w.bridge_from is None:
                continue
            source = self.writers.get(w.bridge_from[0])
            at = w.bridge_from[1]
            genuine = (
                source is not None
                and source.valid
                and (source.first_problem is None or source.first_problem > at)
                and any(m >= at for m in source.matched)
            )
            if not genuine:
                self.problem(
                    "gap",
                    1,
                    f"entries 1..{w.through} of writer {w.writer} are missing: the prune entry "
                    f"that would account for them (writer {w.bridge_from[0]}'s entry {at}) is "
                    "not one a writer signed",
                    w.writer,
                )
            signed = w.checkpoints.get(w.through)
            if signed is not None and signed[1] != w.anchor:
                self.problem(
                    "checkpoint-mismatch",
                    w.through,
                    f"the prune bridge of writer {w.writer} does not match what its checkpoint "
                    f"{signed[0]} signed for entry {w.through}",
                    w.writer,
                )

    def _chains(self) -> dict[str, Any]:
        self._bridges()
        begun: set[str] = set()
        finished: set[str] = set()
        subjects: set[str] = set()
        erased: list[tuple[int, int, str]] = []
        entries = records = forged = 0
        orphans: list[tuple[int, int, str]] = []
        current: _Writer | None = None
        walker: Any = None
        first_pos = last_pos = None

        # (a server-side cursor: a million entries stream through, a few thousand at a time;
        # the caller holds one read-only snapshot for the whole check)
        with self.db.cursor(name="veilpix_verify") as cur:
            cur.itersize = 5000
            cur.execute(_ENTRIES)
            for row in cur:
                writer = whole(row[0])
                if current is None or writer != current.writer:
                    if current is not None:
                        self._end_chain(current)
                    current = self.writers.get(writer)
                    if current is None:
                        current = self.writers[writer] = _Writer(writer, "?", "", b"")
                        self.problem(
                            "writer-forged",
                            None,
                            f"entries of writer {writer}, which is not in the registry",
                            writer,
                        )
                    start = (current.through or 0) + 1
                    prev = current.anchor or genesis(chain_id(self.fleet_id, writer))
                    walker = _Walk(self, current, start, prev)
                try:
                    problem, forged_one = walker.step(row[1:])
                except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
                    problem, forged_one = walker.strange(row[1:], exc), 0
                forged += forged_one
                entries += 1
                s, kind, record, subject = row[1], row[2], row[3], row[5]
                if kind == "begin":
                    records += 1
                    begun.add(record)
                    if isinstance(subject, str):
                        subjects.add(subject)
                elif kind == "finish":
                    if record in finished:
                        orphans.append((s, writer, f"transfer {record} is finished twice"))
                    finished.add(record)
                    if record not in begun:
                        orphans.append(
                            (s, writer, f"entry {writer}:{s} finishes {record}, never begun")
                        )
                elif kind == "erase" and subject:
                    erased.append((s, writer, subject))
                del problem
        if current is not None:
            self._end_chain(current)
        for w in self.writers.values():
            if w.last is None:
                self._end_chain(w, empty=True)
        self._check_bridges()
        pruned = any(w.through for w in self.writers.values())
        for s, writer, message in orphans:
            record = message.split()[3] if "never begun" in message else None
            if record is not None and (record in begun or pruned):
                continue  # its begin is in a chain read later (or pruned away)
            self.problem("orphan", s, message, writer)
        with suppress(Exception):
            first_pos, last_pos = self.db.execute(
                "SELECT min(pos), max(pos) FROM veilpix.entries"
            ).fetchone()
        return {
            "entries": entries,
            "records": records,
            "pending": len(begun - finished),
            "erased": erased,
            "subjects": subjects,
            "forged": forged,
            "checkpoints": self.checkpoint_count,
            "first": first_pos,
            "last": last_pos,
        }

    def _end_chain(self, w: _Writer, *, empty: bool = False) -> None:
        """What only the end of a writer's chain shows: checkpoints past it, checkpoints due
        and missing, the unsigned tail."""
        if w.ended:
            return
        w.ended = True
        last = w.last
        signed = [s for s in w.checkpoints if w.through is None or s > w.through]
        for s in sorted(signed):
            cid = w.checkpoints[s][0]
            if last is None or s > last:
                self.problem(
                    "truncated",
                    s,
                    f"checkpoint {cid} of writer {w.writer} signs entry {s} but its chain "
                    f"{'holds nothing' if last is None else f'ends at entry {last}'} (cut back)",
                    w.writer,
                )
        if empty or last is None or w.first is None:
            return
        every = self.every
        valid = set(w.matched)
        if every > 0:
            due = due_checkpoints(w.first, last, every, valid)
            if w.first == 1 and 1 not in valid:  # (a writer's first entry is signed at once)
                due.insert(0, 1)
            if due:
                more = f" (and {len(due) - 1} more)" if len(due) > 1 else ""
                self.problem(
                    "missing-checkpoint",
                    due[0],
                    f"entry {due[0]} of writer {w.writer} should carry a checkpoint and none is "
                    f"there{more}: checkpoints were removed",
                    w.writer,
                )
        floor = max(valid | {w.through or 0})
        w.signed_through = max(valid) if valid else None
        if w.final is not None and last > w.final_seq:
            # after a writer's final checkpoint nothing is appended to its chain, by anyone
            self.problem(
                "forged",
                w.final_seq + 1,
                f"{last - w.final_seq} entr{'y' if last - w.final_seq == 1 else 'ies'} of "
                f"writer {w.writer} after its chain was {w.final}d at entry {w.final_seq}: "
                "appended by someone other than the writer",
                w.writer,
            )
            return
        w.unsigned = max(last - floor, 0)
        if w.unsigned:
            self.problem(
                "unsigned-tail",
                floor + 1,
                f"{w.unsigned} entr{'y' if w.unsigned == 1 else 'ies'} of writer {w.writer} "
                f"after entry {floor} carr{'ies' if w.unsigned == 1 else 'y'} no signature yet "
                "(the writer is running, or stopped without closing: the next writer to open "
                "the log checks and closes its chain)"
                + (
                    ": their MACs were checked with the key file"
                    if self.keys is not None
                    else ": only the key file's MAC covers them, and no key file was at hand"
                ),
                w.writer,
            )

    # -- heads ---------------------------------------------------------------------------------

    def _expect(self, expect: str, valid: dict[int, bytes]) -> None:
        want_fleet, fid, sighash = parse_fleet_head(expect)
        if want_fleet != self.fleet_id:
            raise ConfigError(f"the saved head belongs to log {want_fleet}, not to {self.fleet_id}")
        sig = valid.get(fid)
        if sig is None or hashlib.sha256(sig).hexdigest() != sighash:
            self.problem(
                "rolled-back",
                fid,
                f"the saved head (fleet checkpoint {fid}) is no longer in the log: it was cut "
                "back, or that checkpoint was replaced",
            )

    def _state(self, valid: dict[int, bytes]) -> None:
        assert self.keys is not None
        state = self.keys.state or {}
        fid = int(state.get("checkpoint") or 0)
        if state.get("log_id") != self.fleet_id or not fid:
            return
        sig = valid.get(fid)
        if sig is None or hashlib.sha256(sig).hexdigest() != state.get("signature"):
            newest = max(valid, default=0)
            self.problem(
                "rolled-back",
                fid,
                f"the key file records fleet checkpoint {fid} (signed {state.get('ts')}), but "
                f"the log {'ends at checkpoint ' + str(newest) if newest < fid else 'holds another one'}: "
                "it was cut back, emptied or replaced by an older copy",
            )


class _Walk:
    """One writer's chain, entry by entry (the file log's :func:`walk`, fed one row at a
    time), with the MAC of each and the checkpoints it meets."""

    def __init__(self, v: _Verify, w: _Writer, seq: int, prev: bytes) -> None:
        self.v, self.w = v, w
        self.walker = Walker(seq, prev)
        self.chain = chain_id(v.fleet_id, w.writer)

    def strange(self, row: tuple[Any, ...], exc: BaseException) -> Problem:
        """An entry whose values veilpix never writes: reported, and the walk goes on."""
        s = row[0] if type(row[0]) is int else None
        problem = Problem(
            "modified",
            s,
            f"entry {s} of writer {self.w.writer} holds values veilpix never writes "
            f"({type(exc).__name__})",
            self.w.writer,
        )
        self.v.problem(problem.kind, problem.seq, problem.message, self.w.writer)
        if s is not None:
            self.walker.seq = s + 1
            self.w.first_problem = min(self.w.first_problem or s, s)
        return problem

    def step(self, row: tuple[Any, ...]) -> tuple[Problem | None, int]:
        v, w = self.v, self.w
        found = self.walker.step(row)
        s = whole(row[0])
        problem = found
        if found is not None and found.kind == "gap" and w.first is None and w.through is None:
            problem = Problem(
                "gap",
                1,
                f"entries 1..{s - 1} of writer {w.writer} are missing and no prune "
                "entry accounts for them",
                w.writer,
            )
        forged = 0
        if problem is None and v.keys is not None:
            problem = mac_problem(row, v.keys, self.chain)
            forged = problem is not None
        if problem is None and not w.valid and w.first is None:  # (named once per writer)
            problem = Problem(
                "writer-forged",
                s,
                f"the entries of writer {w.writer}, whose registration "
                f"does not hold, from entry {s} on",
            )
        if problem is not None:
            v.problem(problem.kind, problem.seq, _named_writer(problem.message, w.writer), w.writer)
            if w.first_problem is None:
                w.first_problem = s
        w.entries += 1
        w.first = s if w.first is None else w.first
        w.last = s
        cp = w.checkpoints.get(s)
        if cp is not None:
            if cp[1] == blob(row[7]):
                w.matched.add(s)
            else:
                v.problem(
                    "checkpoint-mismatch",
                    s,
                    f"entry {s} of writer {w.writer} is not the entry its checkpoint {cp[0]} "
                    "signed (altered or rebuilt)",
                    w.writer,
                )
        return problem, forged


def _named_writer(message: str, writer: int) -> str:
    return (
        message.replace("entry ", f"writer {writer}'s entry ", 1)
        if "writer" not in message
        else message
    )
