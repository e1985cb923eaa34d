"""One transfer's page: who, where, why, the outcome, what was sent (per image), the
privacy controls and its place in the chain; a damaged entry gets a page that says so."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from veilpix._errors import AuditLogError, VeilpixError
from veilpix.audit._html import esc, html_table, missing, nbytes, num, route, when
from veilpix.audit._record import IMAGE_CATEGORY, UNCHECKED_CATEGORY
from veilpix.audit._records import TransferRecord
from veilpix.console._http import Request, Response
from veilpix.console._layout import notice, url
from veilpix.console._pages import html, outcome_badge, view

if TYPE_CHECKING:
    from veilpix.console._app import Console
    from veilpix.console._auth import Session


def _dl(pairs: list[tuple[str, str]]) -> str:
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in pairs if v not in (None, ""))
    return f'<dl class="facts">{rows}</dl>'


def _text(value: Any) -> str:
    if value is None or value == "":
        return missing()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return esc(", ".join(str(v) for v in value)) if value else missing("none")
    return esc(value)


def transfer(console: Console, request: Request, session: Session) -> Response:
    rid = request.path.removeprefix("/transfers/")
    try:
        rec = view(console, session, console.log.get(rid))
    except AuditLogError as exc:
        if "did not write" not in str(exc):  # (no such transfer)
            return console.error(request, 404, str(exc), session)
        return _damaged_page(console, session, rid, str(exc))
    except VeilpixError as exc:  # an id too short, or matching several
        return console.error(request, 404, str(exc), session)
    try:
        return _transfer_page(console, session, rec)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return _damaged_page(console, session, rec.id, f"{type(exc).__name__}: {exc}")


def _damaged_page(console: Console, session: Session, rid: str, why: str) -> Response:
    body = notice(
        f"Transfer <code>{esc(rid)}</code> holds values veilpix did not write, so it cannot be "
        f"shown ({esc(why)}). The log was altered: the integrity box on the overview names "
        "the entry after a verification.",
        "bad",
    )
    return html(console, session, "Transfer (damaged)", body, "/transfers")


def _transfer_page(console: Console, session: Session, rec: TransferRecord) -> Response:
    d = rec.to_dict()
    who, where, why, controls = d["who"], d["where"], d["why"], d["controls"]
    parts = [
        f'<p class="lead">{outcome_badge(rec.outcome)} <code class="id">{esc(rec.id)}</code></p>',
        '<div class="cols">',
        "<section><h2>Who</h2>"
        + _dl(
            [
                ("App", _text(who.get("app"))),
                ("Actor", _text(who.get("actor"))),
                ("Client", _text(who.get("client"))),
                ("Route", route(who.get("door"))),
            ]
        )
        + "</section>",
        "<section><h2>Where</h2>"
        + _dl(
            [
                ("Vendor", _text(where.get("vendor"))),
                ("Legal entity", _text(where.get("legal_entity"))),
                ("Host", _text(where.get("host"))),
                ("Region", _text(where.get("region"))),
                ("Country", _text(where.get("country"))),
                ("Transfer mechanism", _text(where.get("transfer_mechanism"))),
                ("Operation", _text(where.get("operation"))),
                ("Model", _text(where.get("model"))),
                (
                    "Request",
                    f"{esc(where.get('method') or '')} <code>{esc(where.get('url') or '')}</code>",
                ),
            ]
        )
        + "</section>",
        "<section><h2>Why</h2>"
        + _dl(
            [
                ("Purpose", _text(why.get("purpose"))),
                ("Legal basis", _text(why.get("legal_basis"))),
                ("Consent", _text(why.get("consent"))),
                ("Consent reference", _text(why.get("consent_ref"))),
                (
                    "Data subject",
                    _text(why.get("subject_ref"))
                    if rec.subject != "none"
                    else missing("none linked"),
                ),
            ]
        )
        + "</section>",
        "<section><h2>Outcome</h2>"
        + _dl(
            [
                ("Outcome", outcome_badge(rec.outcome)),
                ("Begun", when(d["begun"]) + " UTC"),
                (
                    "Finished",
                    when(d["finished"]) + " UTC"
                    if d["finished"]
                    else missing("never (outcome unknown)", warn=True),
                ),
                ("HTTP status", _text(d["status"])),
                ("Reason", _text(d["reason"])),
                ("Rule", _text(d["rule"])),
                ("Latency", "" if d["latency_ms"] is None else f"{d['latency_ms']:.1f} ms"),
                (
                    "Request / response",
                    f"{_size(d['request_bytes'])} / {_size(d['response_bytes'])}",
                ),
                ("Vendor request id", _text(d["vendor_request_id"])),
                ("Retention", _text(d["retention"])),
            ]
        )
        + "</section>",
        "</div>",
        "<h2>What</h2>",
        _dl(
            [
                ("Categories of data", _text(_categories(d["what"].get("categories") or []))),
                ("Prompt", _prompt(d["what"].get("prompt"))),
            ]
        ),
        _images(d["what"].get("images") or [], rec),
        "<h2>Privacy controls</h2>",
        _dl(
            [
                ("Applied on the call", _text(controls.get("applied"))),
                ("At account level only", _text(controls.get("account_level"))),
                ("Not offered by the vendor", _text(controls.get("unavailable"))),
            ]
        ),
        "<h2>Place in the chain</h2>",
        _chain(console, rec),
    ]
    if rec.outcome == "unknown":
        parts.append(
            '<p><a class="button" href="' + esc(url("/actions", {"record": rec.id})) + '#resolve">'
            "Resolve this transfer's outcome…</a></p>"
        )
    return html(console, session, f"Transfer {rec.id[:8]}", "".join(parts), "/transfers")


def _categories(values: list[Any]) -> list[str]:
    names = [str(v) for v in values]
    if UNCHECKED_CATEGORY in names:  # (as the register shows them: one category)
        names = [n for n in names if n not in (IMAGE_CATEGORY, UNCHECKED_CATEGORY)]
        names.insert(0, "images (faces not checked)")
    return names


def _size(n: Any) -> str:
    return nbytes(int(n)) if isinstance(n, int) else "–"


def _prompt(prompt: Any) -> str:
    if not isinstance(prompt, dict):
        return missing("none")
    kept = " (kept encrypted)" if prompt.get("sealed") else ""
    return f"{num(int(prompt.get('length') or 0))} characters, fingerprinted{kept}; the text is not shown"


def _images(images: list[dict[str, Any]], rec: TransferRecord) -> str:
    if not images:
        return f"<p>{missing('No images.')}</p>"
    rows = []
    for i in images:
        if "error" in i:
            rows.append(
                [
                    esc(i.get("field") or "–"),
                    _size(i.get("bytes_before")),
                    '<span class="bad">not sent</span>',
                    esc(i["error"]),
                    "",
                    "",
                ]
            )
            continue
        found = i.get("metadata_found") or {}
        faces = (
            missing("not checked", warn=True)
            if not i.get("faces_checked")
            else f"{num(int(i.get('faces_found') or 0))} found, {num(int(i.get('faces_blurred') or 0))} blurred"
            + (
                f', <span class="warn">{num(int(i["faces_unblurred"]))} sent unblurred</span>'
                if i.get("faces_unblurred")
                else ""
            )
        )
        fingerprint = i.get("fingerprint_before") or (
            f"[{rec.subject}]" if rec.subject != "none" else ""
        )
        rows.append(
            [
                esc(i.get("field") or "–")
                + (f"<br><small>{esc(i.get('filename'))}</small>" if i.get("filename") else ""),
                f"{esc(i.get('format_before'))} {esc(i.get('width_before'))}×{esc(i.get('height_before'))}, {_size(i.get('bytes_before'))}",
                f"{esc(i.get('format_after'))} {esc(i.get('width_after'))}×{esc(i.get('height_after'))}, {_size(i.get('bytes_after'))}"
                + (" (downscaled)" if i.get("downscaled") else ""),
                esc(", ".join(f"{k} ({v})" for k, v in sorted(found.items())))
                or missing("none found"),
                faces,
                f'<code class="fp">{esc(str(fingerprint)[:16])}</code>'
                if fingerprint
                else missing(),
            ]
        )
    return html_table(
        ["Field", "Before", "As sent", "Metadata removed (tags)", "Faces", "Fingerprint"], rows
    )


def _chain(console: Console, rec: TransferRecord) -> str:
    entries = console.log.entries_of(rec.id)
    rows = [
        [
            num(e.seq) if e.writer is None else f"{num(e.seq)} of writer {num(e.writer)}",
            esc(e.kind),
            when(e.ts),
            f'<code class="fp" title="{esc(e.hash.hex())}">{esc(e.hash.hex()[:16])}</code>',
            f"signature {num(e.checkpoint)} ({when(e.checkpoint_ts)} UTC)"
            if e.checkpoint is not None
            else missing("not signed yet", warn=True),
        ]
        for e in entries
    ]
    return (
        html_table(
            ["Entry", "Kind", "Written (UTC)", "Entry hash", "Covered by"], rows, narrow=True
        )
        + '<p class="note">Each entry\'s hash covers the one before it; a signature covers '
        "every entry up to the one it names. Run verification on the overview to check them.</p>"
    )
