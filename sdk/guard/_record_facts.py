"""What a request says about itself for the transfer record: its model, its text, and the
``X-Veilpix-*`` headers that say why it is made.

The guard (:mod:`veilpix.guard._guard`) calls these while it walks the request anyway: the URL path
when it resolves the destination, each JSON field and multipart form field as the body walk
meets them. Where each vendor names the model is adapter data
(:class:`veilpix.adapters.ModelField`); nothing here knows a vendor by name.

Record headers (``X-Veilpix-Purpose``, ``X-Veilpix-Legal-Basis``, ``X-Veilpix-Subject``,
``X-Veilpix-Consent``) are read only when the door's :class:`~veilpix.Context` allows them
(``record_headers``); otherwise a request carrying one is refused. Either way they are not
sent on to the vendor nor stored with the record's headers (a subject reference must not sit
in clear next to the sealed fields). Spelled with underscores (``X_Veilpix_Subject``), as
some clients do, they count the same.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, unquote_to_bytes

from veilpix._config import LEGAL_BASES, RECORD_HEADERS
from veilpix.audit._record import clip_text
from veilpix.codec import PROMPT_KEYS

if TYPE_CHECKING:
    from veilpix.adapters import Vendor

__all__ = [
    "FORM_SYSTEM_FIELDS",
    "FORM_TEXT_FIELDS",
    "RECORD_HEADERS",
    "HeaderRefused",
    "form_json",
    "form_models",
    "is_record_header",
    "json_models",
    "path_models",
    "read_record_headers",
]

_FIELD_OF = {header: name for name, header in RECORD_HEADERS.items()}
HEADER_LIMIT = 200  # characters of a decoded record header value (as [record] purpose)
_RAW_LIMIT = 3 * HEADER_LIMIT  # the same, percent-encoded
_VISIBLE = re.compile(r"[\x20-\x7e]*")  # visible ASCII and space: what a header value may hold
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 5.6.2

# Multipart form fields whose values are text the app sent (prompts); Ideogram's legacy
# endpoints send an "image_request" field holding a JSON object with the prompt and model.
FORM_TEXT_FIELDS = PROMPT_KEYS
FORM_SYSTEM_FIELDS = frozenset({"system", "instructions"})
FORM_JSON_FIELDS = frozenset({"image_request"})
_FORM_JSON_LIMIT = 1 << 20


class HeaderRefused(Exception):
    """A record header that may not be used, or whose value cannot be recorded."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


def is_record_header(name: str) -> bool:
    """One of the four record headers (in any case, ``-`` or ``_``): read, never forwarded."""
    return _field_of(name) is not None


def _field_of(name: str) -> str | None:
    return _FIELD_OF.get(name.strip().lower().replace("_", "-"))


# -- the model -----------------------------------------------------------------------------------


def path_models(vendor: Vendor, path: str) -> dict[int, str]:
    """{rank of the vendor's model field: model} for the fields the URL ``path`` fills."""
    out: dict[int, str] = {}
    for rank, spec in enumerate(vendor.models):
        if spec.source == "path":
            value = spec.from_path(path)
            model = clip_text(unquote(value)) if value is not None else None
            if model is not None:
                out[rank] = model
    return out


def json_models(vendor: Vendor, path: str, doc: Any) -> dict[int, str]:
    """{rank: model} for the vendor's JSON model fields that the body ``doc`` fills with a
    string (an object, array or number there names no model: it is not recorded)."""
    out: dict[int, str] = {}
    for rank, spec in enumerate(vendor.models):
        if spec.source != "json" or not spec.applies(path):
            continue
        node = doc
        for key in spec.where.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        model = clip_text(node)
        if model is not None:
            out[rank] = model
    return out


def form_models(
    vendor: Vendor, path: str, name: str, data: bytes, parsed: Any = None
) -> dict[int, str]:
    """{rank: model} for the vendor's form model fields that the form field ``name`` fills
    (``parsed``: the field's value as JSON, for ``name.key`` fields; see :func:`form_json`)."""
    out: dict[int, str] = {}
    for rank, spec in enumerate(vendor.models):
        if spec.source != "form" or not spec.applies(path):
            continue
        field, _, key = spec.where.partition(".")
        if field != name:
            continue
        if not key:
            model = clip_text(data.decode("utf-8", "replace"))
        else:
            model = clip_text(parsed.get(key)) if isinstance(parsed, dict) else None
        if model is not None:
            out[rank] = model
    return out


def form_json(name: str, data: bytes) -> dict[str, Any] | None:
    """The JSON object a form field such as Ideogram's ``image_request`` holds, else None."""
    if name not in FORM_JSON_FIELDS or len(data) > _FORM_JSON_LIMIT:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


# -- record headers ------------------------------------------------------------------------------


def read_record_headers(
    headers: Iterable[tuple[str, str]], allowed: Iterable[str]
) -> dict[str, str]:
    """{record field: value} from the request's record headers, or :class:`HeaderRefused`.

    A header whose field is not in ``allowed``, sent twice, longer than 200 characters,
    holding anything but visible ASCII (UTF-8 text is percent-encoded: ``f%C3%BCr``) or
    control characters once decoded, and a legal basis outside GDPR Art. 6(1)'s six, are
    refused: nothing is guessed or cut short in a record that says why data left.
    """
    permitted = frozenset(allowed)
    seen: dict[str, str] = {}
    for name, value in headers:
        field = _field_of(name)
        if field is None:
            if not _TOKEN.fullmatch(name):  # not a header name HTTP allows: what it hides (a
                # record header with a stray character, say) must not go to the log as is
                raise HeaderRefused(
                    "a request header name holds characters HTTP does not allow in one",
                    "send header names as HTTP tokens (letters, digits, -); nothing was sent",
                )
            continue
        shown = f"X-Veilpix-{'-'.join(p.capitalize() for p in field.split('_'))}"
        if field not in permitted:
            raise HeaderRefused(
                f"the {shown} header is not allowed here",
                f"allow it in veilpix.toml ([record] headers = [{field!r}], or "
                f"record_headers in [apps.<name>]), or drop the header; nothing was sent",
            )
        if field in seen:
            raise HeaderRefused(
                f"{shown} is sent twice; refusing to guess which counts",
                "send the header once; nothing was sent",
            )
        seen[field] = _header_text(shown, value)
    basis = seen.get("legal_basis")
    if basis is not None:
        basis = seen["legal_basis"] = basis.lower()
        if basis not in LEGAL_BASES:
            raise HeaderRefused(  # (the value is not repeated: it could be anything)
                "X-Veilpix-Legal-Basis is not one of GDPR Art. 6(1)'s lawful bases",
                f"send one of: {', '.join(sorted(LEGAL_BASES))}; nothing was sent",
            )
    return seen


def _header_text(shown: str, value: str) -> str:
    """A record header's value as text: visible ASCII, %XX sequences decoded as UTF-8."""
    hint = (
        f"send {shown} as visible ASCII of at most {HEADER_LIMIT} characters; percent-encode "
        "UTF-8 text (f%C3%BCr); nothing was sent"
    )
    if len(value) > _RAW_LIMIT or not _VISIBLE.fullmatch(value):
        raise HeaderRefused(
            f"{shown} is over {HEADER_LIMIT} characters or holds more than visible ASCII", hint
        )
    try:
        text = unquote_to_bytes(value).decode("utf-8") if "%" in value else value
    except UnicodeDecodeError as exc:
        raise HeaderRefused(f"{shown} percent-encodes bytes that are not UTF-8", hint) from exc
    if _CONTROL.search(text) or not text.isprintable():
        # (isprintable: also the invisible format characters, such as a right-to-left
        # override or a zero-width space, that make a value read as something else)
        raise HeaderRefused(
            f"{shown} decodes to control or invisible characters (CR, LF, NUL, ...)", hint
        )
    text = text.strip()
    if not text:
        raise HeaderRefused(f"{shown} is empty", hint)
    if len(text) > HEADER_LIMIT:
        raise HeaderRefused(f"{shown} is over {HEADER_LIMIT} characters once decoded", hint)
    return text
