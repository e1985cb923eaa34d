"""``veilpix audit``: review, verify, erase, prune and export the transfer log.

This module builds the command's parser and hands each action to its function, in the module
loaded when it runs: the review commands (verify, list, show, stats) in
:mod:`veilpix.cli._audit_review`, the ones that write files or the log in
:mod:`veilpix.cli._audit_manage`. Review commands open the log
read-only and never change it; ``erase``, ``prune``, ``checkpoint``, ``resolve`` and
``restart`` open it for writing (and need its key file). Exit codes: 0 fine, 1 verify found
tampering (or a confirmation was declined), 2 usage, configuration or log error, 3 verify
found no tampering but entries after the last signed checkpoint.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from veilpix._config import parse_age
from veilpix._errors import AuditLogError, ConfigError
from veilpix.audit._chain import now_text
from veilpix.cli._exit import EXIT_USAGE
from veilpix.cli._options import Subparsers, port_number

__all__ = ["add_audit_parser", "run_audit"]

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
  veilpix audit serve                        the compliance console in a browser (read-only)
  veilpix audit init --log postgresql://veilpix@db/veilpix     a fleet's log (docs/many-machines.md)
  veilpix audit verify --log postgresql://veilpix@db/veilpix   ... every writer's chain
  veilpix audit migrate --from audit.db --to postgresql://veilpix@db/veilpix

the log: --log FILE or URL, else $VEILPIX_LOG, else [log] url or path in --config /
$VEILPIX_CONFIG, else audit.db in the veilpix user data folder. Its key file: --key,
$VEILPIX_LOG_KEY, [log] key, else beside the log (audit.db.key); a fleet's, named after
its database in the user data folder.
exit codes: 0 fine, 1 problem found, 2 usage error, 3 intact but with an unsigned tail.
"""


def _when(text: str) -> str:
    """An ISO date/time (UTC unless it says otherwise) or an age such as 7d, as stored text."""
    try:
        if text and text[-1].lower() in "hdwy" and text[:-1].strip().isdigit():
            return now_text(datetime.now(UTC) - parse_age(text))
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, ConfigError):
        raise argparse.ArgumentTypeError(
            f"expected a date (2026-11-01), a time (2026-11-01T09:30) or an age (7d), got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return now_text(when)


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("the limit cannot be negative")
    return value


def add_audit_parser(sub: Subparsers, summary: str) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log",
        metavar="FILE|URL",
        help="the transfer log: a file, or a fleet's PostgreSQL URL (default: $VEILPIX_LOG, "
        "else [log] url or path in the config, else the user data folder)",
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
        help=summary,
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
        "verify",
        parents=[common],
        help="check the hash chain and every checkpoint signature",
        description="Recompute every entry hash and link, check every checkpoint signature and "
        "that each still matches what it signed. Reports the first broken link, gap, forged "
        "checkpoint, cut tail or unsigned tail. Needs only the public key; with the log's key "
        "file at hand (--key, or beside the log) it also checks every entry's MAC, which covers "
        "the entries no checkpoint signs yet, and that the log still holds the newest "
        "checkpoint the key file recorded.",
    )
    p.add_argument(
        "--public-key",
        metavar="PEM",
        help="the log's public key kept elsewhere (from 'veilpix audit key'); default: the key "
        "stored in the log itself, which proves integrity only against someone without it",
    )
    p.add_argument(
        "--expect",
        metavar="HEAD",
        help="a head saved from an earlier verify (the 'head' line, or a file holding it): "
        "fail if the log was cut back past it since",
    )

    p = asub.add_parser("list", parents=[common, filters], help="list transfers, newest first")
    p.add_argument(
        "--limit", type=_limit, default=50, metavar="N", help="at most N (default 50; 0 = all)"
    )
    p = asub.add_parser("show", parents=[common], help="one transfer in full")
    p.add_argument("id", metavar="ID", help="record id (a unique prefix of 8+ characters will do)")
    p.add_argument(
        "--prompt",
        action="store_true",
        help="also show the prompt, when the log keeps prompts ([log] encrypt_prompts; needs "
        "the key file; gone once the subject is erased)",
    )
    asub.add_parser(
        "stats",
        parents=[common, filters],
        help="calls, images, bytes, faces and blocks per vendor, country and month",
    )
    p = asub.add_parser(
        "export",
        parents=[common, filters],
        help="export transfers as CSV, JSON Lines or OCSF",
        description="Write the transfers (oldest first) for spreadsheets (csv), scripts (jsonl) "
        "or a SIEM (ocsf: OCSF API Activity events, class_uid 6003, one per line).",
    )
    p.add_argument("--format", required=True, choices=["csv", "jsonl", "ocsf"])
    p.add_argument(
        "--include-subjects",
        action="store_true",
        help="also export subject and consent references and image fingerprints of transfers "
        "linked to a data subject (default: left sealed; needs the key file)",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default: standard output)")
    p = asub.add_parser(
        "report",
        parents=[common, filters],
        help="write an HTML transfer register",
        description="A self-contained HTML page in the spirit of a GDPR Art. 30 record: "
        "recipients, countries, mechanisms, purposes, volumes, pending records, integrity.",
    )
    p.add_argument("-o", "--output", required=True, metavar="HTML", help="where to write it")
    p.add_argument("--title", default="Transfer register", help="the page title")
    p = asub.add_parser(
        "erase",
        parents=[common],
        help="erase a data subject's linked fields (GDPR Art. 17)",
        description="Destroy the subject's key: their subject and consent references, image and "
        "prompt fingerprints and any stored prompt become unreadable for good. A signed "
        "tombstone records the erasure; the chain still verifies.",
    )
    p.add_argument("--subject", required=True, metavar="ID", help="the subject reference")
    p.add_argument("--request", metavar="REF", help="your reference of the erasure request")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p = asub.add_parser(
        "prune",
        parents=[common],
        help="remove records older than a retention period",
        description="Remove every entry older than the period and bridge the cut with a signed "
        "prune entry, so what remains still verifies.",
    )
    p.add_argument(
        "--older-than",
        metavar="AGE",
        help="e.g. 180d, 26w, 1y (default: [log] retention in the config)",
    )
    p.add_argument("--dry-run", action="store_true", help="only count what would go")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p = asub.add_parser("key", parents=[common], help="export the log's public signing key (PEM)")
    p.add_argument("-o", "--output", metavar="PEM", help="write here (default: standard output)")
    asub.add_parser(
        "checkpoint", parents=[common], help="sign the head of the log now (needs the key file)"
    )
    p = asub.add_parser(
        "restart",
        parents=[common],
        help="start a log over that its key file no longer matches, on the record",
        description="A writer refuses a log that is missing, emptied, cut back, or holds entries "
        "written without the key file. Restoring it from a backup is the first choice. If there "
        "is none, restart: the old files are moved aside (audit.db.abandoned-<time>), never "
        "deleted; the key file keeps its keys (the exported public key stays valid) and gets a "
        "new log id; and the new log's first entry is a signed statement of what was found, "
        "the last state the key file knew and your reason. verify shows it on every run. Stop "
        "the log's writers first. An intact log is not restarted.",
    )
    p.add_argument("--reason", required=True, help="why (kept in the new log, signed)")
    p = asub.add_parser(
        "resolve",
        parents=[common],
        help="record the outcome of a transfer left 'outcome unknown'",
        description="A transfer whose writer died mid-call stays 'outcome unknown'. Once you know "
        "what happened (the vendor's dashboard, the app's own logs), record it here. The entry "
        "is appended and signed like any other; the original begin is untouched.",
    )
    p.add_argument("id", metavar="ID", help="record id (a unique prefix of 8+ characters will do)")
    p.add_argument("--outcome", required=True, choices=["sent", "failed"])
    p.add_argument("--reason", required=True, help="how you know (kept in the log)")
    p.add_argument("--status", type=int, metavar="HTTP", help="the HTTP status, if known")

    _add_serve(asub, common)
    _add_fleet(asub, common)


def _add_fleet(asub: Any, common: argparse.ArgumentParser) -> None:
    asub.add_parser(
        "init",
        parents=[common],
        help="create the log and its key file (a file, or a fleet's tables in PostgreSQL)",
        description="Create the transfer log --log names (a file, or with a PostgreSQL URL a "
        "fleet's tables in schema veilpix) and its key file, or find them. The doors create "
        "the log on their first call too; this is for doing it up front, as the owner role.",
    )
    p = asub.add_parser(
        "migrate",
        help="move a log file into a fleet log on PostgreSQL",
        description="Verify the log file (with its key file) and move it, entry by entry with\n"
        "its own times, into a new fleet log. The fleet takes over the file's fingerprint and\n"
        "wrap keys, so photos and subjects are found and erased as before. One transaction: a\n"
        "failed migration leaves nothing and can be run again. The file is not changed.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  veilpix audit migrate --from ~/.local/share/veilpix/audit.db \\\n"
        "      --to postgresql://veilpix@db.internal/veilpix --to-key /etc/veilpix/fleet.key\n",
    )
    p.add_argument("--from", dest="source", required=True, metavar="FILE", help="the log file")
    p.add_argument("--to", required=True, metavar="URL", help="the fleet's database (empty)")
    p.add_argument(
        "--key", metavar="FILE", help="the log file's key file (default: the log's path + .key)"
    )
    p.add_argument(
        "--to-key",
        metavar="FILE",
        help="where the fleet's key file is written (default: named after the database in the "
        "user data folder)",
    )
    p.add_argument("--json", action="store_true", help="print what was done as JSON")
    p = asub.add_parser(
        "grants",
        help="print the SQL that gives a fleet's database roles what each may do",
        description="Writers may only insert (and read what appending needs): none can change "
        "or delete what is written. Reviewers read (verify, list, export, the console). An "
        "admin role may also delete, for erasure and retention. Run the output with psql as "
        "the role that created the log.",
    )
    p.add_argument("--writer", required=True, metavar="ROLE", help="the doors' database role")
    p.add_argument("--reviewer", required=True, metavar="ROLE", help="the reviewers' role")
    p.add_argument("--admin", metavar="ROLE", help="the role that erases and prunes")


def _add_serve(asub: Any, common: argparse.ArgumentParser) -> None:
    p = asub.add_parser(
        "serve",
        parents=[common],
        help="the compliance console: review, verify, erase and export in a browser",
        description="Serve the compliance console for the log: an overview with integrity, "
        "every transfer with filters, 'Was this photo sent?', the Art. 30 register, and "
        "actions (erase, resolve, verify, export). Read-only unless --allow-changes; on "
        "loopback unless --allow-remote. Prints a one-time login link.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""\
examples:
  veilpix audit serve                           read-only, on http://127.0.0.1:8790
  veilpix audit serve --allow-changes           erase, resolve and export (recorded in the log)
  veilpix audit serve --port 0 --json           any free port; the URL and login link as JSON
  veilpix audit serve --hash-password           a password hash for [console.users]
  veilpix audit serve --host 0.0.0.0 --allow-remote --tls-cert c.pem --tls-key k.pem

[console] in veilpix.toml: host, port, allow_remote, show_subjects (true, or a list of
user names), and [console.users] name = "scrypt$..." for remote sign-in.
""",
    )
    p.add_argument("--host", help="the address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, help="the port (default 8790; 0 picks a free one)")
    p.add_argument(
        "--allow-changes",
        action="store_true",
        help="enable erase, resolve and export (each recorded in the log; needs the key file)",
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (needs [console.users]; use TLS)",
    )
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain")
    p.add_argument("--tls-key", metavar="PEM", help="... and this private key")
    p.add_argument("--access-log", action="store_true", help="print one line per request on stderr")
    p.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password (twice on a terminal, else one line of stdin), print its hash "
        "for [console.users] and exit",
    )


# Each action and the function that runs it, in the module imported when it runs (as the
# commands themselves are, see veilpix.cli._main): "veilpix audit verify" needs the log, not
# the exporters and the register.
_REVIEW, _MANAGE = "veilpix.cli._audit_review", "veilpix.cli._audit_manage"
_ACTIONS = {
    "verify": (_REVIEW, "verify"),
    "list": (_REVIEW, "list_records"),
    "show": (_REVIEW, "show"),
    "stats": (_REVIEW, "stats"),
    "export": (_MANAGE, "export_records"),
    "report": (_MANAGE, "report"),
    "erase": (_MANAGE, "erase"),
    "prune": (_MANAGE, "prune"),
    "key": (_MANAGE, "key"),
    "checkpoint": (_MANAGE, "checkpoint"),
    "restart": (_MANAGE, "restart"),
    "resolve": (_MANAGE, "resolve"),
    "serve": ("veilpix.cli._audit_serve", "serve"),
    "init": ("veilpix.cli._audit_fleet", "init"),
    "migrate": ("veilpix.cli._audit_fleet", "migrate"),
    "grants": ("veilpix.cli._audit_fleet", "grants"),
}


def run_audit(args: argparse.Namespace) -> int:
    if args.audit_command is None:
        args.audit_parser.print_help()
        return EXIT_USAGE
    module, name = _ACTIONS[args.audit_command]
    action: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), name)
    try:
        return action(args)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        if args.audit_command == "verify":
            raise  # verify reads raw rows and never trips over their content
        # Review commands read what verify vouches for; values of the wrong type mean rows
        # were changed behind veilpix's back.
        raise AuditLogError(
            f"the log holds values veilpix did not write ({type(exc).__name__}: {exc})",
            hint="run: veilpix audit verify, which names the altered entry",
        ) from exc
