"""Appending to the chain, for one writer: entries and checkpoints, inside the log's write
transactions, and the appends with rules of their own (a finish only after its begin, an
erasure's tombstone, a prune's bridge).

A writer extends only what it can vouch for: the newest entry it wrote itself or
authenticated (linked and MACed with the key file's key, see
:func:`veilpix.audit._checks.authenticate`); rows someone without the key file appended are
refused, never extended or signed. Within a group commit the entries are computed in Python
against the head kept in memory and inserted with one ``executemany`` at the end of the batch:
few calls into SQLite, each of which gives up the GIL. Every ``checkpoint_every``-th entry
(and the first) is signed in the transaction that writes it.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from veilpix._errors import AuditLogError
from veilpix.audit._chain import Kind, canonical, checkpoint_message, entry_hash, genesis, now_text
from veilpix.audit._checks import authenticate
from veilpix.audit._entry import EraseBody, FinishBody, PruneBody, ReviewBody, well_formed
from veilpix.audit._keys import KeyFile, key_id
from veilpix.audit._record import scrub_secrets
from veilpix.audit._records import Pruned
from veilpix.audit._store import INSERT_ENTRY, Signed, damaged

__all__ = ["Appender"]

_Row = tuple[int, str, str | None, str, str | None, str, bytes, bytes, bytes]
_Mark = tuple[int, tuple[int, bytes, str] | None]


class Appender:
    """Where this writer's chain stands: the newest entry it trusts, the entries of the batch
    not inserted yet, and the checkpoint the open transaction signed."""

    def __init__(
        self,
        path: Path,
        *,
        log_id: str,
        public_key: bytes,
        every: int,
        keys: Callable[[], KeyFile],
        clock: Callable[[], datetime],
    ) -> None:
        self.path = path
        self.log_id = log_id
        self.public_key = public_key
        self.every = every
        self._keys = keys  # the key file as the log holds it now (its state moves on)
        self._clock = clock
        # The newest entry this handle has authenticated (written itself, or checked the MAC
        # and links of): a writer extends only that, or what it can authenticate from there.
        self.trusted: tuple[int, bytes] | None = None
        self._txn_head: tuple[int, bytes] | None = None  # ... once this transaction commits
        # the checkpoint this transaction signed: the key file's state follows it once it is
        # on disk
        self._signed: Signed | None = None
        # inside a batch: entry rows not inserted yet, and the head after them
        self._rows: list[_Row] | None = None
        self._head: tuple[int, bytes, str] | None = None

    # -- the write transaction -----------------------------------------------------------------

    def begin(self) -> None:
        """A write transaction starts."""
        self._txn_head = self._signed = None

    def committed(self) -> None:
        """The transaction committed: what it appended is trusted from now on."""
        if self._txn_head is not None:
            self.trusted = self._txn_head

    def end(self) -> None:
        """The transaction is over (committed or not)."""
        self._txn_head = None

    def take_signed(self) -> Signed | None:
        """The checkpoint the committed transaction signed, if any (once)."""
        signed, self._signed = self._signed, None
        return signed

    @contextmanager
    def batch(self, db: sqlite3.Connection) -> Iterator[None]:
        """Gather the appends of a group commit, inserted together when it ends well."""
        self._rows, self._head = [], None
        try:
            yield
            self._flush(db)
        finally:
            self._rows, self._head = None, None

    def mark(self) -> _Mark:
        """Where the batch stands, to :meth:`undo` the appends of an op refused after it."""
        assert self._rows is not None
        return len(self._rows), self._head

    def undo(self, mark: _Mark) -> None:
        assert self._rows is not None
        del self._rows[mark[0] :]
        self._head = mark[1]

    def pending_kinds(self, record_id: str) -> set[str]:
        """Kinds of the entries of ``record_id`` in the batch not inserted yet."""
        return {row[1] for row in self._rows or () if row[2] == record_id}

    def _flush(self, db: sqlite3.Connection) -> None:
        if self._rows:
            db.executemany(INSERT_ENTRY, self._rows)
            self._txn_head = (self._rows[-1][0], self._rows[-1][7])
            self._rows.clear()

    # -- entries and checkpoints ---------------------------------------------------------------

    def append_finish(self, db: sqlite3.Connection, record_id: str, body: FinishBody) -> None:
        """Append the finish of ``record_id``; AuditLogError (nothing written) unless it was
        begun and is not finished yet."""
        kinds = {
            r[0] for r in db.execute("SELECT kind FROM entries WHERE record=?", (record_id,))
        } | self.pending_kinds(record_id)
        if "begin" not in kinds:
            raise AuditLogError(f"no begun transfer {record_id!r} in the log")
        if "finish" in kinds:
            raise AuditLogError(f"transfer {record_id!r} is already finished")
        self.append(db, "finish", record_id, body)

    def append(
        self,
        db: sqlite3.Connection,
        kind: Kind,
        record: str | None,
        body: Mapping[str, Any],
        subject: str | None = None,
    ) -> int:
        """Append an entry; its seq."""
        keys = self._keys()
        if self._head is not None:  # inside a batch, after its first append
            seq, prev, last_ts = self._head
        else:
            head = self.authenticated_head(db)
            if head is None:
                seq, prev, last_ts = 1, genesis(self.log_id), ""
            else:
                seq, prev, last_ts = head[0] + 1, head[1], head[2]
        ts = max(now_text(self._clock()), last_ts)  # never runs backwards along the chain
        # Mask credential-shaped text anywhere in the body, in one pass over the JSON. Safe on
        # JSON: the patterns cannot match a quote or backslash, so they stay inside strings.
        text = well_formed(scrub_secrets(canonical(body)))
        digest = entry_hash(prev, seq, kind, record, ts, subject, text)
        mac = keys.entry_mac(digest, self.log_id)
        row = (seq, kind, record, ts, subject, text, prev, digest, mac)
        if self._rows is not None:  # a batch: inserted together at its end
            self._rows.append(row)
            self._head = (seq + 1, digest, ts)
        else:
            db.execute(INSERT_ENTRY, row)
            self._txn_head = (seq, digest)
        if seq % self.every == 0 or seq == 1:
            # (the first entry is signed at once: from then on the key file knows the log
            # has entries, and an emptied log is refused)
            self._flush(db)
            self.checkpoint(db, "every" if seq % self.every == 0 else "first")
        return seq

    def authenticated_head(self, db: sqlite3.Connection) -> tuple[int, bytes, str] | None:
        """The newest entry, once everything after the last one this handle trusts is
        authenticated (linked, hashed and MACed with the key file's key); AuditLogError
        otherwise: a writer never extends or signs entries someone without the key wrote."""
        row = db.execute("SELECT seq, hash, ts FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        known = self._txn_head or self.trusted
        if row is None:
            if known is not None:
                raise damaged(
                    self.path, f"its entries are gone (this writer knew entry {known[0]})"
                )
            return None
        seq, digest, ts = row[0], row[1], row[2]
        if type(seq) is not int or not isinstance(digest, bytes) or not isinstance(ts, str):
            raise damaged(
                self.path, f"its newest entry holds values veilpix never writes ({row!r:.80})"
            )
        if known != (seq, digest):
            problem = authenticate(
                db, self.log_id, self._keys(), known, self.public_key, self.every
            )
            if problem is not None:
                raise damaged(self.path, problem.message)
            self.trusted = (seq, digest)
        return seq, digest, ts

    def checkpoint(
        self, db: sqlite3.Connection, reason: str, *, only_if_unsigned: bool = True
    ) -> int | None:
        """Sign the head (unless it is signed already and ``only_if_unsigned``); the id."""
        keys = self._keys()
        head = self.authenticated_head(db)
        if head is None:
            return None
        last = db.execute(
            "SELECT id, seq, signature FROM checkpoints ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if last is not None and last[1] == head[0] and only_if_unsigned:
            return None
        cp_id = 1 if last is None else last[0] + 1
        prev_sig = genesis(self.log_id) if last is None else hashlib.sha256(last[2]).digest()
        ts = now_text(self._clock())
        message = checkpoint_message(self.log_id, cp_id, head[0], head[1], ts, reason, prev_sig)
        signature = keys.sign(message)
        db.execute(
            "INSERT INTO checkpoints(id, seq, hash, ts, reason, key_id, signature)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (cp_id, head[0], head[1], ts, reason, key_id(self.public_key), signature),
        )
        self._signed = (cp_id, head[0], hashlib.sha256(signature).hexdigest(), ts)
        return cp_id

    def review(
        self, db: sqlite3.Connection, action: str, by: str, via: str, facts: Mapping[str, Any]
    ) -> int:
        """Append what a reviewer did (``action`` by ``by`` via ``via``); its seq."""
        body: ReviewBody = {"action": action, "by": by, "via": via, "facts": dict(facts)}
        return self.append(db, "review", None, body)

    # -- erasure and retention -----------------------------------------------------------------

    def erase(
        self, db: sqlite3.Connection, tag: str, request_ref: str | None
    ) -> tuple[int, int] | None:
        """Destroy the key of the subject whose keyed fingerprint is ``tag`` and append the
        tombstone, signed: (transfers linked to the subject, the tombstone's seq), or None
        when the log knows no such subject."""
        row = db.execute("SELECT kid FROM subject_keys WHERE tag=?", (tag,)).fetchone()
        if row is None:
            return None
        kid = row[0]
        (count,) = db.execute(
            "SELECT count(*) FROM entries WHERE subject=? AND kind='begin'", (kid,)
        ).fetchone()
        db.execute("DELETE FROM subject_keys WHERE kid=?", (kid,))
        body: EraseBody = {"subject_key": kid, "records": count, "request_ref": request_ref}
        seq = self.append(db, "erase", None, body, kid)
        self.checkpoint(db, "erase")
        return count, seq

    def prune(self, db: sqlite3.Connection, cutoff: str, older_than: str) -> Pruned:
        """Delete every entry dated before ``cutoff`` after appending the prune entry that
        bridges the cut (signed), and the subject keys no remaining entry uses."""
        row = db.execute("SELECT max(seq) FROM entries WHERE ts < ?", (cutoff,)).fetchone()
        through = row[0]
        if through is None:
            return Pruned(entries=0, records=0, through_seq=None, cutoff=cutoff, prune_seq=None)
        anchor = db.execute("SELECT hash FROM entries WHERE seq=?", (through,)).fetchone()[0]
        (entries,) = db.execute("SELECT count(*) FROM entries WHERE seq<=?", (through,)).fetchone()
        (records,) = db.execute(
            "SELECT count(*) FROM entries WHERE seq<=? AND kind='begin'", (through,)
        ).fetchone()
        body: PruneBody = {
            "through": through,
            "anchor": anchor.hex(),
            "entries": entries,
            "records": records,
            "cutoff": cutoff,
            "older_than": older_than,
        }
        seq = self.append(db, "prune", None, body)
        db.execute("DELETE FROM entries WHERE seq<=?", (through,))
        db.execute(
            "DELETE FROM subject_keys WHERE kid NOT IN"
            " (SELECT subject FROM entries WHERE subject IS NOT NULL)"
        )
        self.checkpoint(db, "prune")
        return Pruned(
            entries=entries, records=records, through_seq=through, cutoff=cutoff, prune_seq=seq
        )
