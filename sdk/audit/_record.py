"""What a door tells the transfer log about one outbound call, and how secrets are kept out.

``Transfer`` is filled in by the door (SDK client, transport, proxy) before it sends anything:
who asked, what leaves (images as :class:`OutboundImage`, the prompt), where it goes, why, and
which privacy controls and policy rule applied. The log turns it into stored facts
(:func:`begin_body`): image bytes and prompts become keyed fingerprints and sizes, URLs and
headers lose their credentials, and any string that still looks like a credential is masked.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from veilpix import adapters
from veilpix.audit._entry import BODY_VERSION, BeginBody, ImageEntry, What

if TYPE_CHECKING:
    from veilpix.image._report import SanitizedImage

__all__ = [
    "IMAGE_CATEGORY",
    "REDACTED",
    "UNCHECKED_CATEGORY",
    "OutboundImage",
    "Transfer",
    "begin_body",
    "clip_text",
    "data_categories",
    "image_facts",
    "redact_headers",
    "redact_url",
    "scrub_secrets",
]

REDACTED = "[redacted]"

# Header names that carry credentials anywhere; each vendor's own (its adapter's
# ``auth_headers`` and ``auth_query``) are added from the adapters (see _vendor_secrets).
_SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "x-goog-api-key",
        "x-key",
        "cookie",
        "set-cookie",
        "ocp-apim-subscription-key",
        "x-amz-security-token",
        "x-goog-user-project",
    }
)
# (and file-name headers, such as fal's X-Fal-File-Name: a file name is often a person's)
_SECRET_NAME = re.compile(
    r"key|token|secret|passw|auth|signature|session|credential|file[-_]?name", re.I
)
# Query parameters that carry credentials (Gemini's ?key=, presigned URLs, OAuth codes).
_SECRET_PARAM = re.compile(
    r"^(key|api[-_]?key|apikey|token|access[-_]?token|id[-_]?token|refresh[-_]?token|code|"
    r"sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|"
    r"x-goog-credential|se|sp|sv|secret|client[-_]?secret|password|auth|session)$",
    re.I,
)
# Credential shapes, masked wherever they appear in a stored string. Each shape runs only when
# its cheap trigger is in the text: one big alternation costs ~100 us per kilobyte in CPython's
# regex engine, and every transfer record passes through here.
_SHAPES: tuple[tuple[tuple[str, ...], bool, re.Pattern[str]], ...] = (
    # Authorization schemes: "Bearer x", "Basic x", fal's "Key id:secret", "Token x"
    (
        ("bearer", "basic", "key", "token"),
        True,
        re.compile(r"(?i:bearer|basic|key|token)\s+[A-Za-z0-9._~+/:=-]{8,}"),
    ),
    (("sk-",), False, re.compile(r"sk-[A-Za-z0-9_-]{16,}")),  # OpenAI, Anthropic, DeepSeek
    (("AIza",), False, re.compile(r"AIza[0-9A-Za-z_-]{30,}")),  # Google API keys
    (("r8_",), False, re.compile(r"r8_[A-Za-z0-9]{20,}")),  # Replicate
    (  # Hugging Face, xAI, Groq, ...
        ("hf_", "xai_", "gsk_", "pk_", "rk_"),
        False,
        re.compile(r"(?:hf|xai|gsk|pk|rk)_[A-Za-z0-9]{20,}"),
    ),
    (  # JWT
        ("eyJ",),
        False,
        re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    ),
)
# fal keys without a scheme: "<uuid>:<hex secret>"
_FAL_SHAPE = re.compile(r":[0-9a-f]{32}")  # starts with a literal: a fast scan
_FAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:[0-9a-f]{32,}")


TEXT_LIMIT = 200  # characters kept of a short text field (a model name, a reference)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]+")  # (and lone surrogates)


def clip_text(value: object, limit: int = TEXT_LIMIT) -> str | None:
    """``value`` as a short text for the record: None unless it is a non-empty string;
    control characters become spaces, and anything over ``limit`` characters is cut there
    and ends in "…" (what was sent is kept as far as it is useful, never a whole payload)."""
    if not isinstance(value, str):
        return None
    return _clip_short(value, limit) if len(value) <= _CLIP_CACHED else _clip(value, limit)


_CLIP_CACHED = 512  # longer texts are not kept in the cache


@functools.lru_cache(maxsize=2048)  # the same app, purpose and model come call after call
def _clip_short(value: str, limit: int) -> str | None:
    return _clip(value, limit)


def _clip(value: str, limit: int) -> str | None:
    # (isprintable() is false for every control character: the regex only runs when needed)
    text = (value if value.isprintable() else _CONTROL.sub(" ", value)).strip()
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mask(m: re.Match[str]) -> str:
    """Mask a match only where a word starts: "Turkey Holdings" and "task-runner" are words,
    not a "Key ..." scheme or an "sk-" key. (A leading \\b would do the same but makes every
    pattern scan several times slower.)"""
    i = m.start()
    before = m.string[i - 1] if i else " "
    return m.group(0) if before.isalnum() or before in "_-" else REDACTED


def _before_space(hay: str, word: str) -> bool:
    """Whether ``word`` occurs followed by whitespace, which an authorization scheme needs
    ("Bearer x"): "key" alone is in every redacted ``?key=`` parameter and ``x-api-key``
    header name, and the scheme pattern costs about 50 us over a record's JSON."""
    i = hay.find(word)
    while i != -1:
        j = i + len(word)
        if j < len(hay) and hay[j].isspace():
            return True
        i = hay.find(word, j)
    return False


def scrub_secrets(text: str) -> str:
    """Mask anything in ``text`` shaped like a credential."""
    low = text.lower()
    for triggers, caseless, pattern in _SHAPES:
        hay = low if caseless else text
        for trigger in triggers:  # (a plain loop: any() over a generator costs more here)
            if trigger in hay and (not caseless or _before_space(hay, trigger)):
                text = pattern.sub(_mask, text)
                break
    if _FAL_SHAPE.search(text) is not None:
        text = _FAL.sub(_mask, text)
    return text


@functools.lru_cache(maxsize=1024)  # the same endpoint URLs come back call after call
def redact_url(url: str) -> str:
    """``url`` without user info, fragment, or the values of credential-bearing parameters."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return scrub_secrets(url.split("?", 1)[0])
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    query = [
        (name, REDACTED if _secret_param(name) else value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    ]
    rebuilt = urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="[]"), ""))
    return scrub_secrets(rebuilt)


def redact_headers(
    headers: Mapping[str, str] | Sequence[tuple[str, str]], *, scrub: bool = True
) -> dict[str, str]:
    """Header names in lower case; credential headers' values replaced by ``[redacted]``, and
    credential-shaped text in the others masked (``scrub=False`` leaves that to a caller that
    scrubs the whole document afterwards, as the transfer log does)."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        if _not_kept(key):
            continue
        out[key] = REDACTED if _secret_header(key) else scrub_secrets(value) if scrub else value
    return out


@functools.lru_cache(maxsize=512)
def _not_kept(key: str) -> bool:
    """veilpix's own headers (their values are recorded where they belong, subject and
    consent sealed) and names HTTP does not allow (what they hide cannot be judged)."""
    return key.replace("_", "-").startswith("x-veilpix-") or _TOKEN.fullmatch(key) is None


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")  # RFC 9110 5.6.2, lower case


@functools.lru_cache(maxsize=512)  # the same few header names come with every call
def _secret_header(key: str) -> bool:
    return (
        key in _SECRET_HEADERS
        or key in _vendor_secrets()[0]
        or _SECRET_NAME.search(key) is not None
    )


def _secret_param(name: str) -> bool:
    return _SECRET_PARAM.match(name) is not None or name.lower() in _vendor_secrets()[1]


@functools.cache
def _vendor_secrets() -> tuple[frozenset[str], frozenset[str]]:
    """(header names, query parameters) that carry credentials at the vendors veilpix knows,
    as their adapters declare them: a vendor added with its own credential header is
    redacted in the log without a second list to keep in step."""
    known = adapters.vendors()
    headers = frozenset(h.lower() for v in known for h in v.auth_headers)
    params = frozenset(q.lower() for v in known for q in v.auth_query)
    return headers, params


@dataclass(frozen=True)
class OutboundImage:
    """One image in an outbound request: the bytes the app gave and what veilpix made of them.

    ``sanitized`` is None when the image could not be sanitized (the call is then blocked and
    ``error`` says why). ``filename`` is the file name the image was sent under (the neutral
    name veilpix gave a multipart file part or an upload, never the app's own). The log keeps
    only keyed fingerprints and facts, never the bytes.
    """

    original: bytes = field(repr=False)
    sanitized: SanitizedImage | None = None
    field: str = ""
    error: str | None = None
    filename: str | None = None


@dataclass(frozen=True, kw_only=True)
class Transfer:
    """Everything the log records about one outbound call before it is sent.

    Where: ``vendor``, ``url`` (credentials removed before storing), ``method``, ``model``,
    ``operation``, ``legal_entity``, ``region``, ``country`` (ISO 3166 alpha-2) and
    ``transfer_mechanism`` (e.g. "adequacy decision (EU-US DPF)", "SCCs"; when None the log's
    configured mechanism for the vendor is used). Who: ``app``, ``actor``, ``client`` (address
    of the caller, for the proxy), ``door`` (sdk, transport, gateway, intercept). Why:
    ``purpose``, ``legal_basis``, ``consent_ref``, ``subject_ref`` (the data subject; every
    field linked to a subject is stored encrypted under that subject's key and can be erased).
    What: ``images``, ``prompt`` (the text sent: prompts, message content, system
    instructions; stored as length and keyed fingerprint only), extra ``data_categories``
    ("prompt text", "system instructions", "document (PDF)", ...), ``request_bytes``,
    ``headers`` (stored with credentials redacted).
    ``controls_*``: the privacy controls applied, available only at account level, or not
    offered by the vendor. ``rule``: the policy rule that decided. ``retention``: a class name
    the operator's retention schedule understands.
    """

    vendor: str
    url: str
    method: str = "POST"
    model: str | None = None
    operation: str | None = None
    legal_entity: str | None = None
    region: str | None = None
    country: str | None = None
    transfer_mechanism: str | None = None
    app: str | None = None
    actor: str | None = None
    client: str | None = None
    door: str = "sdk"
    purpose: str | None = None
    legal_basis: str | None = None
    consent_ref: str | None = None
    subject_ref: str | None = None
    images: Sequence[OutboundImage] = ()
    prompt: str | None = field(default=None, repr=False)
    data_categories: Sequence[str] = ()
    request_bytes: int | None = None
    headers: Mapping[str, str] | None = field(default=None, repr=False)
    controls_applied: Sequence[str] = ()
    controls_account_level: Sequence[str] = ()
    controls_unavailable: Sequence[str] = ()
    rule: str = "allowed"
    retention: str = "standard"

    @property
    def host(self) -> str:
        try:
            return (urlsplit(self.url).hostname or "").lower()
        except ValueError:
            return ""


def image_facts(image: OutboundImage) -> ImageEntry:
    """The facts kept about one image: sizes, formats, what was found and done. No values of
    metadata (a GPS position or serial number is personal data), no plain hashes."""
    out: ImageEntry = {"field": scrub_secrets(image.field), "bytes_before": len(image.original)}
    if image.filename is not None:
        out["filename"] = scrub_secrets(image.filename)
    s = image.sanitized
    if s is None:
        out["error"] = scrub_secrets(image.error or "not sanitized")
        return out
    r = s.report
    removed: dict[str, int] = {}
    for part in r.removed:
        # "JPEG APP15 <vendor text>" -> "JPEG APP15": element names only, never the values
        # (a comment, an owner name or a vendor string can identify someone).
        kind = " ".join(part.container.split()[:2])
        removed[kind] = removed.get(kind, 0) + part.size
    unblurred = max(r.faces_found - r.faces_blurred, 0) if r.faces_checked else None
    out.update(
        {
            "format_before": r.format_in,
            "format_after": r.format_out,
            "media_type": s.media_type,
            "width_before": r.width_in,
            "height_before": r.height_in,
            "width_after": r.width_out,
            "height_after": r.height_out,
            "frames": r.frames_out,
            "bytes_after": len(s.data),
            "lossless": r.lossless,
            "metadata_found": r.categories(),
            "gps_removed": r.gps is not None or "gps" in r.categories(),
            "metadata_removed": dict(sorted(removed.items())),
            "faces_checked": r.faces_checked,
            "faces_found": r.faces_found if r.faces_checked else None,
            "faces_blurred": r.faces_blurred,
            "faces_unblurred": unblurred,
            "face_mode": r.face_mode,
            "downscaled": r.downscaled,
        }
    )
    return out


# The categories a call with images gets: any image, and an image sent without a face check.
IMAGE_CATEGORY, UNCHECKED_CATEGORY = "image", "image (faces not checked)"


def data_categories(transfer: Transfer, facts: Sequence[ImageEntry]) -> list[str]:
    """Categories of personal data in the call, derived from what was found plus the door's."""
    cats = set(transfer.data_categories)
    if facts:
        cats.add(IMAGE_CATEGORY)
    if any(f.get("faces_unblurred") for f in facts):
        cats.add("face image (unblurred)")
    if any(f.get("faces_blurred") for f in facts):
        cats.add("face image (blurred)")
    if any(f.get("faces_checked") is False for f in facts if "error" not in f):
        cats.add(UNCHECKED_CATEGORY)
    if transfer.prompt and "system instructions" not in cats:
        cats.add("prompt text")  # (a door that found both lists both itself)
    return sorted(cats)


def begin_body(
    t: Transfer, *, prompt: str | None, mechanisms: Mapping[str, str] | None = None
) -> BeginBody:
    """The body of the ``begin`` entry of ``t``, before the fields linked to a subject are
    added (sealed, or in the clear when no subject is named). ``prompt`` is the prompt as
    stored (see :func:`veilpix.audit._entry.well_formed`): only its length is kept here.
    ``mechanisms``: the transfer mechanism per vendor, for a transfer that names none."""
    images = [image_facts(img) for img in t.images]
    sent = [i.get("bytes_after") for i in images]
    what: What = {
        "categories": data_categories(t, images),
        "images": images,
        "image_count": len(images),
        "bytes_before": sum(i["bytes_before"] for i in images),
        "bytes_after": sum(int(b or 0) for b in sent),
        "request_bytes": t.request_bytes,
        "prompt": None if prompt is None else {"length": len(prompt)},
    }
    mechanism = clip_text(t.transfer_mechanism or (mechanisms or {}).get(t.vendor))
    c = clip_text  # every free text a door or an app hands in: short, one line
    return {
        "v": BODY_VERSION,
        "who": {"app": c(t.app), "actor": c(t.actor), "client": c(t.client), "door": t.door},
        "what": what,
        "where": {
            "vendor": t.vendor,
            "legal_entity": c(t.legal_entity),
            "model": c(t.model),
            "operation": c(t.operation),
            "method": t.method.upper(),
            "url": redact_url(t.url),
            "host": t.host,
            "region": c(t.region),
            "country": t.country.upper() if t.country else None,
            "transfer_mechanism": mechanism,
        },
        "why": {
            "purpose": c(t.purpose),
            "legal_basis": c(t.legal_basis),
            "consent": t.consent_ref is not None,
            "consent_ref": c(t.consent_ref),
            "subject_ref": None,
        },
        "controls": {
            "applied": sorted(t.controls_applied),
            "account_level": sorted(t.controls_account_level),
            "unavailable": sorted(t.controls_unavailable),
        },
        # values scrubbed with the whole entry when it is appended
        "headers": redact_headers(t.headers or {}, scrub=False),
        "rule": c(t.rule),
        "retention": c(t.retention),
    }
