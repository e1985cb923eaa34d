""":class:`FleetLog`: the transfer log on PostgreSQL, with the file log's API and promises.

``AuditLog("postgresql://...")`` (or ``--log``, ``[log] url``, ``$VEILPIX_LOG`` naming a URL)
opens one. Writing: each process registers as a writer (:mod:`veilpix.audit.fleet._schema`)
and appends to its own chain (:mod:`veilpix.audit.fleet._chain`) through the group commit
the file log uses (:mod:`veilpix.audit._commit`), on one connection that holds its chain's
session lock; a begin is committed with ``synchronous_commit=on`` before the call may leave.
When the database cannot be written (down, read-only, full, a role without the grant) the
call fails with :class:`~veilpix.AuditLogError` and is not sent; finishes are kept and
written when it can; the next write reconnects. On open a writer closes the chains of
writers that died without closing (their session lock is free), after checking their tail's
links and MACs. Reading goes through a small connection pool and never holds the writer up.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import select
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Self

from veilpix._errors import AuditLogError, ConfigError, LogIntegrityError
from veilpix._install import install_command
from veilpix.audit._chain import genesis, now_text
from veilpix.audit._checks import Problem, Walker, blob, mac_problem
from veilpix.audit._commit import Redo, Ticket, unspill
from veilpix.audit._keys import KeyFile, open_sealed, seal, verify_signature
from veilpix.audit._log import AuditLog
from veilpix.audit._records import (
    Erasure,
)
from veilpix.audit._session import Durability
from veilpix.audit._verify import VerifyResult
from veilpix.audit.fleet._chain import (
    LOCK_CHECKPOINTS,
    LOCK_WRITER,
    FleetChain,
    _State,
    chain_id,
    checkpoint_message,
    insert_checkpoint,
)
from veilpix.audit.fleet._schema import FleetMeta, connect, create_or_open, read_meta, register
from veilpix.audit.fleet._sql import FLEET, SELECT_FACTS, SELECT_FACTS_AFTER
from veilpix.audit.fleet._url import (
    default_key_path,
    describe,
    is_url,
    redact,
    remember_secret,
)
from veilpix.audit.fleet._verify import verify_fleet

__all__ = ["FleetLog"]

_log = logging.getLogger("veilpix.audit")


class FleetLog(AuditLog):
    """The transfer log in the PostgreSQL database at ``url``; see :class:`~veilpix.AuditLog`
    for the API. ``key_path`` is the fleet's key file (default: one named after the
    database in the user data folder; every machine that writes needs a copy)."""

    storage = "postgresql"

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        return object.__new__(cls)

    @property
    def address(self) -> str:
        return self.url

    @property
    def short_name(self) -> str:
        return self.location

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        key_path: str | os.PathLike[str] | None = None,
        readonly: bool = False,
        create: bool = True,
        checkpoint_every: int = 1000,
        checkpoint_seconds: float = 60.0,
        mechanisms: Mapping[str, str] | None = None,
        encrypt_prompts: bool = False,
        busy_timeout: float = 30.0,
        clock: Callable[[], datetime] | None = None,
        durability: Durability = "disk",
    ) -> None:
        url = str(path) if path is not None else os.environ.get("VEILPIX_LOG", "")
        if not is_url(url):
            raise ConfigError(f"{url!r} is not a PostgreSQL URL (postgresql://...)")
        self._configure(
            readonly=readonly,
            checkpoint_every=checkpoint_every,
            checkpoint_seconds=checkpoint_seconds,
            mechanisms=mechanisms,
            encrypt_prompts=encrypt_prompts,
            clock=clock,
            durability=durability,
        )
        del busy_timeout  # (PostgreSQL waits for its own locks)
        _need_driver()
        remember_secret(url)  # (and ConfigError, naming no secret, for a URL libpq misreads)
        self.url = url.strip()
        self.location = redact(self.url)
        self.path = Path(self.location)
        chosen = key_path if key_path is not None else os.environ.get("VEILPIX_LOG_KEY") or None
        self.key_path = Path(chosen).expanduser() if chosen else default_key_path(self.url)
        self._db: Any = None  # the writer's connection (holds its chain's session lock)
        self._pool: Any = None  # the readers'
        self._pool_lock = threading.Lock()
        self._chain: FleetChain | None = None  # type: ignore[assignment]
        self._attempt: _State | None = None  # the head a commit whose outcome is unknown had
        self._signed_later: Any = None  # a checkpoint the key file records once on disk
        self._replay: list[Any] = []  # entries a crash of the server lost, to write again
        self._meta: Any = None
        if readonly:
            self._open_reader()
        else:
            self._open_writer(create=create)

    # -- opening -------------------------------------------------------------------------------

    def _open_reader(self) -> None:
        with self._read() as db:
            meta = read_meta(db, self.url)
        if meta is None:
            raise AuditLogError(
                f"there is no transfer log at {self.location}",
                hint="check the URL's database; create the log with: veilpix audit init --log URL",
            )
        self._use_meta(meta)
        if self.key_path.is_file():
            try:
                keys = KeyFile.read(self.key_path)
            except ConfigError as exc:
                self._key_problem = exc.message
            else:
                if keys.log_id == meta.fleet_id:
                    self.keys = keys  # (verify compares its public key with the database's)
                else:
                    self._key_problem = f"the key file {str(self.key_path)!r} is another log's"

    def _use_meta(self, meta: FleetMeta) -> None:
        self._meta = meta
        self.log_id = meta.fleet_id
        self.public_key = meta.public_key
        self.checkpoint_every = meta.checkpoint_every

    def _open_writer(self, *, create: bool) -> None:
        db = connect(self.url, name="veilpix writer")
        try:
            meta, self.keys = create_or_open(
                db,
                self.url,
                self.key_path,
                create=create,
                every=self.checkpoint_every,
                clock=self._clock,
            )
            self._use_meta(meta)
            self._check_state(db)
        except BaseException:
            with suppress(Exception):
                db.close()
            raise
        self._db = db  # (the writer registers at its first write: see _writer_db)
        spilled = self._spill_path()
        written = unspill(
            spilled,
            self._writer_keys(),
            self.log_id,
            lambda rid, body: self._commits.grouped(
                lambda db: self._writer_chain().append_finish(db, rid, body), durable=True
            ),
        )
        if written >= 0 and spilled.exists():
            with suppress(OSError):
                spilled.unlink()

    def _register(self, db: Any) -> None:
        reg = register(db, self.url, self._meta, self._writer_keys(), self._clock)
        self.writer = reg.writer
        self.writer_name = reg.name
        self._chain = FleetChain(
            fleet_id=self.log_id,
            writer=reg.writer,
            key=reg.key,
            every=self.checkpoint_every,
            keys=self._writer_keys,
            clock=self._clock,
        )
        with suppress(Exception):
            db.execute(f"SET application_name = 'veilpix writer {reg.writer}'")

    def _check_state(self, db: Any) -> None:
        """The database against the newest fleet checkpoint this machine's key file recorded:
        a database restored from an older backup, or cut back, is refused."""
        keys = self._writer_keys()
        state = keys.state or {}
        fid = int(state.get("checkpoint") or 0)
        if state.get("log_id") != self.log_id or not fid:
            return
        row = db.execute(
            "SELECT signature FROM veilpix.checkpoints WHERE fid = %s", (fid,)
        ).fetchone()
        if row is None or hashlib.sha256(bytes(row[0])).hexdigest() != state.get("signature"):
            raise LogIntegrityError(
                f"the transfer log at {self.location} does not hold fleet checkpoint {fid} "
                f"(signed {state.get('ts')}), which this machine's key file recorded: the "
                "database was cut back or restored from an older copy; nothing was written",
                found="changed",
                hint="restore the newest backup of the database, then run veilpix audit verify",
            )

    def _spill_path(self) -> Path:
        """Where finishes the database could not take are set aside on close (this machine's
        own, beside its key file)."""
        return self.key_path.with_name(self.key_path.name + "-finishes")

    def _adopt_dead(self) -> None:
        """Close the chains of writers that stopped without closing (killed, crashed, the
        machine lost): their session lock is free and their chain has no final checkpoint.
        Each tail is checked first (links from the last checkpoint, MACs); one that does not
        check is left for verify to report. Done once, at the writer's first write."""
        chain = self._writer_chain()
        with self._lock:
            db = self._writer_db()
            rows = db.execute(
                "SELECT w.id, w.public_key FROM veilpix.writers w WHERE w.id <> %s"
                " AND EXISTS (SELECT 1 FROM veilpix.entries e WHERE e.writer = w.id)"
                " AND NOT EXISTS (SELECT 1 FROM veilpix.checkpoints c WHERE c.writer = w.id"
                " AND c.reason IN ('close', 'adopted'))",
                (chain.writer,),
            ).fetchall()
            for writer, public_key in rows:
                (free,) = db.execute(
                    "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_WRITER, writer)
                ).fetchone()
                if not free:
                    continue  # running
                try:
                    self._adopt(db, int(writer), bytes(public_key))
                except AuditLogError as exc:
                    _log.error("writer %s's chain was not closed: %s", writer, exc.message)
                finally:
                    db.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_WRITER, writer))

    def _adopt(self, db: Any, writer: int, public_key: bytes) -> None:
        import psycopg  # noqa: PLC0415 - a fleet log has it

        chain = self._writer_chain()
        keys = self._writer_keys()
        name = chain_id(self.log_id, writer)
        try:
            db.execute("BEGIN")
            # (in the checkpoints' order: of two writers that found it dead at once, the second
            # finds it closed here and leaves it)
            db.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_CHECKPOINTS,))
            if db.execute(
                "SELECT 1 FROM veilpix.checkpoints WHERE writer = %s AND reason IN"
                " ('close', 'adopted') LIMIT 1",
                (writer,),
            ).fetchone():
                db.execute("COMMIT")
                return
            last = db.execute(
                "SELECT fid, id, seq, hash, ts, reason, signer, fleet_prev, signature"
                " FROM veilpix.checkpoints WHERE writer = %s ORDER BY id DESC LIMIT 2",
                (writer,),
            ).fetchall()
            seq, prev, cp_id, cp_prev = 1, genesis(name), 0, genesis(name)
            if last:
                fid, cid, cseq, chash, cts, reason, signer, fprev, sig = last[0]
                before = (
                    hashlib.sha256(bytes(last[1][8])).digest() if len(last) > 1 else genesis(name)
                )
                message = checkpoint_message(
                    self.log_id,
                    fid,
                    bytes(fprev),
                    writer,
                    cid,
                    cseq,
                    bytes(chash),
                    cts,
                    reason,
                    before,
                    signer,
                )
                if signer != writer or not verify_signature(public_key, bytes(sig), message):
                    raise AuditLogError(f"its last checkpoint {cid} is not its own")
                seq, prev, cp_id, cp_prev = (
                    cseq + 1,
                    bytes(chash),
                    cid,
                    hashlib.sha256(bytes(sig)).digest(),
                )
            walker = Walker(seq, prev)
            head = None
            for row in db.execute(
                "SELECT seq, kind, record, ts, subject, body, prev, hash, mac FROM veilpix.entries"
                " WHERE writer = %s AND seq >= %s ORDER BY seq",
                (writer, seq),
            ):
                problem = walker.step(row) or mac_problem(row, keys, name)
                if problem is not None:
                    raise AuditLogError(problem.message)
                head = (int(row[0]), blob(row[7]))
            if head is None and last:
                head = (int(last[0][2]), bytes(last[0][3]))
            if head is not None:
                insert_checkpoint(
                    db,
                    fleet_id=self.log_id,
                    writer=writer,
                    cp_id=cp_id + 1,
                    head=head,
                    prev=cp_prev,
                    reason="adopted",
                    signer=chain.writer,
                    sign=chain.key.sign,
                    ts=now_text(self._clock()),
                )
            db.execute("COMMIT")
        except psycopg.Error as exc:
            self._rollback(db)
            raise describe(exc, self.url, f"close writer {writer}'s chain") from None
        except BaseException:
            self._rollback(db)
            raise

    # -- connections ---------------------------------------------------------------------------

    def _writer_db(self) -> Any:
        """The writer's connection, reconnected when it was lost (the server restarted, the
        network failed): the chain's lock is taken again and its head checked against the
        database; a chain another writer closed meanwhile (it took this one for dead) is left
        and a new writer registered."""
        self._check_open()
        if self._pid != os.getpid():  # forked: the parent's connection is the parent's
            self._forget_parent()
            self._db = None  # (not closed: that would end the parent's session)
            self._pool = None
            self._chain = None
        if self._chain is not None and self._db is not None:
            if not self._db.closed and not self._db.broken and not _hung_up(self._db):
                return self._db
            with suppress(Exception):
                self._db.close()
            self._db = None
        if self._db is None or self._db.closed or self._db.broken:
            self._db = None
            db = connect(self.url, name="veilpix writer")
        else:
            db = self._db  # connected, no writer yet
        try:
            if self._chain is None:
                self._register(db)
                self._db = db
                self._adopt_dead()
            else:
                self._rejoin(db)
        except BaseException:
            with suppress(Exception):
                db.close()
            self._db = None
            raise
        self._db = db
        return db

    def _rejoin(self, db: Any) -> None:
        import psycopg  # noqa: PLC0415 - a fleet log has it

        chain = self._writer_chain()
        try:
            db.execute("SET lock_timeout = '10s'")
            db.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_WRITER, chain.writer))
            db.execute("SET lock_timeout = 0")
            closed = db.execute(
                "SELECT 1 FROM veilpix.checkpoints WHERE writer = %s AND reason IN"
                " ('close', 'adopted') LIMIT 1",
                (chain.writer,),
            ).fetchone()
            row = db.execute(
                "SELECT seq, hash FROM veilpix.entries WHERE writer = %s ORDER BY seq DESC LIMIT 1",
                (chain.writer,),
            ).fetchone()
        except psycopg.Error as exc:
            raise describe(exc, self.url, "be reached again") from None
        if closed is not None:
            _log.warning(
                "writer %s's chain was closed by another writer while the database could not be "
                "reached; this process goes on as a new writer",
                chain.writer,
            )
            db.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_WRITER, chain.writer))
            self._register(db)
            return
        have = (0, genesis(chain.chain)) if row is None else (int(row[0]), bytes(row[1]))
        attempt, self._attempt = self._attempt, None
        if have == chain.head:
            return
        if attempt is not None and have == (attempt.seq, attempt.hash):
            chain.state = attempt  # the commit whose answer was lost did commit
            return
        if chain.durable[0] <= have[0] < chain.head[0] and self._durable_still(db, chain):
            self._resume(db, chain, have)
            return
        raise LogIntegrityError(
            f"writer {chain.writer}'s chain in the transfer log at {self.location} ends at entry "
            f"{have[0]}, not at entry {chain.head[0]} which this writer wrote: the database "
            "was restored or altered meanwhile; nothing was written",
            found="changed",
            hint="run veilpix audit verify --log URL; restart the writer once it is understood",
        )

    def _durable_still(self, db: Any, chain: FleetChain) -> bool:
        """The entry this writer's last durable commit ended with is in the database as
        written (what a crash of the server cannot take back)."""
        seq, digest = chain.durable
        if seq == 0:
            return True
        row = db.execute(
            "SELECT hash FROM veilpix.entries WHERE writer = %s AND seq = %s",
            (chain.writer, seq),
        ).fetchone()
        return row is not None and bytes(row[0]) == digest

    def _resume(self, db: Any, chain: FleetChain, have: tuple[int, bytes]) -> None:
        """The database's server crashed and lost this writer's newest commits, which did not
        wait for the disk (finishes; begins too with ``durability="os"``): go on from what it
        holds, and write those entries again, as they were, with the next transaction."""
        ts_row = db.execute(
            "SELECT ts FROM veilpix.entries WHERE writer = %s AND seq = %s", (chain.writer, have[0])
        ).fetchone()
        cp = db.execute(
            "SELECT id, seq, signature FROM veilpix.checkpoints WHERE writer = %s"
            " ORDER BY id DESC LIMIT 1",
            (chain.writer,),
        ).fetchone()
        start = genesis(chain.chain)
        state = _State(
            have[0],
            have[1],
            "" if ts_row is None else str(ts_row[0]),
            0 if cp is None else int(cp[0]),
            start if cp is None else hashlib.sha256(bytes(cp[2])).digest(),
            0 if cp is None else int(cp[1]),
        )
        lost = chain.resume(state)
        self._replay.extend(lost)
        _log.warning(
            "the transfer log's server lost %d of writer %s's newest entries in a crash "
            "(committed without waiting for the disk); they are written again",
            len(lost),
            chain.writer,
        )

    def _get_pool(self) -> Any:
        with self._pool_lock:
            if self._pool is None:
                from psycopg_pool import ConnectionPool  # noqa: PLC0415 - fleet only

                self._pool = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=4,
                    kwargs={
                        "autocommit": True,
                        "application_name": "veilpix reader",
                        "connect_timeout": 10,
                        "prepare_threshold": 2,
                    },
                    open=False,
                    timeout=15,
                    name="veilpix-readers",
                    # (a connection the server closed meanwhile, say on a restart, is
                    # replaced before it is handed out)
                    check=ConnectionPool.check_connection,
                )
                try:
                    self._pool.open(wait=True, timeout=15)
                except Exception as exc:  # noqa: BLE001 - PoolTimeout, OperationalError
                    self._pool = None
                    cause = exc.__cause__ or exc.__context__ or exc
                    raise describe(cause, self.url, "be reached") from None
            return self._pool

    @contextmanager
    def _read(self) -> Iterator[Any]:
        """A reader's connection from the pool."""
        import psycopg  # noqa: PLC0415 - a fleet log has it

        self._check_open()
        if self._pid != os.getpid():
            self._pool = None
        pool = self._get_pool()
        try:
            with pool.connection() as db:
                yield db
        except psycopg.Error as exc:
            raise describe(exc, self.url, "be read") from None
        except Exception as exc:
            if type(exc).__name__ == "PoolTimeout":
                raise describe(exc, self.url, "be reached") from None
            raise

    def _rollback(self, db: Any = None) -> None:
        db = db if db is not None else self._db
        if db is None:
            return
        try:
            db.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - the connection is gone: reconnect next time
            with suppress(Exception):
                db.close()

    # -- writing -------------------------------------------------------------------------------

    def _writer_chain(self) -> FleetChain:  # type: ignore[override]
        if self.readonly or self.keys is None:
            raise AuditLogError(f"the transfer log at {self.location} is open read-only")
        if self._chain is None:  # the first write: register (and close dead writers' chains)
            with self._lock:
                self._writer_db()
        assert self._chain is not None
        return self._chain

    def _sync(self) -> None:
        """Nothing: a durable commit returns once PostgreSQL has it on disk."""

    def erase(
        self,
        subject_ref: str,
        *,
        request_ref: str | None = None,
        by: str | None = None,
        via: str = "cli",
    ) -> Erasure:
        done = super().erase(subject_ref, request_ref=request_ref, by=by, via=via)
        if done.tombstone_seq is None:
            return done
        rows = self._fetch(
            "SELECT pos FROM veilpix.entries WHERE writer = %s AND seq = %s",
            (self._writer_chain().writer, done.tombstone_seq),
        )
        return replace(done, tombstone_seq=int(rows[0][0])) if rows else done

    def _flush_wal(self) -> bool:
        """Deleted rows stay in PostgreSQL's files until vacuumed and overwritten; not known
        to be overwritten (the subject's fields stay unreadable: their key is gone)."""
        return False

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[Any]:
        """A write transaction on the writer's connection. Durable by default (the commit
        returns once on disk); ``durable=False`` commits with ``synchronous_commit=off``."""
        import psycopg  # noqa: PLC0415 - a fleet log has it

        if self.keys is None or self.readonly:
            raise AuditLogError(f"the transfer log at {self.location} is open read-only")
        with self._lock:
            self._still_writable()
            db = self._writer_db()
            chain = self._writer_chain()
            carried: list[Any] = []
            replayed: list[Any] = []
            chain.begin()
            try:
                # (pipeline mode: the statements go out together and the transaction costs
                # one round trip, plus one for each read inside it)
                with _pipeline(db):
                    db.execute("BEGIN")
                    if not durable:
                        db.execute("SET LOCAL synchronous_commit = off")
                    carried = self._carried.write(db) if self._carried else []
                    replayed, self._replay = self._replay, []
                    for _w, _s, kind, record, ts, subject, body, *_ in replayed:
                        chain.append(db, kind, record, json.loads(body), subject, ts=ts)
                    yield db
                    self._attempt = chain._work
                    db.execute("COMMIT")
                self._attempt = None
                chain.committed(durable=durable)
            except psycopg.Error as exc:
                self._rollback(db)
                self._carried.put_back(carried)
                self._replay[:0] = replayed
                if getattr(exc.diag, "constraint_name", "") == "entries_one_finish":
                    # another writer finished a transfer this one began: the batch is redone
                    # op by op, each finish looked up, so that only that finish fails
                    chain.forget_begun()
                    raise Redo(describe(exc, self.url, "write")) from None
                raise describe(exc, self.url, "write") from None
            except BaseException:
                self._rollback(db)
                self._carried.put_back(carried)
                self._replay[:0] = replayed
                raise
            finally:
                chain.end()
            signed = chain.take_signed()
            # (the key file records a checkpoint once it is on disk: one committed without
            # waiting could be lost in a crash of the server, and the key file would then
            # refuse the database as cut back)
            if signed is not None and not durable:
                self._signed_later = signed
            elif durable and (signed or self._signed_later) is not None:
                self._save_state(signed or self._signed_later)
                self._signed_later = None
        self._wrote = True
        self._start_timer()

    def _run_batch(self, batch: list[Ticket], fsync: bool) -> None:
        import psycopg  # noqa: PLC0415 - a fleet log has it

        chain = self._writer_chain()
        durable = any(t.durable for t in batch)
        del fsync  # (a durable commit is on disk when it returns)
        with self._write(durable=durable) as db, chain.batch(db):
            for t in batch:
                mark = chain.mark()
                try:
                    t.result = t.op(db)
                except AuditLogError as exc:
                    chain.undo(mark)
                    t.error = exc
                except Exception as exc:
                    raise Redo(
                        describe(exc, self.url, "write") if isinstance(exc, psycopg.Error) else exc
                    ) from exc

    def _still_writable(self) -> None:
        if self._state_due is not None and not self._save_state(self._state_due[0]):
            raise AuditLogError(
                f"the key file {str(self.key_path)!r} cannot record the fleet log's newest "
                "checkpoint (moved away, replaced, or its folder not writable); nothing was sent",
                hint="put the key file back and check its folder is writable; writing resumes",
            )

    def _state_lock(self, locked: bool) -> AbstractContextManager[None]:
        """The machine's processes take turns recording checkpoints in the key file."""
        del locked  # (nothing else holds it here)
        return _key_lock(self.key_path)

    def _founded(self) -> str:
        return str(self._meta.created)

    def _subject_key(self, db: Any, subject_ref: str) -> tuple[str, bytes]:
        keys = self._writer_keys()
        tag = self.fingerprint(subject_ref.encode(), label="subject")
        sql = "SELECT kid, wrapped FROM veilpix.subject_keys WHERE tag = %s"
        row = db.execute(sql, (tag,)).fetchone()
        if row is None:
            kid = secrets.token_hex(16)
            key = secrets.token_bytes(32)
            wrapped = seal(keys.wrap_key, key, b"subject-key:" + kid.encode())
            db.execute(
                "INSERT INTO veilpix.subject_keys (kid, tag, wrapped, created)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (tag) DO NOTHING",
                (kid, tag, wrapped, now_text(self._clock())),
            )
            row = db.execute(sql, (tag,)).fetchone()  # ours, or another writer's
        kid = str(row[0])
        return kid, open_sealed(keys.wrap_key, bytes(row[1]), b"subject-key:" + kid.encode())

    # -- reading -------------------------------------------------------------------------------

    _queries = FLEET

    def _fetch(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._read() as db:
            return list(db.execute(sql, args).fetchall())

    def facts(self, after: int = 0, limit: int = 50_000) -> list[tuple[Any, ...]]:
        self._commits.caught_up()
        return [tuple(r[:7]) for r in self._fetch(SELECT_FACTS, (after, limit))]

    # Writers commit in no one order: an entry may become visible after entries with a
    # larger pos. facts_after reads each writer's chain on from where it was read instead.
    late_entries = True

    def facts_after(
        self, cursor: Any = None, limit: int = 50_000
    ) -> tuple[list[tuple[Any, ...]], Any]:
        """:meth:`facts` after ``cursor``: {writer: the last seq read of its chain}."""
        self._commits.caught_up()
        read: dict[int, int] = dict(cursor or {})
        writers = sorted(read)
        rows = self._fetch(SELECT_FACTS_AFTER, (writers, [read[w] for w in writers], limit, limit))
        for r in rows:
            read[int(r[7])] = max(read.get(int(r[7]), 0), int(r[8]))
        return [tuple(r[:7]) for r in rows], read

    def extent(self) -> tuple[int, int]:
        self._commits.caught_up()
        row = self._fetch("SELECT min(pos), max(pos) FROM veilpix.entries")[0]
        return int(row[0] or 0), int(row[1] or 0)

    def writers(self) -> list[dict[str, Any]]:
        """The registered writers: number, name (host:pid), when, how far each chain got."""
        rows = self._fetch(
            "SELECT w.id, w.name, w.registered, (SELECT max(seq) FROM veilpix.entries e"
            " WHERE e.writer = w.id), (SELECT reason FROM veilpix.checkpoints c WHERE"
            " c.writer = w.id ORDER BY c.id DESC LIMIT 1) FROM veilpix.writers w ORDER BY w.id"
        )
        return [
            {
                "writer": r[0],
                "name": r[1],
                "registered": r[2],
                "last_seq": r[3],
                "last_checkpoint": r[4],
            }
            for r in rows
        ]

    def verify(self, public_key: bytes | None = None, *, expect: str | None = None) -> VerifyResult:
        """Check every writer's chain, the registry and the fleet's line of checkpoints, in
        one read-only snapshot (writers may go on meanwhile); see
        :mod:`veilpix.audit.fleet._verify`."""
        self._commits.caught_up()
        with self._read() as db, db.transaction():
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            result = verify_fleet(
                db, where=self.location, public_key=public_key, expect=expect, keys=self.keys
            )
        if self._key_problem is not None:
            note = Problem("key-file", None, self._key_problem)
            result = replace(result, problems=(note, *result.problems))
        return result

    # -- closing -------------------------------------------------------------------------------

    def _sign_close(self) -> None:
        """The chain's final checkpoint (nobody appends to it after), signed on close."""
        with self._write() as db:
            self._writer_chain().checkpoint(db, "close", only_if_unsigned=False)

    def _release(self, here: bool) -> None:
        """Let the writer's connection (and so its chain's lock) and the pool go; after a
        fork they are the parent's, not to be closed from here."""
        for handle in (self._db, self._pool):
            if handle is not None and here:
                with suppress(Exception):
                    handle.close()
        self._db = self._pool = None

    def __repr__(self) -> str:
        return f"FleetLog({self.location!r}, {'readonly' if self.readonly else 'writable'})"


def _hung_up(db: Any) -> bool:
    """Whether the server closed the idle connection ``db`` (restarted, or ended the
    session): between transactions nothing is due from the server, so a socket with
    something to read has been hung up on. One system call, no round trip."""
    try:
        readable, _, _ = select.select([db.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _need_driver() -> None:
    """AuditLogError, saying how to install them, when psycopg or its pool is missing."""
    try:
        import psycopg  # noqa: F401, PLC0415 - only a fleet log needs the driver
        import psycopg_pool  # noqa: F401, PLC0415
    except ImportError:
        raise AuditLogError(
            "a transfer log on PostgreSQL needs the psycopg driver and its pool",
            hint=f"install them: {install_command('postgres')}",
        ) from None


@contextmanager
def _pipeline(db: Any) -> Iterator[None]:
    """``db``'s pipeline mode for the block. When the block fails, the pipeline's own error
    on leaving (the aborted rest of the batch) gives way to the block's."""
    pipeline = db.pipeline()
    pipeline.__enter__()
    try:
        yield
    except BaseException as exc:
        with suppress(Exception):
            pipeline.__exit__(type(exc), exc, exc.__traceback__)
        raise
    pipeline.__exit__(None, None, None)


@contextmanager
def _key_lock(key_path: Path) -> Iterator[None]:
    """The machine's processes take turns recording checkpoints in the key file."""
    fd = os.open(
        key_path.with_name(key_path.name + "-lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
