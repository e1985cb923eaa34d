"""``veilpix audit`` on screen: verify, list, show and stats, and what every audit command
shares (the log the flags name, the filters, the console, JSON output, the exit codes).

These commands open the log read-only and never change it. Values from the log are data:
they print as written, control characters made visible (:mod:`veilpix.cli._term`). Exit codes: 0 fine, 1 verify found tampering (or a
confirmation was declined), 2 usage, configuration or log error, 3 verify found no tampering
but entries after the last signed checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from veilpix._errors import ConfigError
from veilpix.audit._keys import load_public_key
from veilpix.audit._log import AuditLog
from veilpix.audit._records import summarize
from veilpix.cli._exit import EXIT_FAILED, EXIT_OK, EXIT_UNSIGNED
from veilpix.cli._options import log_location
from veilpix.cli._term import Column, Piece, Table, Term, json_text, plural, styled

if TYPE_CHECKING:
    from veilpix.audit._verify import VerifyResult

__all__ = [
    "EXIT_PROBLEM",
    "EXIT_UNSIGNED",
    "dump",
    "filter_args",
    "list_records",
    "open_log",
    "plural",
    "show",
    "stats",
    "verify",
]

EXIT_PROBLEM = EXIT_FAILED


def open_log(args: argparse.Namespace, *, write: bool = False) -> AuditLog:
    """The log (and key file) the flags, the environment and the config name; read-only
    unless ``write``. Never creates one."""
    path = log_location(args.log)
    if args.key and not Path(args.key).expanduser().is_file():
        raise ConfigError(f"there is no key file at {args.key!r}", hint="check the --key path")
    return AuditLog.from_config(
        args.config, path=path, key_path=args.key, readonly=not write, create=False
    )


def filter_args(args: argparse.Namespace) -> dict[str, Any]:
    """The filter flags as keyword arguments of :meth:`AuditLog.records`."""
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


def dump(obj: Any) -> None:
    sys.stdout.write(json_text(obj, indent=2) + "\n")


def _short(rid: str) -> str:
    return rid[:8]


_OUTCOME_STYLE: dict[str, Any] = {
    "sent": "green",
    "blocked": "red",
    "failed": "yellow",
    "unknown": "magenta",
}


def _outcome(outcome: str) -> Piece:
    label = "outcome unknown" if outcome == "unknown" else outcome
    style = _OUTCOME_STYLE.get(outcome)
    return styled(label, style) if style else styled(label)


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


def verify(args: argparse.Namespace) -> int:
    key = load_public_key(args.public_key) if args.public_key else None
    expect = args.expect
    if expect is not None and Path(expect).is_file():
        expect = Path(expect).read_text(encoding="utf-8").strip()
    with open_log(args) as log:
        result: VerifyResult = log.verify(key, expect=expect)
    code = EXIT_OK if result.ok else EXIT_UNSIGNED if result.intact else EXIT_PROBLEM
    if args.json:
        dump(result.to_dict())
        return code
    con = Term()
    con.print("log      ", str(result.path))
    con.print(
        f"key      {result.key_id} ({'given' if result.key_source == 'given' else 'stored in the log'})"
    )
    span = "-" if result.first_seq is None else f"{result.first_seq}..{result.last_seq}"
    con.print(
        f"entries  {result.entries} (seq {span}), {plural(result.records, 'transfer')}, "
        f"{result.pending} with outcome unknown"
    )
    if result.writers:  # a fleet log: each writer's chain
        _print_writers(con, result)
    else:
        through = (
            "none valid"
            if result.signed_through is None
            else f"through entry {result.signed_through}"
        )
        con.print(f"signed   {plural(result.checkpoints, 'checkpoint')}, {through}")
    if result.head:
        con.print(f"head     {result.head}")
    if result.pruned_through:
        con.print(f"pruned   entries 1..{result.pruned_through}, bridged by a signed prune entry")
    if result.erasures:
        con.print(f"erased   {plural(result.erasures, 'subject erasure')}, tombstones signed")
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
            styled("restart", "bold", "yellow"),
            f"  entry {r.get('seq')} ({r.get('at')}): started over from log "
            f"{r.get('previous_log')}, which was {r.get('found')}; reason: {r.get('reason')}",
        )
    if result.ok:
        chains = "every writer's chain is" if result.writers else "the chain is"
        con.print(styled("OK", "bold", "green"), f": {chains} unbroken and every entry is signed")
        if result.key_source == "log":
            con.print(
                styled(
                    "checked against the key stored in the log; pass --public-key with a copy "
                    "kept elsewhere to rule out a re-signed log",
                    "dim",
                )
            )
        return code
    first = result.problems[0]
    tone: Any = "yellow" if result.intact else "red"
    con.print(
        styled("UNSIGNED TAIL" if result.intact else "TAMPERED", "bold", tone),
        ": ",
        first.message,
    )
    for p in result.problems[1:20]:
        con.print("  also: ", p.message)
    if len(result.problems) > 20:
        con.print(f"  ... and {len(result.problems) - 20} more")
    return code


def _print_writers(con: Term, result: VerifyResult) -> None:
    """A fleet log's verify: its checkpoints, then one line per writer."""
    con.print(
        f"signed   {plural(result.checkpoints, 'checkpoint')} in the fleet's line, "
        f"{plural(len(result.writers), 'writer')}:"
    )
    table = Table(
        [
            Column("  writer", align="right"),
            Column("name"),
            Column("key"),
            Column("state"),
            Column("entries", align="right"),
            Column("signed through", align="right"),
            Column("unsigned", align="right"),
            Column("problems", align="right"),
        ]
    )
    for w in result.writers:
        tone: Any = "red" if w["problems"] else "green" if w["state"] != "stopped" else "yellow"
        table.add_row(
            str(w["writer"]),
            str(w["name"]),
            str(w["key_id"] or "-"),
            styled(w["state"], tone),
            str(w["entries"]),
            "-" if w["signed_through"] is None else str(w["signed_through"]),
            str(w["unsigned_tail"]),
            styled(w["problems"], "red") if w["problems"] else "0",
        )
    con.table(table)


def list_records(args: argparse.Namespace) -> int:
    with open_log(args) as log:
        limit = args.limit or None
        recs = list(log.records(**filter_args(args), limit=limit, newest_first=True))
        total = log.counts()["records"]
    if args.json:
        dump([r.to_dict() for r in recs])
        return EXIT_OK
    con = Term()
    if not recs:
        con.print(f"no transfers match (the log holds {total})")
        return EXIT_OK
    right = ("imgs", "sent", "unblurred", "unchecked")
    table = Table(
        [
            Column(c, align="right" if c in right else "left", fold=c in ("app", "host"))
            for c in (
                "id",
                "begun (UTC)",
                "app",
                "vendor",
                "host",
                "cc",
                "imgs",
                "sent",
                "unblurred",
                "unchecked",
                "outcome",
            )
        ],
        title=styled(f"{len(recs)} of {plural(total, 'transfer')}, newest first", "bold"),
        caption=styled(
            "unblurred: faces sent without blur; unchecked: images sent without a face check "
            "(their faces are not counted); blocked calls sent nothing",
            "dim",
        ),
    )
    for r in recs:
        blocked = r.outcome == "blocked"
        table.add_row(
            _short(r.id),
            r.begun[:16].replace("T", " "),
            str(r.who.get("app") or "-"),
            str(r.where.get("vendor") or "-"),
            str(r.where.get("host") or "-"),
            str(r.where.get("country") or "?"),
            str(r.what.get("image_count", 0)),
            "-" if blocked else _size(r.to_dict()["request_bytes"] or r.what.get("bytes_after")),
            "-" if blocked else styled(r.faces_unblurred, "yellow") if r.faces_unblurred else "0",
            "-" if blocked else styled(r.faces_unchecked, "yellow") if r.faces_unchecked else "0",
            _outcome(r.outcome),
        )
    con.table(table)
    return EXIT_OK


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def show(args: argparse.Namespace) -> int:
    with open_log(args) as log:
        rec = log.get(args.id)
        prompt = log.prompt(rec.id) if args.prompt else None
    d = rec.to_dict()
    if args.prompt:
        d["what"]["prompt_text"] = prompt
    if args.json:
        dump(d)
        return EXIT_OK
    con = Term()
    con.print(styled(f"transfer {rec.id}", "bold"), "  ", _outcome(rec.outcome))
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
    facts = Table([Column("", styles=("dim",)), Column("", fold=True)], header=False)
    for k, v in rows:
        if v not in (None, "", {}):
            facts.add_row(k, _text(v))
    con.table(facts)
    images = d["what"].get("images", [])
    if images:
        t = Table(
            [
                Column("field"),
                Column("sent as", fold=True),
                Column("before"),
                Column("after"),
                Column("metadata found (removed)", fold=True),
                Column("faces"),
                Column("fingerprint (before)"),
            ],
            title=styled("images", "bold"),
        )
        for i in images:
            if "error" in i:
                t.add_row(
                    str(i.get("field") or "-"),
                    "",
                    _size(i["bytes_before"]),
                    styled("not sent", "red"),
                    str(i["error"]),
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
                str(i.get("field") or "-"),
                str(i.get("filename") or "-"),
                f"{i['format_before']} {i['width_before']}x{i['height_before']} {_size(i['bytes_before'])}",
                f"{i['format_after']} {i['width_after']}x{i['height_after']} {_size(i['bytes_after'])}",
                ", ".join(i.get("metadata_found", {})) or "none",
                faces,
                str(i.get("fingerprint_before") or f"[{d['subject']}]")[:16],
            )
        con.table(t)
    return EXIT_OK


def stats(args: argparse.Namespace) -> int:
    with open_log(args) as log:
        rows = summarize(log.records(**filter_args(args)))
    if args.json:
        dump([r.to_dict() for r in rows])
        return EXIT_OK
    con = Term()
    if not rows:
        con.print("no transfers match")
        return EXIT_OK
    cols = (
        "month",
        "vendor",
        "cc",
        "calls",
        "sent",
        "blocked",
        "failed",
        "unknown",
        "images",
        "bytes",
        "blurred",
        "unblurred",
        "unchecked",
    )
    table = Table(
        [Column(c, align="left" if c in cols[:3] else "right") for c in cols],
        title=styled("transfers per vendor, country and month", "bold"),
        caption=styled(
            "faces: blurred / sent unblurred; unchecked = images sent without a face check",
            "dim",
        ),
    )
    for r in rows:
        table.add_row(
            r.month,
            str(r.vendor),
            str(r.country),
            str(r.calls),
            str(r.sent),
            styled(r.blocked, "red") if r.blocked else "0",
            str(r.failed),
            styled(r.unknown, "magenta") if r.unknown else "0",
            str(r.images),
            _size(r.bytes_sent),
            str(r.faces_blurred),
            styled(r.faces_unblurred, "yellow") if r.faces_unblurred else "0",
            str(r.images_unchecked),
        )
    con.table(table)
    return EXIT_OK
