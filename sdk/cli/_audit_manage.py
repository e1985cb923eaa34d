"""``veilpix audit`` commands that write: files (export, report, key) or the log itself
(erase, prune, checkpoint, restart, resolve; these open it for writing and need its key
file). Exports and registers describe personal data: they are written 0600, and leave the
fields linked to a data subject sealed unless asked.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from veilpix import __version__
from veilpix._config import load_config, parse_age
from veilpix._errors import ConfigError
from veilpix.audit._chain import now_text
from veilpix.audit._entry import login_name
from veilpix.audit._export import export
from veilpix.audit._keys import key_id, public_key_pem
from veilpix.audit._log import AuditLog
from veilpix.audit._records import TransferRecord, sealed_view
from veilpix.audit._register import render_report
from veilpix.audit._restart import restart_log
from veilpix.cli._audit_review import (
    EXIT_PROBLEM,
    EXIT_UNSIGNED,
    dump,
    filter_args,
    open_log,
)
from veilpix.cli._exit import EXIT_OK
from veilpix.cli._options import log_location
from veilpix.cli._term import Progress, Term, plural, styled, visible

__all__ = [
    "checkpoint",
    "erase",
    "export_records",
    "key",
    "prune",
    "report",
    "resolve",
    "restart",
]


def _without_subjects(records: Iterable[TransferRecord]) -> Iterator[TransferRecord]:
    """Records with their subject-linked fields left sealed: exports travel (to SIEMs,
    spreadsheets, auditors) and should not carry who the data was about unless asked."""
    return map(sealed_view, records)


def _private_file(path: str) -> TextIO:
    """Open ``path`` for writing as 0600: exports and registers describe personal data."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its mode on O_TRUNC
    except OSError as exc:
        raise ConfigError(
            f"cannot write {path!r}: {exc.strerror}", hint="choose a writable place with -o"
        ) from exc
    return open(fd, "w", encoding="utf-8", newline="")


def operator() -> str:
    """Who runs this command, as the log's review entries name them."""
    return f"{login_name()} (veilpix audit)"


def _confirm(question: str, args: argparse.Namespace) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise ConfigError(
            f"{question} -- refusing to go ahead unasked",
            hint="nobody can be asked here (no terminal): add --yes to confirm",
        )
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


# -- commands -----------------------------------------------------------------------------------


def _progress_records(
    log: AuditLog, records: Iterator[TransferRecord], args: argparse.Namespace
) -> Iterator[TransferRecord]:
    """Wrap an export's records in a progress indicator on stderr when it is a terminal."""
    if args.json or not sys.stderr.isatty():
        yield from records
        return
    with Progress(log.counts()["records"], "exporting") as bar:
        for rec in records:
            yield rec
            bar.advance()


def export_records(args: argparse.Namespace) -> int:
    with open_log(args) as log:
        if args.include_subjects and log.keys is None:
            raise ConfigError(
                "--include-subjects needs the log's key file to open subject-linked fields",
                hint=f"none at {str(log.key_path)!r}: pass --key FILE",
            )
        records = _progress_records(log, log.records(**filter_args(args)), args)
        if not args.include_subjects:
            records = _without_subjects(records)
        if args.output:
            with _private_file(args.output) as out:
                n = export(records, args.format, out, product_version=__version__)
        else:
            n = export(records, args.format, sys.stdout, product_version=__version__)
    if args.output:
        if args.json:
            dump({"output": args.output, "format": args.format, "records": n})
        else:
            Term(sys.stderr).print(
                f"wrote {plural(n, 'transfer')} to ", args.output, f" ({args.format})"
            )
    return EXIT_OK


def report(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with open_log(args) as log:
        result = log.verify()
        records = list(_without_subjects(log.records(**filter_args(args))))
        generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        page = render_report(
            records,
            result,
            log_path=log.location,
            generated=generated,
            title=args.title,
            register=config.register,
            log_retention=config.log.retention,
        )
    with _private_file(args.output) as out:
        out.write(page)
    code = EXIT_OK if result.ok else EXIT_UNSIGNED if result.intact else EXIT_PROBLEM
    if args.json:
        dump(
            {
                "output": args.output,
                "records": len(records),
                "verified": result.ok,
                "intact": result.intact,
            }
        )
    else:
        state = "verified" if result.ok else "unsigned tail" if result.intact else "NOT verified"
        Term(sys.stderr).print(
            "wrote ", args.output, f": {plural(len(records), 'transfer')}, integrity {state}"
        )
    return code


def erase(args: argparse.Namespace) -> int:
    with open_log(args, write=True) as log:
        n = sum(1 for _ in log.records(subject=args.subject))
        if n and not _confirm(
            f"erase the subject-linked fields of {plural(n, 'transfer')} for this subject?", args
        ):
            print("nothing erased", file=sys.stderr)
            return EXIT_PROBLEM
        done = log.erase(args.subject, request_ref=args.request, by=operator())
    if args.json:
        dump(
            {
                "records": done.records,
                "tombstone_seq": done.tombstone_seq,
                "physically_overwritten": done.physically_overwritten,
            }
        )
    elif done.records == 0:
        print("no transfers linked to this subject (never logged, or already erased)")
    else:
        print(
            f"erased the subject-linked fields of {plural(done.records, 'transfer')}; "
            f"tombstone at entry {done.tombstone_seq}"
        )
        if not done.physically_overwritten and log.storage == "postgresql":
            print(
                "note: PostgreSQL keeps a deleted row's bytes until the table is vacuumed "
                "(VACUUM veilpix.subject_keys, as its owner); they stay unreadable without the "
                "key file, which wrapped the key",
                file=sys.stderr,
            )
        elif not done.physically_overwritten:
            print(
                "note: another process still reads the log; the key's old bytes are "
                "overwritten when it closes",
                file=sys.stderr,
            )
    return EXIT_OK


def prune(args: argparse.Namespace) -> int:
    older_than = args.older_than or load_config(args.config).log.retention
    if older_than is None:
        raise ConfigError(
            "how old must records be to go?",
            hint="give --older-than 180d, or set [log] retention in veilpix.toml",
        )
    args.older_than = older_than
    age = parse_age(older_than)
    if args.dry_run:
        cutoff = now_text(datetime.now(UTC) - age)
        with open_log(args) as log:
            n = sum(1 for _ in log.records(until=cutoff))
        if args.json:
            dump({"dry_run": True, "records": n, "cutoff": cutoff})
        else:
            print(f"would remove {plural(n, 'transfer')} begun before {cutoff}")
        return EXIT_OK
    with open_log(args, write=True) as log:
        if not _confirm(f"remove every entry older than {args.older_than}?", args):
            print("nothing removed", file=sys.stderr)
            return EXIT_PROBLEM
        done = log.prune(age)
    if args.json:
        dump(
            {
                "entries": done.entries,
                "records": done.records,
                "cutoff": done.cutoff,
                "through_seq": done.through_seq,
                "prune_seq": done.prune_seq,
            }
        )
    else:
        print(
            f"removed {plural(done.records, 'transfer')} "
            f"({plural(done.entries, 'entry', 'entries')}) begun before "
            f"{done.cutoff}" + (f"; bridged at entry {done.prune_seq}" if done.prune_seq else "")
        )
    return EXIT_OK


def key(args: argparse.Namespace) -> int:
    with open_log(args) as log:
        pem, kid = public_key_pem(log.public_key), key_id(log.public_key)
    if args.output:
        try:
            Path(args.output).write_text(pem, encoding="ascii")
        except OSError as exc:
            raise ConfigError(f"cannot write {args.output!r}: {exc.strerror}", hint="") from exc
    if args.json:
        dump({"key_id": kid, "pem": pem, "output": args.output})
    elif args.output:
        Term(sys.stderr).print(f"wrote the public key {kid} to ", args.output)
    else:
        sys.stdout.write(pem)
    return EXIT_OK


def checkpoint(args: argparse.Namespace) -> int:
    with open_log(args, write=True) as log:
        cp = log.checkpoint("manual")
    if args.json:
        dump({"checkpoint": cp})
    else:
        print(
            "nothing to sign: the head is already signed"
            if cp is None
            else f"signed checkpoint {cp}"
        )
    return EXIT_OK


def restart(args: argparse.Namespace) -> int:
    # the log and key file every other command would use (flags, environment, config)
    path, key = AuditLog.locate(args.config, path=log_location(args.log), key_path=args.key)
    if isinstance(path, str):
        raise ConfigError(
            "veilpix audit restart starts a file log over; a fleet log on PostgreSQL is never "
            "started over: each writer's chain is its own",
            hint="restore the database from a backup, or point the fleet at a new database",
        )
    done = restart_log(path, reason=args.reason, key_path=key)
    if args.json:
        dump(done.to_dict())
        return EXIT_OK
    con = Term()
    con.print(styled("restarted", "bold", "yellow"), f" {done.path}: the old log was {done.found}")
    con.print(f"  found:    {done.detail}")
    if done.moved_to:
        con.print(f"  old file: moved to {done.moved_to} (verify it with the same key file)")
    con.print(
        f"  new log:  {done.log_id} (was {done.previous_log}); its first entry is the "
        "signed restart statement"
    )
    return EXIT_OK


def resolve(args: argparse.Namespace) -> int:
    with open_log(args, write=True) as log:
        rec = log.resolve(
            args.id, outcome=args.outcome, status=args.status, reason=args.reason, by=operator()
        )
    if args.json:
        dump({"id": rec.id, "outcome": args.outcome})
    else:
        print(f"transfer {visible(rec.id)}: outcome recorded as {args.outcome}")
    return EXIT_OK
