"""One writer's chain in a fleet log, and what a fleet signs.

Every writer (one process with the log open for writing, on any machine) appends to a chain
of its own: entries ``(writer, seq)`` hashed exactly as in the SQLite log
(:func:`veilpix.audit._chain.entry_hash`) from the writer's own genesis, MACed under a key
derived from the fleet's key file and the writer's number, and signed at checkpoints by the
writer's own Ed25519 key, which is made when the writer registers and never leaves its
process. Writers never wait for each other to append: nothing but their own chain is read
or locked on the way.

Checkpoints also form one line across the fleet: each names the previous checkpoint of any
writer (``fid``, gapless, and the SHA-256 of its signature). They are rare (every
``checkpoint_every`` entries of a writer, every ``checkpoint_seconds``, on open and close),
so ordering them through one lock costs nothing measurable, and it is what makes a writer's
removal or cut-back visible from the database alone: the other writers' later checkpoints
sign over it.

The registry of writers is a chain too: each registration links the one before, names the
writer's public key, and is signed by the fleet's key (from the key file every writer
holds), so a writer nobody with the key file registered is refused by verify, and by the
key's own signature (it holds the private half).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from veilpix._errors import AuditLogError
from veilpix.audit._chain import Kind, canonical, entry_hash, genesis, now_text
from veilpix.audit._entry import EraseBody, FinishBody, PruneBody, ReviewBody, well_formed
from veilpix.audit._keys import KeyFile
from veilpix.audit._record import scrub_secrets
from veilpix.audit._records import Pruned

__all__ = [
    "LOCK_CHECKPOINTS",
    "LOCK_REGISTRY",
    "LOCK_WRITER",
    "FleetChain",
    "WriterKey",
    "chain_id",
    "checkpoint_message",
    "registration",
]

# advisory lock classes (pg_advisory_lock(class, n)): "vpix" and two neighbours
LOCK_WRITER = 0x76706978  # (LOCK_WRITER, writer): held by the writer's session while it runs
LOCK_REGISTRY = 0x76706979  # (.., 0): registering a writer (the registry's order)
LOCK_CHECKPOINTS = 0x7670697A  # (.., 0): a checkpoint (the fleet's order of checkpoints)

_REGISTRATION = b"veilpix-fleet-writer/1\0"
_CHECKPOINT = b"veilpix-fleet-checkpoint/1\0"

INSERT_ENTRY = (
    "INSERT INTO veilpix.entries (writer, seq, kind, record, ts, subject, body, prev, hash, mac)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
INSERT_CHECKPOINT = (
    "INSERT INTO veilpix.checkpoints (fid, writer, id, seq, hash, ts, reason, signer,"
    " fleet_prev, signature) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def chain_id(fleet_id: str, writer: int) -> str:
    """The name writer ``writer``'s chain goes by in its hashes and MACs (its genesis, its
    entry MAC key): ``<fleet id>/<writer>``, so no entry can move between chains."""
    return f"{fleet_id}/{writer}"


def registration(  # noqa: PLR0917 - one argument per registered fact
    fleet_id: str, writer: int, name: str, registered: str, public_key: bytes, prev: bytes
) -> bytes:
    """What the fleet's key and the writer's own key sign when a writer registers."""
    doc = {
        "fleet": fleet_id,
        "writer": writer,
        "name": name,
        "registered": registered,
        "public_key": public_key.hex(),
        "prev": prev.hex(),
    }
    return _REGISTRATION + canonical(doc).encode()


def checkpoint_message(  # noqa: PLR0917 - one argument per signed field
    fleet_id: str,
    fid: int,
    fleet_prev: bytes,
    writer: int,
    cp_id: int,
    seq: int,
    head: bytes,
    ts: str,
    reason: str,
    prev: bytes,
    signer: int,
) -> bytes:
    """What a fleet checkpoint's signature covers: the writer's head (``seq``, ``head``), its
    own previous checkpoint (``prev``: SHA-256 of that signature, genesis for the first),
    and the fleet's previous checkpoint (``fid`` - 1, ``fleet_prev`` likewise)."""
    doc = {
        "fleet": fleet_id,
        "fid": fid,
        "fleet_prev": fleet_prev.hex(),
        "writer": writer,
        "id": cp_id,
        "seq": seq,
        "head": head.hex(),
        "ts": ts,
        "reason": reason,
        "prev": prev.hex(),
        "signer": signer,
    }
    return _CHECKPOINT + canonical(doc).encode()


class WriterKey:
    """A writer's own signing key: made in memory when it registers, never written anywhere."""

    def __init__(self) -> None:
        self._key = Ed25519PrivateKey.generate()
        self.public_raw = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


@dataclass(frozen=True)
class _State:
    """Where a writer's chain stands: its newest entry and its newest checkpoint."""

    seq: int
    hash: bytes
    ts: str
    cp_id: int
    cp_prev: bytes  # SHA-256 of the newest checkpoint's signature (genesis before the first)
    signed_seq: int  # the entry the newest checkpoint signs (0: none)


_Row = tuple[int, int, str, str | None, str, str | None, str, bytes, bytes, bytes]
_BEGUN_MAX = 100_000  # transfers in flight a writer remembers (beyond: looked up)
Signed = tuple[int, int, str, str]  # (fid, seq, SHA-256 of the signature, ts)


class FleetChain:
    """Appending to one writer's chain, inside the fleet log's write transactions: the same
    calls as the SQLite log's appender (:class:`veilpix.audit._append.Appender`), so the
    transfer log's API runs on either. The writer owns its chain (its session holds the
    chain's advisory lock), so the head is kept in memory: nothing is read to append."""

    def __init__(
        self,
        *,
        fleet_id: str,
        writer: int,
        key: WriterKey,
        every: int,
        keys: Callable[[], KeyFile],
        clock: Callable[[], datetime],
        state: _State | None = None,
    ) -> None:
        self.fleet_id = fleet_id
        self.writer = writer
        self.key = key
        self.every = every
        self._keys = keys
        self._clock = clock
        self.chain = chain_id(fleet_id, writer)
        start = _State(0, genesis(self.chain), "", 0, genesis(self.chain), 0)
        self.state = state or start  # committed
        self._work = self.state  # inside a transaction
        # what a crash of the database server may take back: the rows committed without
        # waiting for the disk (finishes) since the last durable commit, which ended at
        # ``durable`` (seq, hash)
        self.durable: tuple[int, bytes] = (0, genesis(self.chain))
        self.unconfirmed: list[_Row] = []
        self._txn_rows: list[_Row] = []
        self._rows: list[_Row] | None = None
        self._signed: Signed | None = None
        # checkpoints due in the open batch (reason, seq, hash): signed and inserted at its
        # end, so that the fleet's checkpoint lock is held only from there to the commit
        self._due: list[tuple[str, int, bytes]] = []
        # transfers this writer began (committed) and has not finished: their finish needs no
        # look at the database (``entries_one_finish`` still refuses a second finish)
        self.begun: set[str] = set()
        self._begun_txn: list[tuple[str, bool]] = []  # (record, begun?) of the transaction

    @property
    def head(self) -> tuple[int, bytes]:
        return self.state.seq, self.state.hash

    # -- the write transaction -----------------------------------------------------------------

    def begin(self) -> None:
        self._work, self._signed = self.state, None
        self._due = []
        self._begun_txn = []
        self._txn_rows = []

    def committed(self, *, durable: bool = True) -> None:
        self.state = self._work
        if durable:
            self.durable = (self.state.seq, self.state.hash)
            self.unconfirmed.clear()
        elif len(self.unconfirmed) < _BEGUN_MAX:
            self.unconfirmed.extend(self._txn_rows)
        self._txn_rows = []
        for record, begun in self._begun_txn:
            if begun and len(self.begun) < _BEGUN_MAX:
                self.begun.add(record)
            elif not begun:
                self.begun.discard(record)
        self._begun_txn = []

    def forget_begun(self) -> None:
        """Look every finish up in the database from now on (another writer finished one of
        this writer's transfers)."""
        self.begun.clear()

    def end(self) -> None:
        """The transaction is over (committed or not)."""
        self._work = self.state
        self._begun_txn = []

    def take_signed(self) -> Signed | None:
        signed, self._signed = self._signed, None
        return signed

    @contextmanager
    def batch(self, db: Any) -> Iterator[None]:
        self._rows = []
        try:
            yield
            self._flush(db)
            self._sign_due(db)
        finally:
            self._rows = None

    def mark(self) -> tuple[int, _State, int, int]:
        assert self._rows is not None
        return len(self._rows), self._work, len(self._due), len(self._begun_txn)

    def resume(self, state: _State) -> list[_Row]:
        """Go on from ``state``, the chain as the database holds it after its server crashed
        and lost commits that did not wait for the disk; the rows lost (finishes, to write
        again)."""
        lost = [r for r in self.unconfirmed if r[1] > state.seq]
        self.state = self._work = state
        self.unconfirmed.clear()
        self.durable = (state.seq, state.hash)
        return lost

    def undo(self, mark: tuple[int, _State, int, int]) -> None:
        assert self._rows is not None
        del self._rows[mark[0] :]
        self._work = mark[1]
        del self._due[mark[2] :]
        del self._begun_txn[mark[3] :]

    def _flush(self, db: Any) -> None:
        if self._rows:
            with db.cursor() as cur:
                cur.executemany(INSERT_ENTRY, self._rows)
            self._txn_rows.extend(self._rows)
            self._rows.clear()

    # -- entries and checkpoints ---------------------------------------------------------------

    def append(
        self,
        db: Any,
        kind: Kind,
        record: str | None,
        body: Mapping[str, Any],
        subject: str | None = None,
        *,
        ts: str | None = None,
    ) -> int:
        """Append an entry to this writer's chain; its seq in the chain. ``ts``: its time when
        it is not now (a migrated entry keeps its own)."""
        w = self._work
        seq = w.seq + 1
        ts = max(ts or now_text(self._clock()), w.ts)  # never runs backwards along the chain
        text = well_formed(scrub_secrets(canonical(body)))
        digest = entry_hash(w.hash, seq, kind, record, ts, subject, text)
        mac = self._keys().entry_mac(digest, self.chain)
        row = (self.writer, seq, kind, record, ts, subject, text, w.hash, digest, mac)
        if self._rows is not None:
            self._rows.append(row)
        else:
            db.execute(INSERT_ENTRY, row)
            self._txn_rows.append(row)
        self._work = replace(w, seq=seq, hash=digest, ts=ts)
        if record is not None and kind in ("begin", "finish"):
            self._begun_txn.append((record, kind == "begin"))
        if seq % self.every == 0 or seq == 1:
            self._due.append(("every" if seq % self.every == 0 else "first", seq, digest))
            if self._rows is None:
                self._sign_due(db)
        return seq

    def append_finish(self, db: Any, record_id: str, body: FinishBody) -> None:
        """Append the finish of ``record_id``; AuditLogError (nothing written) unless it was
        begun (by any writer of the fleet) and is not finished yet (by any writer either:
        ``entries_one_finish``, a unique index, settles two writers finishing at once). A
        transfer this writer began is not looked up, unless the finish was kept from a
        failed transaction (``late``)."""
        if record_id in self.begun and "late" not in body:
            self.append(db, "finish", record_id, body)
            return
        self._flush(db)
        kinds = {
            k
            for (k,) in db.execute(
                "SELECT kind FROM veilpix.entries WHERE record = %s", (record_id,)
            ).fetchall()
        }
        if "begin" not in kinds:
            raise AuditLogError(f"no begun transfer {record_id!r} in the log")
        if "finish" in kinds:
            raise AuditLogError(f"transfer {record_id!r} is already finished")
        self.append(db, "finish", record_id, body)

    def checkpoint(self, db: Any, reason: str, *, only_if_unsigned: bool = True) -> int | None:
        """Sign this writer's head (unless signed already and ``only_if_unsigned``), in the
        fleet's line of checkpoints; the writer's checkpoint number."""
        self._flush(db)
        self._sign_due(db)
        w = self._work
        if w.seq == 0 or (only_if_unsigned and w.signed_seq == w.seq):
            return None
        return self._sign(db, reason, w.seq, w.hash)

    def _sign_due(self, db: Any) -> None:
        """Sign the checkpoints the batch's entries made due, in order (their rows are in)."""
        self._flush(db)
        due, self._due = self._due, []
        for reason, seq, digest in due:
            self._sign(db, reason, seq, digest)

    def _sign(self, db: Any, reason: str, seq: int, digest: bytes) -> int:
        w = self._work
        cp_id = w.cp_id + 1
        fid, signature, ts = insert_checkpoint(
            db,
            fleet_id=self.fleet_id,
            writer=self.writer,
            cp_id=cp_id,
            head=(seq, digest),
            prev=w.cp_prev,
            reason=reason,
            signer=self.writer,
            sign=self.key.sign,
            ts=now_text(self._clock()),
        )
        sighash = hashlib.sha256(signature)
        self._work = replace(
            w, cp_id=cp_id, cp_prev=sighash.digest(), signed_seq=max(w.signed_seq, seq)
        )
        self._signed = (fid, seq, sighash.hexdigest(), ts)
        return cp_id

    def review(self, db: Any, action: str, by: str, via: str, facts: Mapping[str, Any]) -> int:
        body: ReviewBody = {"action": action, "by": by, "via": via, "facts": dict(facts)}
        return self.append(db, "review", None, body)

    # -- erasure and retention -----------------------------------------------------------------

    def erase(self, db: Any, tag: str, request_ref: str | None) -> tuple[int, int] | None:
        """As the SQLite log's: destroy the subject's key, append the tombstone, sign."""
        self._flush(db)
        row = db.execute("SELECT kid FROM veilpix.subject_keys WHERE tag = %s", (tag,)).fetchone()
        if row is None:
            return None
        kid = row[0]
        (count,) = db.execute(
            "SELECT count(*) FROM veilpix.entries WHERE subject = %s AND kind = 'begin'", (kid,)
        ).fetchone()
        db.execute("DELETE FROM veilpix.subject_keys WHERE kid = %s", (kid,))
        body: EraseBody = {"subject_key": kid, "records": count, "request_ref": request_ref}
        seq = self.append(db, "erase", None, body, kid)
        self.checkpoint(db, "erase")
        return count, seq

    def prune(self, db: Any, cutoff: str, older_than: str) -> Pruned:
        """Delete every entry dated before ``cutoff``, in every writer's chain, after appending
        to this writer's chain one prune entry per chain cut, which bridges that cut (its
        ``writer``, the entry it cut through and that entry's hash), all signed."""
        self._flush(db)
        cuts = db.execute(
            "SELECT writer, max(seq), count(*), count(*) FILTER (WHERE kind = 'begin')"
            " FROM veilpix.entries WHERE ts < %s GROUP BY writer ORDER BY writer",
            (cutoff,),
        ).fetchall()
        if not cuts:
            return Pruned(entries=0, records=0, through_seq=None, cutoff=cutoff, prune_seq=None)
        entries = records = 0
        seq = 0
        for writer, through, n, begins in cuts:
            # a writer's entries are dated in order: nothing after ``through`` is older
            (anchor,) = db.execute(
                "SELECT hash FROM veilpix.entries WHERE writer = %s AND seq = %s",
                (writer, through),
            ).fetchone()
            body: PruneBody = {
                "through": int(through),
                "anchor": bytes(anchor).hex(),
                "entries": int(n),
                "records": int(begins),
                "cutoff": cutoff,
                "older_than": older_than,
            }
            seq = self.append(db, "prune", None, {**body, "writer": int(writer)})
            entries, records = entries + int(n), records + int(begins)
        self._flush(db)
        for writer, through, _n, _b in cuts:
            db.execute(
                "DELETE FROM veilpix.entries WHERE writer = %s AND seq <= %s", (writer, through)
            )
        db.execute(
            "DELETE FROM veilpix.subject_keys k WHERE NOT EXISTS"
            " (SELECT 1 FROM veilpix.entries e WHERE e.subject = k.kid)"
        )
        self.checkpoint(db, "prune")
        return Pruned(
            entries=entries, records=records, through_seq=None, cutoff=cutoff, prune_seq=seq
        )


def insert_checkpoint(
    db: Any,
    *,
    fleet_id: str,
    writer: int,
    cp_id: int,
    head: tuple[int, bytes],
    prev: bytes,
    reason: str,
    signer: int,
    sign: Callable[[bytes], bytes],
    ts: str,
) -> tuple[int, bytes, str]:
    """Insert a checkpoint of ``writer``'s chain at ``head``, next in the fleet's line (under
    the checkpoints' lock, held until the transaction ends); (fid, signature, ts)."""
    db.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_CHECKPOINTS,))
    last = db.execute(
        "SELECT fid, signature FROM veilpix.checkpoints ORDER BY fid DESC LIMIT 1"
    ).fetchone()
    fid = 1 if last is None else int(last[0]) + 1
    fleet_prev = genesis(fleet_id) if last is None else hashlib.sha256(bytes(last[1])).digest()
    message = checkpoint_message(
        fleet_id, fid, fleet_prev, writer, cp_id, head[0], head[1], ts, reason, prev, signer
    )
    signature = sign(message)
    db.execute(
        INSERT_CHECKPOINT,
        (fid, writer, cp_id, head[0], head[1], ts, reason, signer, fleet_prev, signature),
    )
    return fid, signature, ts
