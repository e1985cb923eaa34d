"""Moving a file log into a fleet log: ``veilpix audit migrate --from audit.db --to URL``.

The file log is verified first (with its key file) and refused unless intact. The fleet is
founded with the file log's fingerprint and wrap keys (a new signing key of its own), so
every keyed fingerprint, subject key and sealed field written so far stays valid: a photo
or a subject is found and erased in the fleet as it was in the file. The entries are then
appended, in their order and with their own times and bodies, to the chain of one writer
(the migration), inside one transaction: a migration that fails leaves no entry behind and
can be run again. Its last entry is a signed ``review`` entry naming the file log, its
verified head and what was carried over; a prune bridge of the file log is not carried
(its cut is named there instead), nor the finishes of transfers it pruned away.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from veilpix._atomic import write_file
from veilpix._errors import AuditLogError, ConfigError
from veilpix.audit._keys import KeyFile
from veilpix.audit._log import AuditLog
from veilpix.audit.fleet._log import FleetLog
from veilpix.audit.fleet._schema import connect, read_meta
from veilpix.audit.fleet._url import default_key_path, redact

__all__ = ["Migrated", "migrate"]


@dataclass(frozen=True)
class Migrated:
    """What :func:`migrate` did."""

    source: str
    source_log: str
    source_head: str | None
    target: str
    fleet_id: str
    key_path: str
    writer: int
    entries: int
    records: int
    subjects: int
    skipped_prunes: int
    skipped_finishes: int
    fleet_head: str | None
    verified: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def migrate(
    source: Path,
    url: str,
    *,
    source_key: Path | None = None,
    target_key: Path | None = None,
    by: str = "veilpix audit migrate",
    progress: Callable[[int, int], None] | None = None,
) -> Migrated:
    """Move the file log at ``source`` into a new fleet log at ``url`` (see the module).
    ``progress(done, total)`` is called as entries are copied."""
    target_key = target_key or default_key_path(url)
    holders = _open_elsewhere(source)
    if holders:
        raise ConfigError(
            f"the log {str(source)!r} is open in process {', '.join(map(str, holders[:5]))}: "
            "what its writers add after the move would stay behind in the file",
            hint="stop the doors that write it (apps, gateways), then migrate; point them at "
            "the fleet's URL afterwards",
        )
    with AuditLog(source, key_path=source_key, readonly=True) as src, _snapshot(src):
        if src.keys is None:
            raise ConfigError(
                f"migrating needs the key file of {str(source)!r} (its fingerprints and subject "
                "keys carry over)",
                hint="pass --key FILE with the log's key file",
            )
        checked = src.verify()
        if not checked.intact:
            first = checked.first_problem
            raise AuditLogError(
                f"the log {str(source)!r} does not verify, so it is not migrated: "
                f"{first.message if first else '?'}",
                hint="run veilpix audit verify on it; migrate an intact log (a backup, say)",
            )
        keys = src.keys
        _fleet_keys(url, target_key, keys)
        with FleetLog(url, key_path=target_key, checkpoint_every=src.checkpoint_every) as fleet:
            copied = _copy(src, fleet, checked.head, by, progress)
            writer = fleet._writer_chain().writer
        with FleetLog(url, key_path=target_key, readonly=True) as ro:
            after = ro.verify()
    return Migrated(
        source=str(source),
        source_log=src.log_id,
        source_head=checked.head,
        target=redact(url),
        fleet_id=after.log_id,
        key_path=str(target_key),
        writer=writer,
        entries=copied["entries"],
        records=copied["records"],
        subjects=copied["subjects"],
        skipped_prunes=copied["prunes"],
        skipped_finishes=copied["orphans"],
        fleet_head=after.head,
        verified=after.intact,
    )


def _open_elsewhere(path: Path) -> list[int]:
    """The other processes that have the log file (or its WAL) open, as far as this system
    shows them (Linux: /proc, the processes this user may look into; elsewhere: none)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    names = {os.path.realpath(path), os.path.realpath(str(path) + "-wal")}
    found = []
    for pid in proc.iterdir():
        if not pid.name.isdigit() or int(pid.name) == os.getpid():
            continue
        with suppress(OSError):
            for fd in (pid / "fd").iterdir():
                with suppress(OSError):
                    if os.readlink(fd) in names:
                        found.append(int(pid.name))
                        break
    return sorted(found)


@contextmanager
def _snapshot(src: AuditLog) -> Iterator[None]:
    """One read transaction on the file log for the verification and the copy: what is
    copied is what was verified, whatever its writers do meanwhile (they are checked for
    before the fleet's transaction commits)."""
    db = src._conn()
    db.execute("BEGIN")
    try:
        db.execute("SELECT count(*) FROM entries").fetchone()  # (the snapshot starts here)
        yield
    finally:
        with suppress(sqlite3.Error):
            db.execute("COMMIT")


def _unchanged(src: AuditLog, last: int | None, total: int) -> None:
    """Raise (the fleet's transaction then rolls back) when the log file was written since
    the snapshot: its writers were running, and what they wrote would not be moved."""
    fresh = sqlite3.connect(f"file:{src.path}?mode=ro", uri=True, timeout=30)
    try:
        now = fresh.execute("SELECT max(seq), count(*) FROM entries").fetchone()
    finally:
        fresh.close()
    if (now[0], now[1]) != (last, total):
        raise ConfigError(
            f"the log {src.location!r} was written during the migration (its writers are "
            "running): nothing was moved",
            hint="stop the doors that write it (apps, gateways), then migrate again",
        )


def _fleet_keys(url: str, key_path: Path, keys: KeyFile) -> None:
    """The fleet's key file, made from the file log's keys unless there is one already that
    holds them (a migration run again); the database must hold no fleet, or an empty one
    founded with that key file."""
    db = connect(url, name="veilpix migrate")
    try:
        meta = read_meta(db, url)
        entries = 0
        if meta is not None:
            (entries,) = db.execute("SELECT count(*) FROM veilpix.entries").fetchone()
    finally:
        db.close()
    if key_path.exists():
        have = KeyFile.read(key_path)
        if (have.hmac_key, have.wrap_key) != (keys.hmac_key, keys.wrap_key):
            raise ConfigError(
                f"{str(key_path)!r} already holds another fleet's keys; migrating into a fleet "
                "founded with other keys would leave the moved records' fingerprints and "
                "subjects unmatched",
                hint="migrate into a new database (the fleet takes over the file log's keys), "
                "or pass --to-key with a path where no key file is yet",
            )
        if meta is not None and meta.fleet_id != have.log_id:
            raise ConfigError(
                f"{str(key_path)!r} is not the key file of the fleet at {redact(url)}"
            )
    elif meta is not None:
        raise ConfigError(
            f"the database at {redact(url)} holds a fleet log already; migrate into a new one",
            hint="create an empty database (createdb) and pass its URL to --to",
        )
    else:
        fleet = KeyFile(
            log_id=str(uuid.uuid4()),
            hmac_key=keys.hmac_key,
            wrap_key=keys.wrap_key,
            signing_seed=KeyFile.generate("x").signing_seed,
        )
        key_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_file(key_path, fleet.to_json(), replace=False)
    if entries:
        raise ConfigError(
            f"the fleet log at {redact(url)} holds {entries} entries already; migrate into a "
            "new database",
            hint="create an empty database (createdb) and pass its URL to --to",
        )


def _copy(
    src: AuditLog,
    fleet: FleetLog,
    head: str | None,
    by: str,
    progress: Callable[[int, int], None] | None,
) -> dict[str, int]:
    db_src = src._conn()
    total = int(db_src.execute("SELECT count(*) FROM entries").fetchone()[0])
    newest = db_src.execute("SELECT max(seq) FROM entries").fetchone()[0]
    begun = {
        r[0] for r in db_src.execute("SELECT record FROM entries WHERE kind='begin'").fetchall()
    }
    subjects = db_src.execute("SELECT kid, tag, wrapped, created FROM subject_keys").fetchall()
    chain = fleet._writer_chain()
    done = entries = records = prunes = orphans = 0
    first = last = None
    with fleet._write() as db, chain.batch(db):
        (already,) = db.execute("SELECT count(*) FROM veilpix.entries").fetchone()
        if already:
            raise ConfigError(f"the fleet log at {fleet.location} is not empty any more")
        with db.cursor() as cur:
            cur.executemany(
                "INSERT INTO veilpix.subject_keys (kid, tag, wrapped, created)"
                " VALUES (%s, %s, %s, %s)",
                subjects,
            )
        rows = db_src.execute(
            "SELECT seq, kind, record, ts, subject, body FROM entries ORDER BY seq"
        )
        for seq, kind, record, ts, subject, body in rows:
            done += 1
            if progress is not None and done % 1000 == 0:
                progress(done, total)
            if kind == "prune":
                prunes += 1
                continue
            if kind == "finish" and record not in begun:
                orphans += 1  # its transfer was pruned away before the move
                continue
            chain.append(db, kind, record, json.loads(body), subject, ts=ts)
            entries += 1
            records += kind == "begin"
            first = seq if first is None else first
            last = seq
        facts = {
            "from_log": src.log_id,
            "from": src.location,
            "verified_head": head,
            "entries": entries,
            "records": records,
            "first_seq": first,
            "last_seq": last,
            "subjects": len(subjects),
            "prunes_not_carried": prunes,
            "finishes_of_pruned_transfers": orphans,
        }
        chain.review(db, "migrate", by, "cli", facts)
        chain.checkpoint(db, "migrate")
        _unchanged(src, newest, total)
    if progress is not None:
        progress(total, total)
    return {
        "entries": entries,
        "records": records,
        "subjects": len(subjects),
        "prunes": prunes,
        "orphans": orphans,
    }
