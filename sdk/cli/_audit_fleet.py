"""``veilpix audit init`` (create a log and its key file), ``veilpix audit migrate`` (a file
log into a fleet log on PostgreSQL) and ``veilpix audit grants`` (the SQL that gives a
fleet's database roles what each may do)."""

from __future__ import annotations

import argparse
import getpass
import re
import sys

from veilpix._config import is_log_url
from veilpix._errors import ConfigError
from veilpix.cli._audit_review import dump
from veilpix.cli._exit import EXIT_OK
from veilpix.cli._term import Progress, Term, plural, styled

__all__ = ["grants", "grants_sql", "init", "migrate"]

_ROLE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")


def migrate(args: argparse.Namespace) -> int:
    from pathlib import Path  # noqa: PLC0415 - (kept with the command that needs it)

    from veilpix.audit.fleet._migrate import migrate as run  # noqa: PLC0415 - needs psycopg

    if not is_log_url(args.to):
        raise ConfigError(
            f"--to must be a PostgreSQL URL (postgresql://USER@HOST:PORT/DATABASE), not {args.to!r}"
        )
    source = Path(args.source).expanduser()
    if not source.is_file():
        raise ConfigError(f"there is no log file at {args.source!r}", hint="check --from")
    with Progress(0, "migrating", enabled=not args.json) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.active = bar.active or (not args.json and total > 0 and sys.stderr.isatty())
            bar.advance(done - bar.done)

        done = run(
            source,
            args.to,
            source_key=Path(args.key).expanduser() if args.key else None,
            target_key=Path(args.to_key).expanduser() if args.to_key else None,
            by=f"{getpass.getuser()} (veilpix audit migrate)",
            progress=progress,
        )
    if args.json:
        dump(done.to_dict())
        return EXIT_OK
    con = Term()
    con.print(styled("migrated", "bold", "green"), f" {done.source} -> {done.target}")
    con.print(
        f"  carried  {plural(done.entries, 'entry', 'entries')} ({plural(done.records, 'transfer')}), "
        f"{plural(done.subjects, 'subject key')}, as writer {done.writer}'s chain"
    )
    if done.skipped_prunes or done.skipped_finishes:
        con.print(
            f"  left     {plural(done.skipped_prunes, 'prune bridge')} and "
            f"{plural(done.skipped_finishes, 'finish', 'finishes')} of transfers pruned before "
            "(named in the migration's signed entry)"
        )
    con.print(f"  from     log {done.source_log}, verified at {done.source_head}")
    con.print(f"  fleet    {done.fleet_id}, head {done.fleet_head}")
    con.print(
        f"  key file {done.key_path}: copy it (mode 0600) to every machine that writes or "
        "erases; it holds the file log's fingerprint and wrap keys"
    )
    if not done.verified:
        con.print(styled("the fleet log does not verify: run veilpix audit verify", "red"))
        return 1
    return EXIT_OK


def init(args: argparse.Namespace) -> int:
    """Create the log (a file, or a fleet's tables in PostgreSQL) and its key file."""
    from veilpix.audit._keys import key_id  # noqa: PLC0415 - (with the command)
    from veilpix.audit._log import AuditLog  # noqa: PLC0415
    from veilpix.cli._options import log_location  # noqa: PLC0415

    where, key = AuditLog.locate(args.config, path=log_location(args.log), key_path=args.key)
    existed = key.exists()
    with AuditLog.from_config(
        args.config, path=log_location(args.log), key_path=args.key, create=True
    ) as log:
        done = {
            "log": log.location,
            "log_id": log.log_id,
            "key_file": str(log.key_path),
            "key_id": key_id(log.public_key),
            "key_file_created": not existed,
            "fleet": isinstance(where, str),
        }
    if args.json:
        dump(done)
        return EXIT_OK
    con = Term()
    con.print(styled("ready", "bold", "green"), f" {done['log']} (log {done['log_id']})")
    con.print(
        f"  key file {done['key_file']} ({'created' if done['key_file_created'] else 'found'}), "
        f"signing key {done['key_id']}"
    )
    if done["fleet"]:
        con.print(
            "  next: veilpix audit grants prints the roles' SQL; copy the key file (mode 0600) "
            "to every machine that writes or erases"
        )
    return EXIT_OK


def grants_sql(writer: str, reviewer: str, admin: str | None) -> str:
    """The GRANT statements for a fleet's roles: writers insert (and read what appending
    needs), reviewers read, an admin also deletes (erasure, retention)."""
    for role in (writer, reviewer, admin):
        if role is not None and not _ROLE.fullmatch(role):
            raise ConfigError(f"{role!r} is not a plain PostgreSQL role name")
    tables = "veilpix.writers, veilpix.entries, veilpix.checkpoints, veilpix.subject_keys"
    lines = [
        "-- veilpix fleet log: who may do what. Run as the role that created the log (the",
        '-- owner of schema veilpix), e.g. psql "$URL" -f grants.sql',
        f"GRANT USAGE ON SCHEMA veilpix TO {writer};",
        f"GRANT SELECT ON veilpix.meta TO {writer};",
        "-- writers: append only (no UPDATE, no DELETE: a writer cannot change what is written)",
        f"GRANT SELECT, INSERT ON {tables} TO {writer};",
        "-- reviewers: read, verify, export, the console (read-only)",
        f"GRANT USAGE ON SCHEMA veilpix TO {reviewer};",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA veilpix TO {reviewer};",
    ]
    if admin is not None:
        lines += [
            "-- the compliance admin: erase subjects, prune by retention (needs the key file too)",
            f"GRANT USAGE ON SCHEMA veilpix TO {admin};",
            f"GRANT SELECT ON veilpix.meta TO {admin};",
            f"GRANT SELECT, INSERT ON {tables} TO {admin};",
            f"GRANT DELETE ON veilpix.entries, veilpix.subject_keys TO {admin};",
        ]
    return "\n".join(lines) + "\n"


def grants(args: argparse.Namespace) -> int:
    sys.stdout.write(grants_sql(args.writer, args.reviewer, args.admin))
    return EXIT_OK
