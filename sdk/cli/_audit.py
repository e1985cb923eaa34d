"""``veilpix audit``: review, verify, erase, prune and export the transfer log.

Review commands open the log read-only and never change it; ``erase``, ``prune``,
``checkpoint``, ``resolve`` and ``restart`` open it for writing (and need its key file). Exit codes: 0 fine, 1 verify found
tampering (or a confirmation was declined), 2 usage, configuration or log error, 3 verify found
no tampering but entries after the last signed checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from veilpix._errors import AuditLogError, ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from veilpix.audit._log import AuditLog, TransferRecord
    from veilpix.audit._verify import VerifyResult

__all__ = ["add_audit_parser", "run_audit"]

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_UNSIGNED = 0, 1, 2, 3

_EPILOG = """\
examples:
  veilpix audit verify                       check the chain and every signature
  veilpix audit verify --public-key pub.pem  ... against a key kept elsewhere
  veilpix audit verify --json | jq -r .head > head.txt    save today's head, and later:
  veilpix audit verify --expect head.txt     ... fail if the log was cut back since
  veilpix audit list --since 7d --vendor openai
  veilpix audit show 01a2173f                one transfer in full (id prefix)
  veilpix audit stats --since 2026-01-01     calls, images, bytes, faces per vendor/country/month
  veilpix audit export --format ocsf -o transfers.ocsf.jsonl
  veilpix audit report -o register.html     HTML transfer register (GDPR Art. 30 style)
  veilpix audit erase --subject customer-4711 --request DSR-2026-118
  veilpix audit prune --older-than 180d
  veilpix audit resolve 7f3a9c2e --outcome failed --reason "vendor shows no request"
  veilpix audit restart --reason "disk failed, no backup"   start over, on the record

the log: --log FILE, else $VEILPIX_LOG, else [log] path in --config / $VEILPIX_CONFIG,
else audit.db in the veilpix user data folder. Its key file: --key, $VEILPIX_LOG_KEY,
[log] key, else beside the log (audit.db.key).
exit codes: 0 fine, 1 problem found, 2 usage error, 3 intact but with an unsigned tail.
"""


def _when(text: str) -> str:
    """An ISO date/time (UTC unless it says otherwise) or an age such as 7d, as stored text."""
    from veilpix._config import parse_age
    from veilpix.audit._log import _now_text

    try:
        if text and text[-1].lower() in "hdwy" and text[:-1].strip().isdigit():
            return _now_text(datetime.now(UTC) - parse_age(text))
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, ConfigError):
        raise argparse.ArgumentTypeError(
            f"expected a date (2026-11-01), a time (2026-11-01T09:30) or an age (7d), got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _now_text(when)


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("the limit cannot be negative")
    return value


def add_audit_parser(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log",
        metavar="FILE",
        help="the transfer log (default: $VEILPIX_LOG, else [log] path in the config, else the "
        "user data folder)",
    )
    common.add_argument(
        "--config", metavar="TOML", help="veilpix.toml to read (default: $VEILPIX_CONFIG)"
    )
    common.add_argument(
        "--key",
        metavar="FILE",
        help="the log's key file, when kept apart from the log (default: $VEILPIX_LOG_KEY, "
        "[log] key, else the log's path + .key)",
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of tables")
    filters = argparse.ArgumentParser(add_help=False)
    g = filters.add_argument_group("filters")
    g.add_argument(
        "--since", type=_when, metavar="WHEN", help="begun at or after (date, time or age like 7d)"
    )
    g.add_argument("--until", type=_when, metavar="WHEN", help="begun before (date, time or age)")
    g.add_argument("--vendor", help="vendor name, e.g. openai")
    g.add_argument("--host", help="destination host, e.g. api.openai.com")
    g.add_argument("--country", metavar="CC", help="destination country (ISO code, e.g. US)")
    g.add_argument("--outcome", choices=["sent", "blocked", "failed", "unknown"])
    g.add_argument("--app", help="the app that made the call")
    g.add_argument("--subject", metavar="ID", help="data subject reference (needs the key file)")
    g.add_argument(
        "--image",
        metavar="FILE",
        help="only transfers that sent this image, before or after veilpix",
    )

    audit = sub.add_parser(
        "audit",
        help="review, verify, export, erase and prune the transfer log",
        description="The transfer log records every call veilpix lets out (and every call it "
        "blocks): who, what, where, why, outcome. It is a hash chain with Ed25519-signed "
        "checkpoints, holds facts and keyed fingerprints only, and is never changed by the "
        "review commands.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    audit.set_defaults(audit_parser=audit)
    asub = audit.add_subparsers(dest="audit_command", metavar="ACTION")

    p = asub.add_parser(
        "verify", parents=[common], help="check the hash chain and every checkpoint signature",
        description="Recompute every entry hash and link, check every checkpoint signature and "
        "that each still matches what it signed. Reports the first broken link, gap, forged "
        "checkpoint, cut tail or unsigned tail. Needs only the public key; with the log's key "
        "file at hand (--key, or beside the log) it also checks every entry's MAC, which covers "
        "the entries no checkpoint signs yet, and that the log still holds the newest "
        "checkpoint the key file recorded.",
    )  # fmt: skip
    p.add_argument(
        "--public-key", metavar="PEM",
        help="the log's public key kept elsewhere (from 'veilpix audit key'); default: the key "
        "stored in the log itself, which proves integrity only against someone without it",
    )  # fmt: skip
    p.add_argument(
        "--expect", metavar="HEAD",
        help="a head saved from an earlier verify (the 'head' line, or a file holding it): "
        "fail if the log was cut back past it since",
    )  # fmt: skip

    p = asub.add_parser("list", parents=[common, filters], help="list transfers, newest first")
    p.add_argument(
        "--limit", type=_limit, default=50, metavar="N", help="at most N (default 50; 0 = all)"
    )
    p = asub.add_parser("show", parents=[common], help="one transfer in full")
    p.add_argument("id", metavar="ID", help="record id (a unique prefix of 8+ characters will do)")
    p.add_argument(
        "--prompt", action="store_true",
        help="also show the prompt, when the log keeps prompts ([log] encrypt_prompts; needs "
        "the key file; gone once the subject is erased)",
    )  # fmt: skip
    asub.add_parser(
        "stats", parents=[common, filters],
        help="calls, images, bytes, faces and blocks per vendor, country and month",
    )  # fmt: skip
    p = asub.add_parser(
        "export", parents=[common, filters], help="export transfers as CSV, JSON Lines or OCSF",
        description="Write the transfers (oldest first) for spreadsheets (csv), scripts (jsonl) "
        "or a SIEM (ocsf: OCSF API Activity events, class_uid 6003, one per line).",
    )  # fmt: skip
    p.add_argument("--format", required=True, choices=["csv", "jsonl", "ocsf"])
    p.add_argument(
        "--include-subjects", action="store_true",
        help="also export subject and consent references and image fingerprints of transfers "
        "linked to a data subject (default: left sealed; needs the key file)",
    )  # fmt: skip
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: standard output)")
    p = asub.add_parser(
        "report", parents=[common, filters], help="write an HTML transfer register",
        description="A self-contained HTML page in the spirit of a GDPR Art. 30 record: "
        "recipients, countries, mechanisms, purposes, volumes, pending records, integrity.",
    )  # fmt: skip
    p.add_argument("-o", "--output", required=True, metavar="HTML", help="where to write it")
    p.add_argument("--title", default="Transfer register", help="the page title")
    p = asub.add_parser(
        "erase", parents=[common], help="erase a data subject's linked fields (GDPR Art. 17)",
        description="Destroy the subject's key: their subject and consent references, image and "
        "prompt fingerprints and any stored prompt become unreadable for good. A signed "
        "tombstone records the erasure; the chain still verifies.",
    )  # fmt: skip
    p.add_argument("--subject", required=True, metavar="ID", help="the subject reference")
    p.add_argument("--request", metavar="REF", help="your reference of the erasure request")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p = asub.add_parser(
        "prune", parents=[common], help="remove records older than a retention period",
        description="Remove every entry older than the period and bridge the cut with a signed "
        "prune entry, so what remains still verifies.",
    )  # fmt: skip
    p.add_argument(
        "--older-than", metavar="AGE",
        help="e.g. 180d, 26w, 1y (default: [log] retention in the config)",
    )  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="only count what would go")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p = asub.add_parser("key", parents=[common], help="export the log's public signing key (PEM)")
    p.add_argument("-o", "--output", metavar="PEM", help="write here (default: standard output)")
    asub.add_parser(
        "checkpoint", parents=[common], help="sign the head of the log now (needs the key file)"
    )
    p = asub.add_parser(
        "restart", parents=[common],
        help="start a log over that its key file no longer matches, on the record",
        description="A writer refuses a log that is missing, emptied, cut back, or holds entries "
        "written without the key file. Restoring it from a backup is the first choice. If there "
        "is none, restart: the old files are moved aside (audit.db.abandoned-<time>), never "
        "deleted; the key file keeps its keys (the exported public key stays valid) and gets a "
        "new log id; and the new log's first entry is a signed statement of what was found, "
        "the last state the key file knew and your reason. verify shows it on every run. Stop "
        "the log's writers first. An intact log is not restarted.",
    )  # fmt: skip
    p.add_argument("--reason", required=True, help="why (kept in the new log, signed)")
    p = asub.add_parser(
        "resolve", parents=[common], help="record the outcome of a transfer left 'outcome unknown'",
        description="A transfer whose writer died mid-call stays 'outcome unknown'. Once you know "
        "what happened (the vendor's dashboard, the app's own logs), record it here. The entry "
        "is appended and signed like any other; the original begin is untouched.",
    )  # fmt: skip
    p.add_argument("id", metavar="ID", help="record id (a unique prefix of 8+ characters will do)")
    p.add_argument("--outcome", required=True, choices=["sent", "failed"])
    p.add_argument("--reason", required=True, help="how you know (kept in the log)")
    p.add_argument("--status", type=int, metavar="HTTP", help="the HTTP status, if known")


# -- helpers ------------------------------------------------------------------------------------


def _open(args: argparse.Namespace, *, write: bool = False) -> AuditLog:
    from veilpix.audit._log import AuditLog

    path = Path(args.log).expanduser() if args.log else None
    if args.key and not Path(args.key).expanduser().is_file():
        raise ConfigError(f"there is no key file at {args.key!r}", hint="check the --key path")
    return AuditLog.from_config(
        args.config, path=path, key_path=args.key, readonly=not write, create=False
    )


def _without_subjects(records: Iterable[TransferRecord]) -> Iterator[TransferRecord]:
    """Records with their subject-linked fields left sealed: exports travel (to SIEMs,
    spreadsheets, auditors) and should not carry who the data was about unless asked."""
    from dataclasses import replace

    for rec in records:
        if rec.sealed is None:
            yield rec
        else:
            yield replace(rec, sealed=None, subject="sealed")


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


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    image = None
    if getattr(args, "image", None):
        try:
            image = Path(args.image).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read {args.image!r}: {exc.strerror}",
                hint="--image takes the path of the photo to look for",
            ) from exc
    return {
        "since": args.since,
        "until": args.until,
        "vendor": args.vendor,
        "host": args.host,
        "country": args.country,
        "outcome": args.outcome,
        "app": args.app,
        "subject": args.subject,
        "image": image,
    }


def _console(*, stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # In a pipe or file there is no width to respect: do not wrap rows into several lines.
    width = None if stream.isatty() else 200
    return Console(stderr=stderr, highlight=False, width=width)


def _dump(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


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


def _esc(value: object) -> str:
    """Log values are data, not rich markup: "[redacted]" or an app named "[bold]x" must print
    as written."""
    from rich.markup import escape

    return escape(str(value))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _short(rid: str) -> str:
    return rid[:8]


_OUTCOME_STYLE = {"sent": "green", "blocked": "red", "failed": "yellow", "unknown": "magenta"}


def _outcome(outcome: str) -> str:
    label = "outcome unknown" if outcome == "unknown" else outcome
    return f"[{_OUTCOME_STYLE.get(outcome, 'white')}]{label}[/]"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return str(n)  # pragma: no cover


# -- commands -----------------------------------------------------------------------------------


def _verify(args: argparse.Namespace) -> int:
    from veilpix.audit._keys import load_public_key

    key = load_public_key(args.public_key) if args.public_key else None
    expect = args.expect
    if expect is not None and Path(expect).is_file():
        expect = Path(expect).read_text(encoding="utf-8").strip()
    with _open(args) as log:
        result: VerifyResult = log.verify(key, expect=expect)
    code = EXIT_OK if result.ok else EXIT_UNSIGNED if result.intact else EXIT_PROBLEM
    if args.json:
        _dump(result.to_dict())
        return code
    con = _console()
    con.print(f"log      {_esc(result.path)}")
    con.print(
        f"key      {result.key_id} ({'given' if result.key_source == 'given' else 'stored in the log'})"
    )
    span = "-" if result.first_seq is None else f"{result.first_seq}..{result.last_seq}"
    con.print(
        f"entries  {result.entries} (seq {span}), {result.records} transfers, "
        f"{result.pending} with outcome unknown"
    )
    through = (
        "none valid" if result.signed_through is None else f"through entry {result.signed_through}"
    )
    con.print(f"signed   {_plural(result.checkpoints, 'checkpoint')}, {through}")
    if result.head:
        con.print(f"head     {result.head}")
    if result.pruned_through:
        con.print(f"pruned   entries 1..{result.pruned_through}, bridged by a signed prune entry")
    if result.erasures:
        con.print(f"erased   {_plural(result.erasures, 'subject erasure')}, tombstones signed")
    if result.authenticated is None:
        con.print(
            "MACs     not checked: no key file at hand (entries after the last checkpoint are "
            "covered by the key file's MAC only)"
        )
    else:
        since = (
            f" (entries before {result.mac_since} got theirs when the log was upgraded)"
            if result.mac_since and result.mac_since > (result.first_seq or 1)
            else ""
        )
        bad = result.entries - result.authenticated
        held = f"all {result.entries} hold" if not bad else f"{bad} of {result.entries} do not hold"
        con.print(f"MACs     checked with the key file: {held}{since}")
    for r in result.restarts:
        con.print(
            f"[bold yellow]restart[/]  entry {r.get('seq')} ({_esc(str(r.get('at')))}): started "
            f"over from log {_esc(str(r.get('previous_log')))}, which was "
            f"{_esc(str(r.get('found')))}; reason: {_esc(str(r.get('reason')))}"
        )
    if result.ok:
        con.print("[bold green]OK[/]: the chain is unbroken and every entry is signed")
        if result.key_source == "log":
            con.print(
                "[dim]checked against the key stored in the log; pass --public-key with a copy "
                "kept elsewhere to rule out a re-signed log[/]"
            )
        return code
    first = result.problems[0]
    tone = "yellow" if result.intact else "red"
    con.print(
        f"[bold {tone}]{'UNSIGNED TAIL' if result.intact else 'TAMPERED'}[/]: {_esc(first.message)}"
    )
    for p in result.problems[1:20]:
        con.print(f"  also: {_esc(p.message)}")
    if len(result.problems) > 20:
        con.print(f"  ... and {len(result.problems) - 20} more")
    return code


def _list(args: argparse.Namespace) -> int:
    with _open(args) as log:
        limit = args.limit or None
        recs = list(log.records(**_filters(args), limit=limit, newest_first=True))
        total = log.counts()["records"]
    if args.json:
        _dump([r.to_dict() for r in recs])
        return EXIT_OK
    from rich.table import Table

    table = Table(title=f"{len(recs)} of {total} transfers, newest first", title_justify="left")
    for col in (
        "id",
        "begun (UTC)",
        "app",
        "vendor",
        "host",
        "cc",
        "imgs",
        "sent",
        "unblurred",
        "outcome",
    ):
        table.add_column(col, justify="right" if col in ("imgs", "sent", "unblurred") else "left")
    for r in recs:
        blocked = r.outcome == "blocked"
        table.add_row(
            _short(r.id),
            r.begun[:16].replace("T", " "),
            _esc(r.who.get("app") or "-"),
            _esc(r.where.get("vendor") or "-"),
            _esc(r.where.get("host") or "-"),
            _esc(r.where.get("country") or "?"),
            str(r.what.get("image_count", 0)),
            "-" if blocked else _size(r.to_dict()["request_bytes"] or r.what.get("bytes_after")),
            "-" if blocked else str(r.faces_unblurred) + ("+?" if r.faces_unchecked else ""),
            _outcome(r.outcome),
        )
    if not recs:
        _console().print(f"no transfers match (the log holds {total})")
        return EXIT_OK
    _console().print(table)
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    with _open(args) as log:
        rec = log.get(args.id)
        prompt = log.prompt(rec.id) if args.prompt else None
    d = rec.to_dict()
    if args.prompt:
        d["what"]["prompt_text"] = prompt
    if args.json:
        _dump(d)
        return EXIT_OK
    from rich.table import Table

    con = _console()
    con.print(f"[bold]transfer {rec.id}[/]  {_outcome(rec.outcome)}")
    rows: list[tuple[str, Any]] = [
        ("begun", d["begun"]),
        ("finished", d["finished"] or "never (outcome unknown)"),
        ("status", d["status"]),
        ("reason", d["reason"]),
        ("rule", d["rule"]),
        ("latency", None if d["latency_ms"] is None else f"{d['latency_ms']:.1f} ms"),
        ("request / response", f"{_size(d['request_bytes'])} / {_size(d['response_bytes'])}"),
    ]
    for section in ("who", "where", "why"):
        rows += [(f"{section}.{k}", v) for k, v in d[section].items()]
    rows += [
        ("what.categories", ", ".join(d["what"].get("categories", []))),
        ("what.prompt", d["what"].get("prompt")),
        (
            "what.prompt_text",
            d["what"].get("prompt_text", "") or ("not kept" if args.prompt else ""),
        ),
        ("subject", d["subject"]),
        ("controls.applied", ", ".join(d["controls"].get("applied", [])) or "-"),
        ("controls.account_level", ", ".join(d["controls"].get("account_level", [])) or "-"),
        ("controls.unavailable", ", ".join(d["controls"].get("unavailable", [])) or "-"),
        ("retention", d["retention"]),
    ]
    facts = Table(show_header=False, box=None, pad_edge=False)
    facts.add_column(style="dim")
    facts.add_column()
    for k, v in rows:
        if v not in (None, "", {}):
            facts.add_row(k, _esc(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)))
    con.print(facts)
    images = d["what"].get("images", [])
    if images:
        t = Table(title="images", title_justify="left")
        for col in (
            "field",
            "sent as",
            "before",
            "after",
            "metadata found (removed)",
            "faces",
            "fingerprint (before)",
        ):
            t.add_column(col)
        for i in images:
            if "error" in i:
                t.add_row(
                    _esc(i.get("field") or "-"),
                    "",
                    _size(i["bytes_before"]),
                    "[red]not sent[/]",
                    _esc(i["error"]),
                    "",
                    "",
                )
                continue
            faces = (
                "not checked"
                if not i.get("faces_checked")
                else (f"{i.get('faces_found')} found, {i.get('faces_blurred')} blurred")
            )
            t.add_row(
                _esc(i.get("field") or "-"),
                _esc(i.get("filename") or "-"),
                f"{i['format_before']} {i['width_before']}x{i['height_before']} {_size(i['bytes_before'])}",
                f"{i['format_after']} {i['width_after']}x{i['height_after']} {_size(i['bytes_after'])}",
                ", ".join(i.get("metadata_found", {})) or "none",
                faces,
                _esc(str(i.get("fingerprint_before") or f"[{d['subject']}]")[:16]),
            )
        con.print(t)
    return EXIT_OK


def _stats(args: argparse.Namespace) -> int:
    from veilpix.audit._log import summarize

    with _open(args) as log:
        rows = summarize(log.records(**_filters(args)))
    if args.json:
        _dump([r.to_dict() for r in rows])
        return EXIT_OK
    from rich.table import Table

    table = Table(
        title="transfers per vendor, country and month", title_justify="left",
        caption="faces: blurred / sent unblurred; unchecked = images sent without a face check",
        caption_justify="left",
    )  # fmt: skip
    cols = ("month", "vendor", "cc", "calls", "sent", "blocked", "failed", "unknown",
            "images", "bytes", "blurred", "unblurred", "unchecked")  # fmt: skip
    for c in cols:
        table.add_column(c, justify="left" if c in cols[:3] else "right")
    for r in rows:
        table.add_row(
            r.month, _esc(r.vendor), _esc(r.country), str(r.calls), str(r.sent),
            f"[red]{r.blocked}[/]" if r.blocked else "0", str(r.failed),
            f"[magenta]{r.unknown}[/]" if r.unknown else "0", str(r.images),
            _size(r.bytes_sent), str(r.faces_blurred),
            f"[yellow]{r.faces_unblurred}[/]" if r.faces_unblurred else "0",
            str(r.images_unchecked),
        )  # fmt: skip
    _console().print(table)
    if not rows:
        _console().print("no transfers match")
    return EXIT_OK


def _progress_records(
    log: AuditLog, records: Iterator[TransferRecord], args: argparse.Namespace
) -> Iterator[TransferRecord]:
    """Wrap an export's records in a progress bar on stderr when it is a terminal."""
    if args.json or not sys.stderr.isatty():
        yield from records
        return
    from rich.progress import Progress

    total = log.counts()["records"]
    with Progress(console=_console(stderr=True), transient=True) as bar:
        task = bar.add_task("exporting", total=total)
        for rec in records:
            yield rec
            bar.advance(task)


def _export(args: argparse.Namespace) -> int:
    from veilpix import __version__
    from veilpix.audit._export import export

    with _open(args) as log:
        if args.include_subjects and log.keys is None:
            raise ConfigError(
                "--include-subjects needs the log's key file to open subject-linked fields",
                hint=f"none at {str(log.key_path)!r}: pass --key FILE",
            )
        records = _progress_records(log, log.records(**_filters(args)), args)
        if not args.include_subjects:
            records = _without_subjects(records)
        if args.output:
            with _private_file(args.output) as out:
                n = export(records, args.format, out, product_version=__version__)
        else:
            n = export(records, args.format, sys.stdout, product_version=__version__)
    if args.output:
        if args.json:
            _dump({"output": args.output, "format": args.format, "records": n})
        else:
            print(f"wrote {n} transfers to {args.output} ({args.format})", file=sys.stderr)
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from veilpix.audit._register import render_report

    with _open(args) as log:
        result = log.verify()
        records = list(_without_subjects(log.records(**_filters(args))))
        generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        page = render_report(records, result, log_path=str(log.path), generated=generated,
                             title=args.title)  # fmt: skip
    with _private_file(args.output) as out:
        out.write(page)
    code = EXIT_OK if result.ok else EXIT_UNSIGNED if result.intact else EXIT_PROBLEM
    if args.json:
        _dump({"output": args.output, "records": len(records), "verified": result.ok,
               "intact": result.intact})  # fmt: skip
    else:
        state = "verified" if result.ok else "unsigned tail" if result.intact else "NOT verified"
        print(
            f"wrote {args.output}: {_plural(len(records), 'transfer')}, integrity {state}",
            file=sys.stderr,
        )
    return code


def _erase(args: argparse.Namespace) -> int:
    with _open(args, write=True) as log:
        n = sum(1 for _ in log.records(subject=args.subject))
        if n and not _confirm(
            f"erase the subject-linked fields of {n} transfer(s) for this subject?", args
        ):
            print("nothing erased", file=sys.stderr)
            return EXIT_PROBLEM
        done = log.erase(args.subject, request_ref=args.request)
    if args.json:
        _dump({"records": done.records, "tombstone_seq": done.tombstone_seq,
               "physically_overwritten": done.physically_overwritten})  # fmt: skip
    elif done.records == 0:
        print("no transfers linked to this subject (never logged, or already erased)")
    else:
        print(f"erased the subject-linked fields of {done.records} transfer(s); "
              f"tombstone at entry {done.tombstone_seq}")  # fmt: skip
        if not done.physically_overwritten:
            print("note: another process still reads the log; the key's old bytes are "
                  "overwritten when it closes", file=sys.stderr)  # fmt: skip
    return EXIT_OK


def _prune(args: argparse.Namespace) -> int:
    from veilpix._config import load_config, parse_age
    from veilpix.audit._log import _now_text

    older_than = args.older_than or load_config(args.config).log.retention
    if older_than is None:
        raise ConfigError(
            "how old must records be to go?",
            hint="give --older-than 180d, or set [log] retention in veilpix.toml",
        )
    args.older_than = older_than
    age = parse_age(older_than)
    if args.dry_run:
        cutoff = _now_text(datetime.now(UTC) - age)
        with _open(args) as log:
            n = sum(1 for _ in log.records(until=cutoff))
        if args.json:
            _dump({"dry_run": True, "records": n, "cutoff": cutoff})
        else:
            print(f"would remove {n} transfer(s) begun before {cutoff}")
        return EXIT_OK
    with _open(args, write=True) as log:
        if not _confirm(f"remove every entry older than {args.older_than}?", args):
            print("nothing removed", file=sys.stderr)
            return EXIT_PROBLEM
        done = log.prune(age)
    if args.json:
        _dump({"entries": done.entries, "records": done.records, "cutoff": done.cutoff,
               "through_seq": done.through_seq, "prune_seq": done.prune_seq})  # fmt: skip
    else:
        print(f"removed {done.records} transfer(s) ({done.entries} entries) begun before "
              f"{done.cutoff}" + (f"; bridged at entry {done.prune_seq}" if done.prune_seq else ""))  # fmt: skip
    return EXIT_OK


def _key(args: argparse.Namespace) -> int:
    from veilpix.audit._keys import key_id, public_key_pem

    with _open(args) as log:
        pem, kid = public_key_pem(log.public_key), key_id(log.public_key)
    if args.output:
        try:
            Path(args.output).write_text(pem, encoding="ascii")
        except OSError as exc:
            raise ConfigError(f"cannot write {args.output!r}: {exc.strerror}", hint="") from exc
    if args.json:
        _dump({"key_id": kid, "pem": pem, "output": args.output})
    elif args.output:
        print(f"wrote the public key {kid} to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(pem)
    return EXIT_OK


def _checkpoint(args: argparse.Namespace) -> int:
    with _open(args, write=True) as log:
        cp = log.checkpoint("manual")
    if args.json:
        _dump({"checkpoint": cp})
    else:
        print(
            "nothing to sign: the head is already signed"
            if cp is None
            else f"signed checkpoint {cp}"
        )
    return EXIT_OK


def _restart(args: argparse.Namespace) -> int:
    from veilpix.audit._log import AuditLog
    from veilpix.audit._restart import restart_log

    # the log and key file every other command would use (flags, environment, config)
    path, key = AuditLog.locate(
        args.config, path=Path(args.log).expanduser() if args.log else None, key_path=args.key
    )
    done = restart_log(path, reason=args.reason, key_path=key)
    if args.json:
        _dump(done.to_dict())
        return EXIT_OK
    con = _console()
    con.print(f"[bold yellow]restarted[/] {_esc(done.path)}: the old log was {_esc(done.found)}")
    con.print(f"  found:    {_esc(done.detail)}")
    if done.moved_to:
        con.print(f"  old file: moved to {_esc(done.moved_to)} (verify it with the same key file)")
    con.print(f"  new log:  {done.log_id} (was {done.previous_log}); its first entry is the "
              "signed restart statement")  # fmt: skip
    return EXIT_OK


def _resolve(args: argparse.Namespace) -> int:
    with _open(args, write=True) as log:
        rec = log.get(args.id)
        if rec.outcome != "unknown":
            raise ConfigError(
                f"transfer {rec.id} already has an outcome ({rec.outcome})",
                hint="only transfers shown as 'outcome unknown' can be resolved",
            )
        log.finish(rec.id, outcome=args.outcome, status=args.status,
                   reason=f"resolved by operator: {args.reason}")  # fmt: skip
    if args.json:
        _dump({"id": rec.id, "outcome": args.outcome})
    else:
        print(f"transfer {rec.id}: outcome recorded as {args.outcome}")
    return EXIT_OK


_COMMANDS = {
    "resolve": _resolve, "restart": _restart,
    "verify": _verify, "list": _list, "show": _show, "stats": _stats, "export": _export,
    "report": _report, "erase": _erase, "prune": _prune, "key": _key, "checkpoint": _checkpoint,
}  # fmt: skip


def run_audit(args: argparse.Namespace) -> int:
    if args.audit_command is None:
        args.audit_parser.print_help()
        return EXIT_USAGE
    try:
        return _COMMANDS[args.audit_command](args)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        if args.audit_command == "verify":
            raise  # verify reads raw rows and never trips over their content
        # Review commands read what verify vouches for; values of the wrong type mean rows
        # were changed behind veilpix's back.
        raise AuditLogError(
            f"the log holds values veilpix did not write ({type(exc).__name__}: {exc})",
            hint="run: veilpix audit verify, which names the altered entry",
        ) from exc
