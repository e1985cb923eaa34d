"""The transfer log: what was sent where, written before it is sent, tamper-evident.

Storage is one SQLite file in WAL mode (created 0600) plus a key file beside it
(:mod:`veilpix.audit._store`, :mod:`veilpix.audit._keys`), written through a
:class:`~veilpix.audit._session.LogSession`. The log is an append-only chain of *entries*
(their bodies typed in :mod:`veilpix.audit._entry`):

- ``begin``: written and committed (durably) before a byte leaves; a transfer whose
  ``begin`` has no ``finish`` is shown as "outcome unknown", never lost;
- ``finish``: outcome (sent / failed / blocked), HTTP status, sizes, latency, reason;
  committed without waiting for the disk, and made durable by the next ``begin``, checkpoint
  or close: a crash can lose the latest finishes, whose transfers then show as "outcome
  unknown" (never a finish without its begin);
- ``erase``: tombstone of a subject erasure; ``prune``: the bridge over a retention cut;
  ``restart``: the signed statement a log started over with (:mod:`veilpix.audit._restart`).

Each entry's hash covers the previous entry's hash and the entry itself
(:mod:`veilpix.audit._chain`). Checkpoints sign (Ed25519) the head of the chain every
``checkpoint_every`` entries, every ``checkpoint_seconds`` while a writer is open, on close,
on open when a crashed writer left an unsigned tail, and after every erasure or prune
(:mod:`veilpix.audit._append`). Writers in several threads and several processes append
under SQLite's write lock (``BEGIN IMMEDIATE``): each append reads the head inside the
transaction, so the chain stays one line whoever writes; appends that arrive together share
one transaction and one fsync (:mod:`veilpix.audit._commit`).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Self, cast

from veilpix._config import Config, default_log_path, is_log_url, load_config, parse_age
from veilpix._errors import AuditLogError, ConfigError, LogIntegrityError
from veilpix.audit._chain import canonical, now_text
from veilpix.audit._checks import Problem
from veilpix.audit._commit import FinishOp
from veilpix.audit._entry import (
    BeginBody,
    Finish,
    FinishBody,
    Linked,
    Outcome,
    blocked_body,
    well_formed,
)
from veilpix.audit._keys import open_sealed, seal
from veilpix.audit._record import OutboundImage, Transfer, begin_body, clip_text
from veilpix.audit._records import (
    SELECT_FACTS,
    SELECT_FACTS_GUARDED,
    SQLITE,
    ChainEntry,
    Erasure,
    Pruned,
    Queries,
    SubjectState,
    TransferRecord,
    fingerprints_of,
    sealed_fingerprints,
    subject_key,
    to_record,
    unseal_subject,
)
from veilpix.audit._session import LogSession
from veilpix.audit._store import key_path_for
from veilpix.audit._verify import VerifyResult, verify_connection

__all__ = ["AuditLog", "PendingTransfer", "check_subject", "verify_log"]


class PendingTransfer:
    """A begun transfer. Call :meth:`finish` (or :meth:`fail`) once the call is over."""

    def __init__(self, log: AuditLog, record_id: str) -> None:
        self.id = record_id
        self._log = log
        self._t0 = time.perf_counter()
        self.finished = False

    def _latency(self) -> float:
        return (time.perf_counter() - self._t0) * 1000

    def finish(
        self,
        *,
        status: int | None = None,
        outcome: Outcome = "sent",
        response_bytes: int | None = None,
        request_bytes: int | None = None,
        reason: str | None = None,
        vendor_request_id: str | None = None,
    ) -> None:
        """Record how the call ended. ``outcome="sent"`` means the request left (whatever the
        HTTP status); ``failed`` means it may not have arrived (connection error, timeout)."""
        finish = Finish(
            outcome=outcome,
            status=status,
            response_bytes=response_bytes,
            request_bytes=request_bytes,
            reason=reason,
            vendor_request_id=vendor_request_id,
            latency_ms=self._latency(),
        )
        self._log._finish(self.id, finish)
        self.finished = True

    async def afinish(
        self,
        *,
        status: int | None = None,
        outcome: Outcome = "sent",
        response_bytes: int | None = None,
        request_bytes: int | None = None,
        reason: str | None = None,
        vendor_request_id: str | None = None,
    ) -> None:
        """:meth:`finish` for async code (see :meth:`AuditLog.abegin`)."""
        latency = self._latency()
        self.finished = True  # claimed now: a concurrent afail must not finish it twice
        try:
            finish = Finish(
                outcome=outcome,
                status=status,
                response_bytes=response_bytes,
                request_bytes=request_bytes,
                reason=reason,
                vendor_request_id=vendor_request_id,
                latency_ms=latency,
            )
            await self._log._afinish(self.id, finish)
        except Exception:  # not on cancellation: the shielded commit still goes ahead
            self.finished = False
            raise

    def finish_nowait(
        self,
        *,
        status: int | None = None,
        outcome: Outcome = "sent",
        response_bytes: int | None = None,
        request_bytes: int | None = None,
        reason: str | None = None,
        vendor_request_id: str | None = None,
    ) -> None:
        """:meth:`finish` without waiting: the finish is queued for the log's writer thread,
        which commits it with whatever else is waiting (for the proxy, whose answer to the
        app need not wait for the record of it). Readers of this handle see it; a finish
        that cannot be written is reported on the ``veilpix.audit`` logger, and the record
        then shows the outcome as unknown."""
        latency = self._latency()
        self.finished = True
        finish = Finish(
            outcome=outcome,
            status=status,
            response_bytes=response_bytes,
            request_bytes=request_bytes,
            reason=reason,
            vendor_request_id=vendor_request_id,
            latency_ms=latency,
        )
        self._log._finish(self.id, finish, wait=False)

    def fail(self, reason: str) -> None:
        self.finish(outcome="failed", reason=reason)

    async def afail(self, reason: str) -> None:
        await self.afinish(outcome="failed", reason=reason)


class AuditLog(LogSession):
    """The transfer log at ``path`` (default :func:`default_log_path`).

    Opening creates the file (0600), its folder (0700) and the key file beside it when they do
    not exist. ``readonly=True`` opens an existing log for review and verification without
    touching it; the key file is then optional (without it, subject-linked fields stay sealed).
    ``checkpoint_every`` is fixed when the log is created (and signed, so verify can insist on
    a checkpoint at every multiple of it); opening an existing log uses the log's own value.
    ``mechanisms`` maps a vendor name to the transfer mechanism recorded when the door does not
    give one. ``encrypt_prompts=True`` stores each prompt encrypted (under the subject's key
    when the call names a subject, so erasure covers it) in addition to length and fingerprint.
    ``clock`` replaces the wall clock (for imports and tests); times are stored in UTC.
    ``create=False`` opens an existing log for writing and never creates one.
    ``durability="os"`` lets a call leave once its begin is with the operating system instead
    of on disk: no fsync per call (about 4 ms less per call on an ordinary disk), at the cost
    of the newest records if the machine (not veilpix) goes down; checkpoints and closing
    still fsync.

    Every write error becomes :class:`~veilpix.AuditLogError`; a door that gets one does not
    send. Thread-safe; several processes may write the same file.

    ``path`` may also be a PostgreSQL URL (``postgresql://user@host/db``): the log is then a
    fleet's, on that database (:class:`veilpix.audit.fleet.FleetLog`, same API).
    """

    def __new__(cls, path: str | os.PathLike[str] | None = None, *args: Any, **kwargs: Any) -> Self:
        if cls is AuditLog:
            from veilpix.audit.fleet import FleetLog, is_url  # noqa: PLC0415 - no cycle

            if is_url(path if path is not None else os.environ.get("VEILPIX_LOG")):
                return cast("Self", object.__new__(FleetLog))
        return object.__new__(cls)

    @classmethod
    def from_config(
        cls,
        config: Config | str | os.PathLike[str] | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        key_path: str | os.PathLike[str] | None = None,
        readonly: bool = False,
        create: bool = True,
    ) -> AuditLog:
        """The log a ``veilpix.toml`` describes (see :func:`veilpix.load_config`). The path is
        ``path`` if given, else ``$VEILPIX_LOG``, else ``[log] url`` or ``[log] path``, else
        the default; the key file ``key_path``, else ``$VEILPIX_LOG_KEY``, else ``[log] key``,
        else beside the log (a fleet log's: see :meth:`locate`)."""
        cfg = config if isinstance(config, Config) else load_config(config)
        chosen, key = cls.locate(cfg, path=path, key_path=key_path)
        return cls(
            chosen,
            key_path=key,
            readonly=readonly,
            create=create,
            checkpoint_every=cfg.log.checkpoint_every,
            checkpoint_seconds=cfg.log.checkpoint_seconds,
            encrypt_prompts=cfg.log.encrypt_prompts,
            mechanisms=cfg.mechanisms,
            durability="os" if cfg.log.durability == "os" else "disk",
        )

    @staticmethod
    def locate(
        config: Config | str | os.PathLike[str] | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        key_path: str | os.PathLike[str] | None = None,
    ) -> tuple[Path | str, Path]:
        """(log, key file) as :meth:`from_config` chooses them, without opening anything. The
        log is a Path, or a PostgreSQL URL (str) for a fleet log (``path``, ``$VEILPIX_LOG``
        or ``[log] url`` naming one); a fleet's key file defaults to one named after its
        database in the user data folder."""
        cfg = config if isinstance(config, Config) else load_config(config)
        chosen = path or os.environ.get("VEILPIX_LOG") or cfg.log.url or cfg.log.path
        key = key_path or os.environ.get("VEILPIX_LOG_KEY") or cfg.log.key
        if is_log_url(chosen):
            from veilpix.audit.fleet import default_key_path  # noqa: PLC0415 - no cycle

            url = str(chosen).strip()
            return url, Path(key).expanduser() if key else default_key_path(url)
        log = Path(chosen).expanduser() if chosen else default_log_path()
        return log, Path(key).expanduser() if key else key_path_for(log)

    # -- writing -------------------------------------------------------------------------------

    def fingerprint(self, data: bytes, *, label: str = "image") -> str:
        """The keyed fingerprint this log stores for ``data``: HMAC-SHA256 with the log key
        over the SHA-256 of the data. Without the key file nobody can confirm a guess."""
        return self._keyed(hashlib.sha256(data).digest(), label)

    def _keyed(self, digest: bytes, label: str = "image") -> str:
        if self.keys is None:
            raise AuditLogError(
                f"fingerprints need the key file of the log ({str(self.key_path)!r})",
                hint="run this where the log's key file is readable, or pass --key FILE",
            )
        return self.keys.fingerprint(label.encode(), digest)

    def _image_fingerprints(self, img: OutboundImage) -> list[str | None]:
        """(before, after). The pipeline's report already holds both SHA-256 digests; they are
        used when the sizes agree with the bytes at hand, so a large photo is hashed once."""
        s = img.sanitized
        if s is None:
            return [self.fingerprint(img.original), None]
        r = s.report
        if r.bytes_in == len(img.original) and r.bytes_out == len(s.data):
            return [
                self._keyed(bytes.fromhex(r.sha256_in)),
                self._keyed(bytes.fromhex(r.sha256_out)),
            ]
        return [self.fingerprint(img.original), self.fingerprint(s.data)]

    def _subject_key(self, db: sqlite3.Connection, subject_ref: str) -> tuple[str, bytes]:
        keys = self._writer_keys()
        tag = self.fingerprint(subject_ref.encode(), label="subject")
        row = db.execute("SELECT kid, wrapped FROM subject_keys WHERE tag=?", (tag,)).fetchone()
        if row is not None:
            return row[0], open_sealed(keys.wrap_key, row[1], b"subject-key:" + row[0].encode())
        kid = secrets.token_hex(16)
        key = secrets.token_bytes(32)
        wrapped = seal(keys.wrap_key, key, b"subject-key:" + kid.encode())
        db.execute(
            "INSERT INTO subject_keys(kid, tag, wrapped, created) VALUES (?, ?, ?, ?)",
            (kid, tag, wrapped, now_text(self._clock())),
        )
        return kid, key

    def _begin_body(self, t: Transfer) -> tuple[BeginBody, Linked]:
        """(clear body, subject-linked fields). Computed before the write lock is taken:
        fingerprinting a large image must not hold up other writers."""
        prompt = None if t.prompt is None else well_formed(t.prompt)
        body = begin_body(t, prompt=prompt, mechanisms=self.mechanisms)
        linked: Linked = {"fingerprints": [self._image_fingerprints(img) for img in t.images]}
        if prompt is not None:
            linked["prompt_fingerprint"] = self.fingerprint(prompt.encode(), label="prompt")
            if self.encrypt_prompts:
                linked["prompt_text"] = prompt
        return body, linked

    def _write_begin(
        self, db: sqlite3.Connection, t: Transfer, rid: str, prepared: tuple[BeginBody, Linked]
    ) -> None:
        """Append the begin of ``t``: the subject-linked fields sealed under the subject's
        key when ``t`` names a subject, else written into the body in the clear."""
        keys = self._writer_keys()
        body, linked = prepared
        subject = None
        if t.subject_ref is not None:
            subject, key = self._subject_key(db, t.subject_ref)
            linked["subject_ref"] = clip_text(t.subject_ref)
            linked["consent_ref"] = clip_text(t.consent_ref)
            body["why"]["consent_ref"] = None
            body["sealed"] = seal(key, canonical(linked).encode(), rid.encode()).hex()
        else:
            what = body["what"]
            for img, (before, after) in zip(what["images"], linked["fingerprints"], strict=True):
                img["fingerprint_before"], img["fingerprint_after"] = before, after
            prompt = what["prompt"]
            if prompt is not None:
                prompt["fingerprint"] = linked["prompt_fingerprint"]
                if "prompt_text" in linked:
                    blob = seal(keys.wrap_key, linked["prompt_text"].encode(), rid.encode())
                    prompt["sealed"] = blob.hex()
        self._writer_chain().append(db, "begin", rid, body, subject)

    def begin(self, transfer: Transfer) -> PendingTransfer:
        """Record ``transfer`` as pending and commit it durably. Only after this returns may
        the door send; if it raises :class:`~veilpix.AuditLogError` the door must not send."""
        rid, op = self._begin_op(transfer)
        self._commits.grouped(op, durable=self.durability == "disk")
        return PendingTransfer(self, rid)

    async def abegin(self, transfer: Transfer) -> PendingTransfer:
        """:meth:`begin` for async code: the commit runs on the log's writer thread, shared
        with whatever else is waiting, and the event loop is free meanwhile."""
        rid, op = self._begin_op(transfer)
        await self._commits.awaited(op, durable=self.durability == "disk")
        return PendingTransfer(self, rid)

    def _begin_op(self, transfer: Transfer) -> tuple[str, Callable[[sqlite3.Connection], None]]:
        rid = str(uuid.uuid4())  # unique without coordination; order comes from the chain
        prepared = self._begin_body(transfer)
        return rid, lambda db: self._write_begin(db, transfer, rid, prepared)

    def finish(
        self,
        record_id: str,
        *,
        outcome: Outcome = "sent",
        status: int | None = None,
        response_bytes: int | None = None,
        request_bytes: int | None = None,
        reason: str | None = None,
        vendor_request_id: str | None = None,
        latency_ms: float | None = None,
    ) -> None:
        """Complete a begun record. A record is finished once; its begin must exist."""
        finish = Finish(
            outcome=outcome,
            status=status,
            response_bytes=response_bytes,
            request_bytes=request_bytes,
            reason=reason,
            vendor_request_id=vendor_request_id,
            latency_ms=latency_ms,
        )
        self._finish(record_id, finish)

    async def afinish(
        self,
        record_id: str,
        *,
        outcome: Outcome = "sent",
        status: int | None = None,
        response_bytes: int | None = None,
        request_bytes: int | None = None,
        reason: str | None = None,
        vendor_request_id: str | None = None,
        latency_ms: float | None = None,
    ) -> None:
        """:meth:`finish` for async code (see :meth:`abegin`)."""
        finish = Finish(
            outcome=outcome,
            status=status,
            response_bytes=response_bytes,
            request_bytes=request_bytes,
            reason=reason,
            vendor_request_id=vendor_request_id,
            latency_ms=latency_ms,
        )
        await self._afinish(record_id, finish)

    def _finish(self, record_id: str, finish: Finish, *, wait: bool = True) -> None:
        """The one way a finish gets in (also :class:`PendingTransfer`'s): committed without
        waiting for the disk; ``wait=False`` queues it for the writer thread and returns."""
        op = FinishOp(self._write_finish, record_id, finish.body())
        if wait:
            self._commits.grouped(op, durable=False)
        else:
            self._commits.post(op, durable=False)

    async def _afinish(self, record_id: str, finish: Finish) -> None:
        op = FinishOp(self._write_finish, record_id, finish.body())
        await self._commits.awaited(op, durable=False)

    def _write_finish(self, db: sqlite3.Connection, record_id: str, body: FinishBody) -> None:
        self._writer_chain().append_finish(db, record_id, body)

    def block(self, transfer: Transfer, *, reason: str, rule: str) -> str:
        """Record a call that policy stopped before sending (begin and finish, one commit)."""
        rid, op = self._block_op(transfer, reason, rule)
        self._commits.grouped(op, durable=self.durability == "disk")
        return rid

    async def ablock(self, transfer: Transfer, *, reason: str, rule: str) -> str:
        """:meth:`block` for async code (see :meth:`abegin`)."""
        rid, op = self._block_op(transfer, reason, rule)
        await self._commits.awaited(op, durable=self.durability == "disk")
        return rid

    def _block_op(
        self, transfer: Transfer, reason: str, rule: str
    ) -> tuple[str, Callable[[sqlite3.Connection], None]]:
        rid, begin = self._begin_op(transfer)
        body = blocked_body(reason, rule)

        def write(db: sqlite3.Connection) -> None:
            begin(db)
            self._writer_chain().append(db, "finish", rid, body)

        return rid, write

    @contextmanager
    def record(self, transfer: Transfer) -> Iterator[PendingTransfer]:
        """``with log.record(t) as pending: send(); pending.finish(status=...)``.

        The body runs only after the begin is durable. An exception escaping the body finishes
        the record as failed (with the exception's type and message, credentials masked) and
        propagates; leaving the body without finishing records "no response recorded".
        """
        pending = self.begin(transfer)
        try:
            yield pending
        except BaseException as exc:
            if not pending.finished:
                pending.fail(f"{type(exc).__name__}: {exc}"[:500])
            raise
        if not pending.finished:
            pending.fail("no response recorded")

    def erase(
        self,
        subject_ref: str,
        *,
        request_ref: str | None = None,
        by: str | None = None,
        via: str = "cli",
    ) -> Erasure:
        """GDPR Art. 17: destroy the subject's key, so every field linked to them (subject and
        consent references, image and prompt fingerprints, encrypted prompts) is unreadable
        for good, and write a signed tombstone. The chain is untouched and still verifies.
        ``by`` (who asked, as ``via`` knows them) adds a ``review`` entry in the same commit;
        it names the request and the count, never the subject."""
        if self.keys is None:
            raise AuditLogError("erasure needs the log's key file")
        # the key to destroy must be this subject's (its transfers name them, sealed): a
        # subject key whose tag was swapped with another's would erase someone else
        next(self.records(subject=subject_ref, limit=1), None)
        tag = self.fingerprint(subject_ref.encode(), label="subject")
        with self._write() as db:
            chain = self._writer_chain()
            done = chain.erase(db, tag, request_ref)
            if by is not None:
                facts = {
                    "request_ref": request_ref,
                    "records": 0 if done is None else done[0],
                    "tombstone": None if done is None else done[1],
                }
                chain.review(db, "erase", by, via, facts)
                chain.checkpoint(db, "review")
        if done is None:
            return Erasure(records=0, tombstone_seq=None, physically_overwritten=True)
        count, seq = done
        return Erasure(records=count, tombstone_seq=seq, physically_overwritten=self._flush_wal())

    def resolve(
        self,
        record_id: str,
        *,
        outcome: Outcome,
        reason: str,
        by: str,
        via: str = "cli",
        status: int | None = None,
    ) -> TransferRecord:
        """Record the outcome of a transfer left "outcome unknown" (its writer died mid-call)
        once a person found out what happened, with a ``review`` entry naming them; both in
        one commit. The record as it was; ConfigError when it already has an outcome."""
        rec = self.get(record_id)
        if rec.outcome != "unknown":
            raise ConfigError(
                f"transfer {rec.id} already has an outcome ({rec.outcome})",
                hint="only transfers shown as 'outcome unknown' can be resolved",
            )
        body = Finish(
            outcome=outcome, status=status, reason=f"resolved by operator: {reason}"
        ).body()
        with self._write() as db:
            chain = self._writer_chain()
            chain.append_finish(db, rec.id, body)
            chain.review(db, "resolve", by, via, {"record": rec.id, "outcome": outcome})
            chain.checkpoint(db, "review")
        return rec

    def note(self, action: str, *, by: str, via: str = "console", facts: Mapping[str, Any]) -> int:
        """Record what a reviewer did with the log (ran verify, exported records, ...) as a
        signed ``review`` entry; its seq. ``facts`` are counts and references, never personal
        data: they are stored in the clear."""
        with self._write() as db:
            chain = self._writer_chain()
            seq = chain.review(db, action, by, via, facts)
            chain.checkpoint(db, "review")
        return seq

    def prune(self, older_than: timedelta | str) -> Pruned:
        """Remove every entry older than ``older_than`` (e.g. ``"180d"``) and bridge the cut
        with a signed prune entry, so the rest still verifies. Subject keys no remaining entry
        uses are destroyed too."""
        age = parse_age(older_than) if isinstance(older_than, str) else older_than
        cutoff = now_text(self._clock() - age)
        with self._write() as db:
            pruned = self._writer_chain().prune(db, cutoff, str(age))
        if pruned.prune_seq is not None:
            self._flush_wal()
        return pruned

    # -- reading -------------------------------------------------------------------------------
    # (one set of readers for both storages: the SQL is the storage's, in ``_queries``, and
    # rows come back through ``_fetch`` in the same shapes)

    _queries: Queries = SQLITE

    def _fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """The rows of one read."""
        with self._lock:
            return self._conn().execute(sql, args).fetchall()

    def _open_subject(
        self, rid: str, kid: str, body: Mapping[str, Any]
    ) -> tuple[SubjectState, Linked | None]:
        rows = self._fetch(self._queries.wrapped, (kid,))
        return unseal_subject(rows[0][0] if rows else None, self.keys, rid, kid, body)

    def records(
        self,
        *,
        since: str | None = None,
        until: str | None = None,
        vendor: str | None = None,
        host: str | None = None,
        country: str | None = None,
        outcome: str | None = None,
        app: str | None = None,
        subject: str | None = None,
        image: bytes | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> Iterator[TransferRecord]:
        """Transfers in log order (``newest_first`` reverses it), filtered. ``since`` and
        ``until`` are ISO dates or times (UTC); ``until`` is exclusive. ``subject`` and
        ``image`` (the bytes of a file, original or as sent) need the key file."""
        self._commits.caught_up()
        q = self._queries
        where, args = q.filters(
            since=since,
            until=until,
            vendor=vendor,
            host=host,
            country=country,
            outcome=outcome,
            app=app,
        )
        sql = [q.records, *where]
        if subject is not None:
            tag = self.fingerprint(subject.encode(), label="subject")
            rows = self._fetch(q.subject_kid, (tag,))
            if not rows:
                return
            sql.append(f"AND b.subject = {q.mark}")
            args.append(rows[0][0])
        sql.append(f"ORDER BY {q.position} DESC" if newest_first else f"ORDER BY {q.position}")
        wanted = None if image is None else self.fingerprint(image)
        if limit is not None and wanted is None:
            sql.append(f"LIMIT {q.mark}")
            args.append(limit)
        shown = 0
        for row in self._fetch(" ".join(sql), args):
            rec = to_record(row, self._open_subject)
            if subject is not None:
                check_subject(rec, subject, self.location)
            if wanted is not None and wanted not in fingerprints_of(rec):
                continue
            yield rec
            shown += 1
            if limit is not None and shown >= limit:
                return

    def get(self, record_id: str) -> TransferRecord:
        """One transfer by id (a unique prefix of at least 8 characters is enough)."""
        self._commits.caught_up()
        if len(record_id) < 8:
            raise ConfigError("give at least 8 characters of the record id")
        # every id starting with the prefix sorts in [prefix, prefix with its last character
        # raised): a range the record index answers, where LIKE would read every entry
        upper = record_id[:-1] + chr(ord(record_id[-1]) + 1)
        rows = self._fetch(self._queries.by_id, (record_id, upper))
        if not rows:
            raise AuditLogError(
                f"no transfer {record_id!r} in {self.location!r}",
                hint="list them with: veilpix audit list",
            )
        if len(rows) > 1:
            raise ConfigError(f"{record_id!r} matches several transfers; give more of the id")
        return to_record(rows[0], self._open_subject)

    def records_at(
        self, seqs: Sequence[int], *, damaged: list[int] | None = None
    ) -> list[TransferRecord]:
        """The transfers whose begin entries are ``seqs``, in that order (missing ones left
        out): a page of a list the caller filtered and sorted itself. With ``damaged``, an
        entry veilpix did not write (altered) is left out and its seq appended there;
        without, it raises :class:`AuditLogError`."""
        self._commits.caught_up()
        found: dict[int, TransferRecord] = {}
        for i in range(0, len(seqs), 500):
            for row in self._fetch(*self._queries.at([int(s) for s in seqs[i : i + 500]])):
                rec = self._record(row, damaged)
                if rec is not None:
                    found[rec.seq] = rec
        return [found[s] for s in seqs if s in found]

    def _record(self, row: Sequence[Any], damaged: list[int] | None) -> TransferRecord | None:
        """The record of a ``SELECT_RECORDS`` row; None (its seq noted in ``damaged``) when
        veilpix did not write it and the caller asked to go on."""
        if damaged is None:
            return to_record(row, self._open_subject)
        try:
            return to_record(row, self._open_subject)
        except AuditLogError:
            damaged.append(int(row[0]))
            return None

    def iter_records(
        self, *, chunk: int = 2000, damaged: list[int] | None = None
    ) -> Iterator[TransferRecord]:
        """Every transfer, oldest first, read ``chunk`` at a time (the lock is let go between
        chunks, and at most a chunk of rows is held): for a register of a million.
        ``damaged`` as for :meth:`records_at`."""
        after = 0
        while True:
            self._commits.caught_up()
            rows = self._fetch(self._queries.after, (after, chunk))
            if not rows:
                return
            for row in rows:
                rec = self._record(row, damaged)
                if rec is not None:
                    yield rec
            after = rows[-1][0]

    def facts(self, after: int = 0, limit: int = 50_000) -> list[tuple[Any, ...]]:
        """The entries after seq ``after`` (at most ``limit``), oldest first, as the facts a
        summary of the log needs (see :data:`~veilpix.audit._records.SELECT_FACTS`); read in
        SQLite, without building records, so a million transfers index in seconds."""
        self._commits.caught_up()
        with self._lock:
            try:
                return self._conn().execute(SELECT_FACTS, (after, limit)).fetchall()
            except sqlite3.OperationalError:  # a body that is not JSON: altered
                return self._conn().execute(SELECT_FACTS_GUARDED, (after, limit)).fetchall()

    def facts_after(
        self, cursor: Any = None, limit: int = 50_000
    ) -> tuple[list[tuple[Any, ...]], Any]:
        """:meth:`facts` of the entries after ``cursor`` (None: from the start) and the cursor
        after them: what keeps a summary current without reading the log again. The cursor
        is the log's own (here the last seq read; a fleet log's says how far each writer's
        chain was read, since its writers commit in no one order)."""
        after = int(cursor or 0)
        rows = self.facts(after, limit)
        return rows, (rows[-1][0] if rows else after)

    # (a file log's entries become visible in seq order; a fleet log's may not: see FleetLog)
    late_entries = False

    def extent(self) -> tuple[int, int]:
        """(first seq, last seq): what tells a reader the log grew or was cut (both come
        from the ends of the primary key, whatever the log's size)."""
        self._commits.caught_up()
        with self._lock:
            row = (  # (one min() or max() per SELECT: SQLite then reads one end of the key)
                self._conn()
                .execute("SELECT (SELECT min(seq) FROM entries), (SELECT max(seq) FROM entries)")
                .fetchone()
            )
        return int(row[0] or 0), int(row[1] or 0)

    def with_image(self, data: bytes) -> list[TransferRecord]:
        """The transfers that sent ``data`` (a file's bytes, original or as sent), newest
        first (see :meth:`image_matches`)."""
        return self.image_matches(data)[0]

    def image_matches(
        self, data: bytes, *, limit: int | None = None
    ) -> tuple[list[TransferRecord], int]:
        """The newest ``limit`` transfers that sent ``data`` (a file's bytes, original or as
        sent), newest first, and how many did in all. Needs the key file: the log holds
        keyed fingerprints. The storage finds the bodies that hold the fingerprint in the
        clear (a keyed fingerprint in a body is that image's: nothing else there can equal
        it); of the transfers linked to a subject only the sealed fields are opened (each
        subject's key once); only the transfers returned become records."""
        wanted = self.fingerprint(data)
        keys = self.keys
        self._commits.caught_up()
        rows = self._fetch(self._queries.image_candidates, (wanted, wanted))
        opened: dict[str, bytes | None] = {}
        seqs = []
        for seq, rid, kid, clear, sealed in rows:
            if clear:
                seqs.append(seq)
                continue
            if kid not in opened:
                got = self._fetch(self._queries.wrapped, (kid,))
                opened[kid] = subject_key(got[0][0] if got else None, keys, kid)
            if wanted in sealed_fingerprints(opened[kid], rid, sealed):
                seqs.append(seq)
        shown = seqs if limit is None else seqs[:limit]
        altered: list[int] = []  # (a match all the same: it holds the fingerprint)
        found = [r for r in self.records_at(shown, damaged=altered) if wanted in fingerprints_of(r)]
        return found, len(seqs) - len(shown) + len(found) + len(altered)

    def entries_of(self, record_id: str) -> list[ChainEntry]:
        """Where a transfer sits in the chain: its entries (begin, finish) with their hashes,
        and the newest checkpoint that covers each, if any."""
        self._commits.caught_up()
        return [ChainEntry(*row) for row in self._fetch(self._queries.chain_entries, (record_id,))]

    def reviews(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``review`` entries (what reviewers did), newest first."""
        self._commits.caught_up()
        out = []
        for seq, ts, body in self._fetch(self._queries.reviews, (limit,)):
            try:
                facts = json.loads(body)
            except ValueError:
                facts = {}
            out.append({"seq": seq, "ts": ts, **(facts if isinstance(facts, dict) else {})})
        return out

    def prompt(self, record_id: str) -> str | None:
        """The prompt stored encrypted for ``record_id`` (``encrypt_prompts=True``), or None
        when it was not stored or was erased."""
        rec = self.get(record_id)
        if rec.sealed is not None:
            return rec.sealed.get("prompt_text")
        prompt = rec.what.get("prompt")
        sealed = prompt.get("sealed") if prompt else None
        if sealed is None or self.keys is None:
            return None
        return open_sealed(self.keys.wrap_key, bytes.fromhex(sealed), rec.id.encode()).decode()

    def counts(self) -> dict[str, int]:
        """Entries, transfers, pending transfers, checkpoints, subject keys, erasures, prunes
        (and a fleet log's writers)."""
        self._commits.caught_up()
        return {n: int(self._fetch(sql)[0][0]) for n, sql in self._queries.counts.items()}

    def verify(self, public_key: bytes | None = None, *, expect: str | None = None) -> VerifyResult:
        """Check the chain and every signature; see :func:`veilpix.verify_log`."""
        self._commits.caught_up()
        with self._lock:
            note = self._key_problem
            return verify_connection(
                self._conn(),
                public_key=public_key,
                path=str(self.path),
                expect=expect,
                keys=self.keys,
                key_problem=None if note is None else Problem("key-file", None, note),
            )

    def __repr__(self) -> str:
        mode = "readonly" if self.readonly else "writable"
        return f"AuditLog({str(self.path)!r}, {mode})"


def check_subject(rec: TransferRecord, subject: str, where: str) -> None:
    """Raise LogIntegrityError unless ``rec``, found under ``subject``'s key, names that
    subject in its sealed fields (when they open): the log's subject keys were altered (a
    tag moved to another subject's key) otherwise."""
    if rec.sealed is None or rec.sealed.get("subject_ref") in (None, clip_text(subject)):
        return
    raise LogIntegrityError(
        f"the transfer log at {where} was altered: the key it holds for this subject opens "
        f"transfer {rec.id}, which names another subject; nothing was read or erased",
        found="changed",
        hint="run veilpix audit verify with the key file, and restore the log from a backup",
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
    with AuditLog(path, readonly=True, key_path=key_path) as log:
        return log.verify(public_key, expect=expect)
