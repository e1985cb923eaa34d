"""The vendor matrix (``docs/vendors.md``), generated from the adapter registry.

``python -m veilpix.adapters > docs/vendors.md`` rewrites the file; a test keeps it equal to
:func:`render_markdown`, so the document never drifts from what the adapters say.
"""

from __future__ import annotations

from collections.abc import Iterable

from veilpix.adapters import vendors
from veilpix.adapters._base import Control, Endpoint, ImageSlot, ModelField, Region, Vendor

__all__ = ["COMMAND", "render_markdown"]

COMMAND = "python -m veilpix.adapters > docs/vendors.md"

_INTRO = """\
What veilpix knows about each AI vendor it has an adapter for: the hosts it will send to
(and the region, country and contracting entity each stands for), where images sit in each
endpoint's request, what formats and sizes those endpoints take, and which privacy controls
exist. Facts come from the vendors' SDKs, API references and policies listed under each
vendor; where the sources were thin the host or endpoint note says what was assumed.

- **Country** is where requests are processed as far as documented (ISO 3166-1 alpha-2).
  Where a vendor names only "the EU" or nothing at all, the note says which code stands in.
- **Legal entity** is the contracting entity for customers in the EU/EEA.
- **Hosts** are matched case-insensitively as shell-style patterns: `*.openai.azure.com`
  matches `myres.openai.azure.com`, never `openai.azure.com.evil.test`.
- **Images**: `multipart` names a form field, `json` a path (`a.b` walks objects, `[*]`
  every array item, `[?type=x]` items whose `type` is `x`, `**` any depth, for model-specific
  inputs), `raw` the whole body. *Vendor fetches* marks slots where a URL makes the vendor
  download the original image itself.
- **Control levels**: *request* means veilpix applies it on matching calls (a header, a JSON
  field, or sending to the regional host the policy names); *account* means it exists only as
  an organisation or project setting (or a contractual default) the operator must see to;
  *unavailable* means the vendor does not offer it. Generic signals (`Content-Usage`,
  `Sec-GPC`) are added by the core for every vendor and are not listed here."""


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def _code(items: Iterable[str]) -> str:
    return ", ".join(f"`{i}`" for i in items)


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _table(header: tuple[str, ...], rows: Iterable[Iterable[str]]) -> list[str]:
    return [_row(header), _row("---" for _ in header), *(_row(r) for r in rows)]


def _bytes(n: int | None) -> str | None:
    return None if n is None else f"{n:,} bytes"


def _formats(formats: frozenset[str]) -> str:
    return ", ".join(sorted(f.split("/", 1)[1] for f in formats))


def _slot(slot: ImageSlot) -> str:
    where = "(body)" if slot.kind == "raw" else f"`{slot.path}`"
    enc = ", ".join(sorted(e.replace("_", " ") for e in slot.encodings))
    extra = []
    if slot.role == "mask":
        extra.append("mask")
    if slot.mime_path:
        extra.append(f"type in `{slot.mime_path}`")
    if slot.fetched_by_vendor:
        extra.append("vendor fetches URLs")
    tail = f"; {'; '.join(extra)}" if extra else ""
    return f"{slot.kind} {where} ({enc}{tail})"


def _limits(endpoint: Endpoint) -> str:
    out = []
    if (b := _bytes(endpoint.max_image_bytes)) is not None:
        out.append(f"image ≤ {b}")
    if endpoint.max_images is not None:
        n = endpoint.max_images
        out.append(f"≤ {n} image{'' if n == 1 else 's'}")
    if (b := _bytes(endpoint.max_request_bytes)) is not None:
        out.append(f"request ≤ {b}")
    if endpoint.accepts_data_uri:
        out.append("data: URIs accepted")
    if endpoint.upload:
        out.append("file upload")
    return "; ".join(out) or "–"


def _how(control: Control) -> str:
    if control.level != "request":
        return "–"
    if control.header is not None:
        return f"header `{control.header[0]}: {control.header[1]}`"
    if control.json_field is not None:
        key, value = control.json_field
        shown = "false" if value is False else "true" if value is True else repr(value)
        when = f" when `Policy(region={control.when_region!r})`" if control.when_region else ""
        return f"JSON `{key}: {shown}`{when}"
    return "send to the regional host"


def _operations(control: Control) -> str:
    if control.level != "request":
        return "–"
    return _code(sorted(control.operations)) if control.operations else "all"


def _model_field(m: ModelField) -> str:
    where = {"json": "JSON", "form": "form field", "path": "URL path"}[m.source]
    only = f" (on `{m.paths}`)" if m.paths is not None else ""
    return f"{where} `{m.where}`{only}"


def _entities(regions: tuple[Region, ...]) -> list[str]:
    return sorted({r.legal_entity for r in regions})


def _summary(all_vendors: tuple[Vendor, ...]) -> list[str]:
    rows = []
    for v in all_vendors:
        by_level = {
            level: ", ".join(c.name for c in v.controls if c.level == level) or "–"
            for level in ("request", "account", "unavailable")
        }
        rows.append(
            (
                f"[{v.display}](#{v.name})",
                f"`{v.name}`",
                ", ".join(sorted({r.country for r in v.regions})),
                "; ".join(_entities(v.regions)),
                str(sum(1 for e in v.endpoints if e.images)),
                by_level["request"],
                by_level["account"],
                by_level["unavailable"],
            )
        )
    header = (
        "Vendor",
        "Key",
        "Countries",
        "Legal entity (EU/EEA)",
        "Image endpoints",
        "Per request",
        "Account level",
        "Unavailable",
    )
    return _table(header, rows)


def _vendor(v: Vendor) -> list[str]:
    lines = [f'<a id="{v.name}"></a>', "", f"## {v.display} (`{v.name}`)", ""]
    base = f"- Base URL: `{v.base_url}`"
    if v.env_base_url:
        base += f" (override: `{v.env_base_url}`)"
    lines.append(base)
    if v.env_key:
        lines.append(f"- Credentials from: {_code(v.env_key)}")
    creds = f"- Credential headers (redacted in logs): {_code(v.auth_headers)}"
    if v.auth_query:
        creds += f"; query parameters: {_code(v.auth_query)}"
    lines.append(creds)
    lines.append(f"- Legal entity for EU/EEA customers: {'; '.join(_entities(v.regions))}")
    models = "; ".join(_model_field(m) for m in v.models) or "not named in requests"
    lines.append(f"- Model (transfer record) from, first found: {models}")
    lines += ["", "### Hosts", ""]
    lines += _table(
        ("Region", "Hosts", "Country", "Legal entity", "Note"),
        ((r.name, _code(r.hosts), r.country, r.legal_entity, r.note) for r in v.regions),
    )
    lines += ["", "### Endpoints", ""]
    lines += _table(
        ("Operation", "Request", "Images", "Formats", "Limits", "Note"),
        (
            (
                f"`{e.operation}`",
                f"`{e.method} {e.path}`",
                "<br>".join(_slot(s) for s in e.images) or "none",
                _formats(e.formats) if e.images else "–",
                _limits(e),
                e.note,
            )
            for e in v.endpoints
        ),
    )
    lines += ["", "### Privacy controls", ""]
    if v.controls:
        lines += _table(
            ("Control", "Level", "How veilpix applies it", "Operations", "What it is", "Source"),
            (
                (
                    c.name,
                    c.level,
                    _how(c),
                    _operations(c),
                    c.description,
                    c.source or "–",
                )
                for c in v.controls
            ),
        )
    else:
        lines.append("None documented: no per-request or account-level privacy control found.")
    lines += ["", "### Sources", ""]
    lines += [f"- {s}" for s in v.sources]
    lines.append("")
    return lines


def render_markdown() -> str:
    """The vendor matrix as Markdown, exactly as ``docs/vendors.md`` holds it."""
    all_vendors = vendors()
    lines = [
        f"<!-- Generated from the adapter registry by `{COMMAND}`; do not edit by hand. -->",
        "",
        "# AI vendors",
        "",
        f"*Generated from `adapters/*.py` by `{COMMAND}`. Edit the adapters, not this file.*",
        "",
        _INTRO,
        "",
        "## Summary",
        "",
        *_summary(all_vendors),
        "",
    ]
    for vendor in all_vendors:
        lines += _vendor(vendor)
    return "\n".join(lines)
