"""The shape of a vendor adapter: plain, frozen data the core reads.

An adapter says, for one vendor: which hosts it serves (and which region, country and legal
entity each host means), how it authenticates (header names, so credentials can be redacted),
which endpoints carry images and where in the request they sit, what formats and sizes those
endpoints accept, which privacy controls exist (applied per request by veilpix, available
only at account level, or not offered at all), and how its errors look (:class:`ErrorShape`,
so a refusal by a proxy door reads like one of the vendor's own). Adapters hold no logic beyond matching; the
core (``veilpix.guard._guard``) does the work, so every door behaves the same.

JSON paths in :class:`ImageSlot` use a small dotted language: ``a.b`` walks objects,
``a[*]`` every array item, ``a[?type=image_url]`` only items whose ``type`` is that value,
and ``**`` any depth (used by vendors whose inputs are model-specific).

:class:`ModelField` says where a vendor's requests name the model (a JSON field, a form
field, or a part of the URL path); the core reads them for the transfer record of every door.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "GOOGLE_ERRORS",
    "OPENAI_ERRORS",
    "Control",
    "Endpoint",
    "ErrorShape",
    "ImageSlot",
    "ModelField",
    "Region",
    "Vendor",
]

SlotKind = Literal["multipart", "json", "raw"]
Encoding = Literal["data_uri", "base64", "url", "file_id", "bytes"]
ControlLevel = Literal["request", "account", "unavailable"]
ModelSource = Literal["json", "form", "path"]


@dataclass(frozen=True)
class Region:
    """A host of the vendor and what sending to it means for a transfer record."""

    name: str  # "global", "eu", "us", "europe-west4", ...
    hosts: tuple[str, ...]  # exact host names or fnmatch patterns ("*-aiplatform.googleapis.com")
    country: str  # ISO 3166-1 alpha-2 where requests are processed, as far as documented
    legal_entity: str  # the contracting entity for customers in the EU/EEA
    note: str = ""


@dataclass(frozen=True)
class ImageSlot:
    """Where an image (or a reference to one) sits in a request to an endpoint."""

    kind: SlotKind
    path: str  # multipart field name ("image", "image[]", "mask") or a JSON path; "" for raw
    encodings: frozenset[Encoding]
    role: Literal["image", "mask"] = "image"
    mime_path: str | None = None  # sibling JSON field naming the media type ("mimeType")
    fetched_by_vendor: bool = False  # a URL here makes the vendor download the original


@dataclass(frozen=True)
class Endpoint:
    """One API operation that can carry images."""

    operation: str  # "images.edit", "chat.completions", "files.upload", ...
    method: str
    path: str  # regular expression matched against the URL path (anchored at both ends)
    images: tuple[ImageSlot, ...]
    formats: frozenset[str] = frozenset({"image/jpeg", "image/png", "image/webp"})
    max_image_bytes: int | None = None
    max_images: int | None = None
    max_request_bytes: int | None = None
    accepts_data_uri: bool = False  # a fetched remote image may be embedded as a data: URI
    upload: bool = False  # a file-upload endpoint: the body (or part) is the file itself
    # Starts an upload whose bytes then arrive in chunks (byte ranges veilpix cannot sanitize
    # one by one): the core blocks it when it declares an image.
    chunked_start: bool = False
    # Headers that declare the size of a file sent in a later request (resumable uploads);
    # the core drops them, since only the sanitized file's size will be true.
    declared_length_headers: tuple[str, ...] = ()
    # Headers that carry the uploaded file's name (a raw-body upload's multipart filename);
    # the core replaces the name with a neutral one, as it does for multipart file parts.
    filename_headers: tuple[str, ...] = ()
    # Fields of a JSON body that name a file sent in another request (an upload's start:
    # OpenAI's uploads ``filename``, fal's ``file_name``, Gemini's ``file.display_name``);
    # dotted object keys. The core replaces each name with a neutral one, as for the others.
    filename_fields: tuple[str, ...] = ()
    note: str = ""

    def matches(self, method: str, path: str) -> bool:
        return method.upper() == self.method and re.fullmatch(self.path, path) is not None


@dataclass(frozen=True)
class ModelField:
    """Where a vendor's requests name the model, for the transfer record.

    ``source="json"``: ``where`` is a dotted path of object keys in a JSON body (``model``,
    ``image_request.model``). ``"form"``: ``where`` is a multipart form field; ``name.key``
    reads ``key`` from a field whose value is a JSON object (Ideogram's ``image_request``).
    ``"path"``: ``where`` is a regular expression with a ``(?P<model>...)`` group, matched
    against the whole URL path. ``paths`` (a regular expression over the whole URL path)
    limits a JSON or form field to the requests whose path matches. A vendor lists its
    fields in order of precedence: the first one the request fills is recorded.
    """

    source: ModelSource
    where: str
    paths: str | None = None

    def from_path(self, path: str) -> str | None:
        """The model this ``path`` field names in the URL path ``path``, or None."""
        if self.source != "path":
            return None
        found = re.fullmatch(self.where, path)
        return found.group("model") if found is not None else None

    def applies(self, path: str) -> bool:
        """Whether this JSON or form field is read for a request to URL path ``path``."""
        return self.paths is None or re.fullmatch(self.paths, path) is not None


@dataclass(frozen=True)
class Control:
    """A privacy control and how veilpix applies it.

    ``level="request"``: veilpix applies it on every matching call, by ``header`` (name, value)
    or ``json_field`` (top-level key, value), only on ``operations`` when given, and only when
    the policy asks for region ``when_region`` if that is set. A request control with neither
    header nor JSON field is a routing control: the call goes to the regional host the
    policy names (``Policy(region=...)``). ``"account"``:
    exists, but only as an organisation/project setting the operator must turn on.
    ``"unavailable"``: documented as not offered.
    """

    name: str
    level: ControlLevel
    description: str
    header: tuple[str, str] | None = None
    json_field: tuple[str, object] | None = None
    operations: frozenset[str] = frozenset()
    when_region: str | None = None
    source: str = ""


@dataclass(frozen=True)
class ErrorShape:
    """How the vendor's API words an error, so that a call veilpix refuses gets an answer the
    vendor's own SDK turns into its usual error type.

    ``body`` is the JSON body, in which a string that is exactly one of these placeholders
    (anywhere: in objects and arrays) stands for a value: ``"{status}"`` the HTTP status (a number), ``"{message}"`` veilpix's
    explanation, ``"{code}"`` veilpix's error code (``veilpix_blocked``, ``veilpix_busy``,
    ...) and ``"{kind}"`` the vendor's word for the status: ``kinds[status]``, else ``kind``.
    """

    body: Mapping[str, Any]
    kinds: Mapping[int, str] = field(default_factory=dict)
    kind: str = ""

    def render(self, status: int, message: str, code: str) -> dict[str, Any]:
        """The error body for ``status``, with ``message`` and ``code`` filled in."""
        values: dict[str, Any] = {
            "{status}": status,
            "{message}": message,
            "{code}": code,
            "{kind}": self.kinds.get(status, self.kind),
        }

        def fill(node: Any) -> Any:
            if isinstance(node, Mapping):
                return {key: fill(value) for key, value in node.items()}
            if isinstance(node, list | tuple):
                return [fill(value) for value in node]
            if isinstance(node, str):
                return values.get(node, node)
            return node

        filled: dict[str, Any] = fill(self.body)
        return filled


# OpenAI's error body, which most vendors' APIs (and SDKs) also read.
OPENAI_ERRORS = ErrorShape(
    {"error": {"message": "{message}", "type": "{kind}", "param": None, "code": "{code}"}},
    kinds={403: "veilpix_blocked"},
    kind="veilpix_error",
)
# Google's API error model (google.rpc.Status), shared by the Gemini API and Vertex AI.
GOOGLE_ERRORS = ErrorShape(
    {"error": {"code": "{status}", "message": "{message}", "status": "{kind}"}},
    kinds={
        400: "INVALID_ARGUMENT",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        408: "DEADLINE_EXCEEDED",
        413: "INVALID_ARGUMENT",
        503: "UNAVAILABLE",
    },
    kind="FAILED_PRECONDITION",
)


@dataclass(frozen=True)
class Vendor:
    """Everything veilpix knows about one vendor. See ``docs/vendors.md`` (generated)."""

    name: str  # registry key, LiteLLM-style prefix: "openai", "gemini", "bfl", ...
    display: str
    base_url: str  # the default API base, as the vendor's SDK uses it
    regions: tuple[Region, ...]
    auth_headers: tuple[str, ...]  # header names that carry credentials (redacted in logs)
    auth_query: tuple[str, ...] = ()  # query parameters that carry credentials (Gemini ?key=)
    endpoints: tuple[Endpoint, ...] = ()
    controls: tuple[Control, ...] = ()
    env_key: tuple[str, ...] = ()  # environment variables the SDK reads the key from
    env_base_url: str | None = None  # environment variable for a base-URL override
    # The URL path names the region too (Vertex: /locations/<region>/...), so moving a call
    # to another regional host alone would break it.
    path_names_region: bool = False
    # Where requests name the model, in order of precedence (see ModelField); none: the
    # record's model stays empty unless the door knows it.
    models: tuple[ModelField, ...] = ()
    # The shape of the vendor's error bodies, for the refusals the proxy doors answer with.
    # Presentation, not identity: left out of comparisons.
    error_shape: ErrorShape = field(default=OPENAI_ERRORS, repr=False, compare=False)
    sources: tuple[str, ...] = field(default=(), repr=False)

    def region_for(self, host: str) -> Region | None:
        key = ("region", host.lower())
        cache = self._lookups()
        found = cache.get(key, _UNKNOWN)
        if found is _UNKNOWN:
            found = next(
                (r for r in self.regions if any(fnmatch.fnmatchcase(key[1], p) for p in r.hosts)),
                None,
            )
            _remember(cache, key, found)
        return found  # type: ignore[return-value]

    def endpoint_for(self, method: str, path: str) -> Endpoint | None:
        key = (method.upper(), path)
        cache = self._lookups()
        found = cache.get(key, _UNKNOWN)
        if found is _UNKNOWN:
            found = next((e for e in self.endpoints if e.matches(method, path)), None)
            _remember(cache, key, found)
        return found  # type: ignore[return-value]

    def _lookups(self) -> dict[tuple[str, str], object]:
        """Answers of region_for/endpoint_for (called for every request, and the same
        hosts and paths come again and again). Kept outside the frozen fields."""
        try:
            return self.__dict__["_lookup_cache"]  # type: ignore[no-any-return]
        except KeyError:
            cache: dict[tuple[str, str], object] = {}
            object.__setattr__(self, "_lookup_cache", cache)
            return cache

    @property
    def host_patterns(self) -> tuple[str, ...]:
        return tuple(p for r in self.regions for p in r.hosts)


_LOOKUPS_KEPT = 1024
_UNKNOWN = object()


def _remember(cache: dict[tuple[str, str], object], key: tuple[str, str], value: object) -> None:
    if len(cache) >= _LOOKUPS_KEPT:  # paths carry ids (files/file-abc/content): stay bounded
        cache.clear()
    cache[key] = value
