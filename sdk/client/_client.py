"""``veilpix.Client`` and ``veilpix.AsyncClient``: image generation, editing and description
across AI vendors, with every request going through the veilpix guard.

>>> import veilpix
>>> with veilpix.Client(policy=veilpix.Policy(faces="blur"), log="audit.db") as client:
...     result = client.edit("openai/gpt-image-2", "add a hat", "photo.jpg")
...     result.images[0].save("hat.png")
...     result.removed        # {'gps': 1, 'device': 2, ...}: what left the photo before sending
...     result.record_ids     # the transfer-log records of the call

Models are LiteLLM-style ``vendor/model`` names (``openai/gpt-image-2``,
``gemini/gemini-3-pro-image``, ``stability/core``, ``bfl/flux-2-pro``,
``replicate/black-forest-labs/flux-kontext-pro``, ``fal/fal-ai/flux/dev``,
``anthropic/claude-opus-4-6``). Keys come from the vendors' usual environment variables
(``OPENAI_API_KEY``, ``GOOGLE_API_KEY`` / ``GEMINI_API_KEY``, ``ANTHROPIC_API_KEY``,
``STABILITY_API_KEY``, ``BFL_API_KEY``, ``REPLICATE_API_TOKEN``, ``FAL_KEY``) or
``api_keys={"openai": ...}``.

Every request to a vendor (submits, polls, cancels) is sent by one ``httpx2`` client whose
transport is a :class:`~veilpix.transports.httpx2.GuardTransport`: destination policy,
sanitizing of every image in the body, privacy controls and the write-ahead transfer log
apply as for any other door. Images are handed to the guard as the caller's bytes and
sanitized there, once.

Result images that the vendor returns as URLs (BFL, Replicate and fal CDNs) are downloaded
by a *separate*, plain client: those GETs carry no user data and no credentials (only a URL
the vendor just gave), go to CDN hosts no adapter claims, and are not transfers to record.
That client sends no API key, follows https only (plain http only to loopback, and only when
the vendor's own base URL is loopback), refuses private IP literals and caps the size.

veilpix never modifies what vendors return: result bytes are handed over exactly as
received, including any provenance they carry (C2PA manifests, IPTC/XMP digital source type
``trainedAlgorithmicMedia``), which :attr:`GeneratedImage.provenance` reports.
"""

from __future__ import annotations

import dataclasses
import io
import ipaddress
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

import httpx2

from veilpix._errors import (
    ConfigError,
    VendorError,
    VendorRateLimited,
    VendorUnavailable,
)
from veilpix.client._plans import (
    USER_AGENT,
    Call,
    Download,
    Fetched,
    Http,
    InputImage,
    Output,
    Plan,
    Reply,
    Sleep,
    VendorSpec,
    error_for,
    fal_key,
    parse_size,
    spec_for,
)
from veilpix.formats._sniff import MEDIA_TYPES
from veilpix.guard._guard import Context, Guard, _is_loopback
from veilpix.image._report import EXTENSIONS
from veilpix.transports._common import CONTEXT
from veilpix.transports.httpx2 import AsyncGuardTransport, GuardTransport

if TYPE_CHECKING:
    from PIL import Image

    from veilpix._policy import Policy
    from veilpix.audit._log import AuditLog
    from veilpix.guard._guard import Receipt

__all__ = ["AsyncClient", "Client", "GeneratedImage", "Result", "detect_provenance"]

ImageInput = Any  # bytes | str | os.PathLike | SanitizedImage / GeneratedImage | a list of them

_CONTEXT = CONTEXT  # request extension carrying the per-call Context
_MAX_RETRY_AFTER = 60.0  # a longer Retry-After is not waited for: the error is raised
_DEFAULT_DOWNLOAD_CAP = 64 * 1024 * 1024
# Google marks images from its image models with SynthID, an invisible watermark in the
# pixels; no public detector exists, so veilpix can only say that it is expected.
_SYNTHID = "SynthID (Google's invisible watermark: expected, not detectable by veilpix)"
_GOOGLE_MODELS = re.compile(r"gemini|imagen|nano-banana", re.IGNORECASE)


# -- provenance ----------------------------------------------------------------------------------

_C2PA_BMFF_UUID = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")
# The IPTC NewsCodes digital source types (cv.iptc.org/newscodes/digitalsourcetype/). Matched
# as whole terms, longest first: in a CBOR-encoded C2PA manifest the next byte after a term
# can be a letter, so "any letters" would run on into the next key.
_SOURCE_TERMS = sorted(
    (
        "trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia", "algorithmicMedia",
        "compositeSynthetic", "composite", "digitalCapture", "computationalCapture",
        "negativeFilm", "positiveFilm", "print", "humanEdits", "minorHumanEdits",
        "algorithmicallyEnhanced", "digitalCreation", "dataDrivenMedia", "screenCapture",
        "virtualRecording", "compositeCapture", "digitalArt",
    ),
    key=len,
    reverse=True,
)  # fmt: skip
_DIGITAL_SOURCE = re.compile(
    rb"digitalsourcetype/(" + b"|".join(t.encode() for t in _SOURCE_TERMS) + rb")"
)


def _jpeg_c2pa(data: bytes) -> bool:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker in (0xDA, 0xD9):  # image data starts: no more metadata segments
            return False
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        payload = data[i + 4 : i + 2 + length]
        if (
            marker == 0xEB
            and payload[:2] == b"JP"
            and b"jumb" in payload[:64]
            and (b"c2pa" in payload[:160])
        ):
            return True
        i += 2 + length
    return False


def _png_c2pa(data: bytes) -> bool:
    i = 8
    while i + 8 <= len(data):
        length = int.from_bytes(data[i : i + 4], "big")
        kind = data[i + 4 : i + 8]
        if kind == b"caBX":
            return True
        if kind == b"IEND":
            return False
        i += 12 + length
    return False


def _riff_c2pa(data: bytes) -> bool:
    i = 12
    while i + 8 <= len(data):
        kind = data[i : i + 4]
        length = int.from_bytes(data[i + 4 : i + 8], "little")
        if kind == b"C2PA":
            return True
        i += 8 + length + (length & 1)
    return False


def _bmff_c2pa(data: bytes) -> bool:
    i = 0
    while i + 8 <= len(data):
        size = int.from_bytes(data[i : i + 4], "big")
        kind = data[i + 4 : i + 8]
        header = 8
        if size == 1 and i + 16 <= len(data):
            size, header = int.from_bytes(data[i + 8 : i + 16], "big"), 16
        elif size == 0:
            size = len(data) - i
        if kind == b"uuid" and data[i + header : i + header + 16] == _C2PA_BMFF_UUID:
            return True
        if size < header:
            return False
        i += size
    return False


def detect_provenance(data: bytes) -> list[str]:
    """The provenance marks in an image, as veilpix can see them without changing anything:

    * ``"c2pa"``: a C2PA manifest store (JUMBF in a JPEG APP11 segment, a PNG ``caBX``
      chunk, a RIFF/WebP ``C2PA`` chunk, an ISO-BMFF ``uuid`` box, or a C2PA manifest store
      box anywhere in other formats);
    * ``"digital_source_type:<value>"``: an IPTC digital source type (in XMP or inside the
      C2PA manifest), e.g. ``trainedAlgorithmicMedia`` for generated images.

    Invisible watermarks (Google's SynthID) live in the pixels and cannot be detected here.
    """
    marks: list[str] = []
    head = data[:16]
    if head[:3] == b"\xff\xd8\xff":
        found = _jpeg_c2pa(data)
    elif head[:8] == b"\x89PNG\r\n\x1a\n":
        found = _png_c2pa(data)
    elif head[:4] == b"RIFF":
        found = _riff_c2pa(data)
    elif head[4:8] == b"ftyp":
        found = _bmff_c2pa(data)
    else:
        found = False
    # A C2PA manifest store box: 'jumd' followed by its type UUID, which begins with "c2pa".
    if found or b"jumdc2pa" in data:
        marks.append("c2pa")
    values = dict.fromkeys(m.group(1).decode("ascii") for m in _DIGITAL_SOURCE.finditer(data))
    marks += [f"digital_source_type:{value}" for value in values]
    return marks


def _media_type(data: bytes, declared: str | None) -> str:
    from veilpix._errors import UnsupportedImage
    from veilpix.formats._sniff import sniff

    try:
        return MEDIA_TYPES[sniff(data)]
    except UnsupportedImage:
        return (declared or "application/octet-stream").split(";", 1)[0].strip().lower()


# -- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedImage:
    """One image a vendor returned, exactly as it returned it (veilpix changes nothing).

    ``provenance`` lists the marks found in it (see :func:`detect_provenance`);
    ``invisible_watermark`` names a watermark the vendor documents but nobody outside can
    detect (Google's SynthID); ``url`` is where it was downloaded from, when the vendor gave
    a URL (such URLs expire: BFL's after 10 minutes)."""

    data: bytes = field(repr=False)
    media_type: str
    url: str | None = field(default=None, repr=False)
    provenance: list[str] = field(default_factory=list)
    invisible_watermark: str | None = None

    @property
    def extension(self) -> str:
        """The usual file extension for ``media_type`` (with the dot)."""
        return EXTENSIONS.get(self.media_type, ".bin")

    @property
    def has_provenance(self) -> bool:
        return bool(self.provenance)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the bytes unchanged to ``path`` (a folder gets ``image<ext>`` inside it)."""
        target = Path(path)
        if target.is_dir():
            target = target / f"image{self.extension}"
        target.write_bytes(self.data)
        return target

    def to_pil(self) -> Image.Image:
        """The image as a loaded Pillow image."""
        from PIL import Image

        im = Image.open(io.BytesIO(self.data))
        im.load()
        return im


@dataclass(frozen=True)
class Result:
    """What one :class:`Client` call produced.

    ``images`` and ``text`` are the vendor's output; ``raw`` its final JSON answer.
    ``record_ids`` are the transfer-log records of every request the call made (the submit
    first, then polls); ``removed`` counts the metadata categories veilpix found and removed
    from the images sent (from the guard's receipts, also in ``receipts``).
    ``finish_reason`` is the vendor's own (Stability ``CONTENT_FILTERED`` means the vendor
    blurred its image). ``request_id`` is the vendor's job or request id.
    """

    vendor: str
    model: str
    operation: str
    images: list[GeneratedImage]
    text: str | None
    record_ids: list[str]
    removed: dict[str, int]
    raw: Any = field(repr=False)
    finish_reason: str | None = None
    request_id: str | None = None
    receipts: list[Receipt] = field(default_factory=list, repr=False)

    @property
    def image(self) -> GeneratedImage:
        """The first image; raises :class:`VendorError` (with any text the vendor sent
        instead) when there is none."""
        if not self.images:
            raise VendorError(
                f"{self.vendor}/{self.model} returned no image"
                + (f": {self.text[:300]}" if self.text else ""),
                vendor=self.vendor,
                vendor_message=self.text,
                request_id=self.request_id,
                hint="the text is the vendor's reply; change the prompt or the model",
            )
        return self.images[0]

    @property
    def record_id(self) -> str | None:
        """The record of the first request (the one carrying the prompt and images)."""
        return self.record_ids[0] if self.record_ids else None

    @property
    def provenance(self) -> list[str]:
        """Every provenance mark found in any of the images."""
        return list(dict.fromkeys(m for img in self.images for m in img.provenance))


# -- what both clients share ---------------------------------------------------------------------


@dataclass
class _State:
    started: float
    receipts: list[Receipt] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)


def _read_image(value: Any, what: str) -> InputImage:
    from veilpix.formats._sniff import sniff

    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    elif isinstance(value, str | os.PathLike):
        try:
            data = Path(value).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the {what} file {os.fspath(value)!r}: {exc.strerror or exc}",
                hint="pass the image as bytes or the path of an image file",
            ) from exc
    elif isinstance(getattr(value, "data", None), bytes):  # SanitizedImage, GeneratedImage
        data = value.data
    else:
        raise ConfigError(
            f"the {what} must be bytes, a file path or an image object, got {type(value).__name__}",
            hint="veilpix sends image bytes (and sanitizes them); URLs are not accepted here",
        )
    return InputImage(data, MEDIA_TYPES[sniff(data)])  # UnsupportedImage for anything else


def _read_images(value: Any) -> tuple[InputImage, ...]:
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        if not value:
            raise ConfigError("the image list is empty")
        return tuple(_read_image(v, f"image #{i + 1}") for i, v in enumerate(value))
    return (_read_image(value, "image"),)


class _Base:
    """Configuration and the pure parts of running a call, shared by both clients."""

    def __init__(
        self,
        guard: Guard,
        *,
        owns_log: bool,
        api_keys: Mapping[str, str] | None,
        base_urls: Mapping[str, str] | None,
        timeout: float,
        max_retries: int,
        poll_interval: float,
        poll_timeout: float,
        max_download_bytes: int,
    ) -> None:
        if min(timeout, poll_interval, poll_timeout, max_download_bytes) <= 0:
            raise ConfigError(
                "timeout, poll_interval, poll_timeout and max_download_bytes must be above 0"
            )
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"max_retries must be a whole number >= 0, got {max_retries!r}")
        self.guard = guard
        self._owns_log = owns_log
        self._api_keys = dict(api_keys or {})
        self._base_urls: dict[str, str] = {}
        for name, url in (base_urls or {}).items():
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"base_urls[{name!r}] must be an http(s) URL, got {url!r}")
            self._base_urls[name] = url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.poll_interval = poll_interval
        self.poll_timeout = poll_timeout
        self.max_download_bytes = max_download_bytes
        self._timeout = httpx2.Timeout(timeout, connect=min(timeout, 15.0))

    # -- building a call ------------------------------------------------------------------------

    def _key(self, spec: VendorSpec, display: str) -> str:
        key = self._api_keys.get(spec.name)
        if not key:
            key = fal_key(os.environ) if spec.name == "fal" else None
            key = key or next((os.environ[v] for v in spec.env if os.environ.get(v)), None)
        if not key:
            names = " or ".join(spec.env)
            raise ConfigError(
                f"no API key for {display}: {names} is not set",
                hint=f"export {spec.env[0]}=..., or pass Client(api_keys={{{spec.name!r}: ...}})",
            )
        return key

    def _call(
        self,
        operation: str,
        model: str,
        prompt: str,
        *,
        images: Any = None,
        mask: Any = None,
        size: str | tuple[int, int] | None = None,
        n: int = 1,
        params: Mapping[str, Any],
    ) -> tuple[VendorSpec, Call]:
        from veilpix import adapters

        spec, vendor_model = spec_for(model, operation)
        if not isinstance(prompt, str):
            raise ConfigError(f"prompt must be a string, got {type(prompt).__name__}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"n must be a whole number >= 1, got {n!r}")
        inputs = _read_images(images)
        if operation != "generate" and not inputs:
            raise ConfigError(f"{operation} needs at least one image")
        display = adapters.get(spec.name).display
        extra = dict(params)
        headers = extra.pop("extra_headers", None) or {}
        image_field = extra.pop("image_field", None)
        mask_field = extra.pop("mask_field", None)
        base = self._base_urls.get(spec.name, spec.base_url)
        trusted = {urlsplit(base).hostname or ""}
        trusted |= {
            host.rsplit(":", 1)[0] if host.count(":") == 1 else host
            for host, name in self.guard.policy.vendor_hosts.items()
            if name == spec.name
        }
        call = Call(
            vendor=spec.name,
            display=display,
            model=vendor_model,
            operation=operation,
            prompt=prompt,
            base_url=base,
            auth=spec.auth(self._key(spec, display)),
            images=inputs,
            mask=_read_image(mask, "mask") if mask is not None else None,
            size=parse_size(size),
            n=n,
            params=extra,
            extra_headers=tuple((str(k), str(v)) for k, v in dict(headers).items()),
            image_field=image_field,
            mask_field=mask_field,
            poll_interval=self.poll_interval,
            poll_timeout=self.poll_timeout,
            trusted_hosts=frozenset(h.lower() for h in trusted if h),
        )
        return spec, call

    def _context(self, call: Call, step: Http) -> Context:
        return dataclasses.replace(
            self.guard.context, door="sdk", model=call.model, prompt=step.prompt
        )

    def _retry_delay(self, error: VendorError, attempt: int) -> float | None:
        """Seconds to wait before retrying, or None when ``error`` is final."""
        if attempt >= self.max_retries:
            return None
        if isinstance(error, VendorRateLimited):
            if error.retry_after is not None:
                return error.retry_after if error.retry_after <= _MAX_RETRY_AFTER else None
        elif not isinstance(error, VendorUnavailable):
            return None
        return min(0.5 * 2.0**attempt, 8.0) * (1.0 - 0.25 * random.random())

    @staticmethod
    def _transport_error(call: Call, exc: httpx2.TransportError) -> VendorUnavailable:
        what = "timed out" if isinstance(exc, httpx2.TimeoutException) else "failed"
        error = VendorUnavailable(
            f"the request to {call.display} {what}: {type(exc).__name__}: {exc}",
            vendor=call.vendor,
        )
        error.__cause__ = exc
        return error

    @staticmethod
    def _reply(call: Call, response: httpx2.Response, state: _State) -> Reply | VendorError:
        receipt = response.extensions.get("veilpix_receipt")
        if receipt is not None:
            state.receipts.append(receipt)
        headers = {k.lower(): v for k, v in response.headers.items()}
        rid = next((headers[h] for h in ("x-request-id", "request-id") if h in headers), None)
        if rid:
            state.request_ids.append(rid)
        if 200 <= response.status_code < 300:
            return Reply(response.status_code, headers, response.content)
        return error_for(call, response.status_code, headers, response.content)

    def _check_download(self, call: Call, url: str) -> None:
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
        except ValueError:
            parts, host = None, ""
        loopback_ok = _is_loopback(urlsplit(call.base_url).hostname or "")
        ok = parts is not None and bool(host) and (
            parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(host) and loopback_ok)
        )  # fmt: skip
        if ok:
            try:
                ip = ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                ip = None
            if ip is not None and not ip.is_global and not (ip.is_loopback and loopback_ok):
                ok = False
        if not ok:
            raise VendorError(
                f"{call.display} gave a result URL veilpix will not download "
                f"({url[:120]!r}): only https to public hosts",
                vendor=call.vendor,
            )

    def _check_size(self, call: Call, size: int, client: str) -> None:
        """Stop a result download that grows past ``max_download_bytes``."""
        if size > self.max_download_bytes:
            raise VendorError(
                f"the result from {call.display} is over {self.max_download_bytes:,} bytes",
                vendor=call.vendor,
                hint=f"raise {client}(max_download_bytes=...)",
            )

    def _checked_image(self, call: Call, url: str, data: bytes, ctype: str | None) -> Fetched:
        from veilpix.formats._sniff import looks_like_image

        if not looks_like_image(data) and not (ctype or "").startswith(("image/", "video/")):
            raise VendorError(
                f"the result URL from {call.display} did not return an image "
                f"({ctype or 'no content type'})",
                vendor=call.vendor,
            )
        return Fetched(data, ctype)

    def _download_error(self, call: Call, url: str, status: int) -> VendorError:
        cls = VendorUnavailable if status >= 500 or status == 429 else VendorError
        return cls(
            f"downloading the result from {call.display} gave HTTP {status} "
            f"({urlsplit(url).hostname})",
            vendor=call.vendor,
            status=status,
            hint="result URLs expire (BFL: 10 minutes, fal: per X-Fal-Object-Lifecycle); "
            "run the call again",
        )

    def _result(self, call: Call, out: Output, state: _State) -> Result:
        mark = _SYNTHID if call.vendor == "gemini" or _GOOGLE_MODELS.search(call.model) else None
        images = [
            GeneratedImage(
                data=img.data,
                media_type=_media_type(img.data, img.media_type),
                url=img.url,
                provenance=detect_provenance(img.data),
                invisible_watermark=mark,
            )
            for img in out.images
        ]
        removed: dict[str, int] = {}
        for receipt in state.receipts:
            for cat, count in receipt.removed.items():
                removed[cat] = removed.get(cat, 0) + count
        return Result(
            vendor=call.vendor,
            model=call.model,
            operation=call.operation,
            images=images,
            text=out.text,
            record_ids=[r.record_id for r in state.receipts if r.record_id],
            removed=removed,
            raw=out.raw,
            finish_reason=out.finish_reason,
            request_id=out.job_id or (state.request_ids[0] if state.request_ids else None),
            receipts=list(state.receipts),
        )


def _make_guard(
    policy: Policy | None,
    log: AuditLog | str | os.PathLike[str] | None,
    context: Context | None,
) -> tuple[Guard, bool]:
    from veilpix.audit._log import AuditLog

    return Guard(policy, log, context=context), not isinstance(log, AuditLog)


# -- the sync client -------------------------------------------------------------------------


class Client:
    """Generate, edit and describe images with AI vendors, through veilpix.

    ``policy`` and ``log`` (an :class:`~veilpix.AuditLog` or its path; None for the default
    log) configure the guard every request goes through; ``context`` is recorded with every
    call (the call's model and prompt are added per call). ``api_keys`` and ``base_urls``
    map vendor names ("openai", "gemini", "anthropic", "stability", "bfl", "replicate",
    "fal") to a key and an API base URL (a gateway or a test server; map its host with
    ``Policy(vendor_hosts=...)``). ``timeout`` is per HTTP request (seconds),
    ``poll_timeout`` bounds an asynchronous job, ``poll_interval`` is the pause between
    polls. ``max_retries`` retries 429 (after ``Retry-After``), 408, 5xx and connection
    errors with exponential backoff; a blocked request (:class:`~veilpix.RequestBlocked`)
    and other 4xx are never retried. ``transport`` is the inner httpx2 transport that
    finally sends (default: httpx2's own); ``download_transport`` the one used for result
    downloads; ``sleep`` replaces ``time.sleep`` (tests).

    Methods return a :class:`Result`; vendor failures raise
    :class:`~veilpix.VendorError` subclasses carrying the vendor's message.
    """

    def __init__(
        self,
        policy: Policy | None = None,
        log: AuditLog | str | os.PathLike[str] | None = None,
        *,
        context: Context | None = None,
        api_keys: Mapping[str, str] | None = None,
        base_urls: Mapping[str, str] | None = None,
        timeout: float = 300.0,
        max_retries: int = 2,
        poll_interval: float = 1.0,
        poll_timeout: float = 600.0,
        transport: httpx2.BaseTransport | None = None,
        download_transport: httpx2.BaseTransport | None = None,
        max_download_bytes: int = _DEFAULT_DOWNLOAD_CAP,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        guard, owns_log = _make_guard(policy, log, context)
        self._base = _Base(
            guard,
            owns_log=owns_log,
            api_keys=api_keys,
            base_urls=base_urls,
            timeout=timeout,
            max_retries=max_retries,
            poll_interval=poll_interval,
            poll_timeout=poll_timeout,
            max_download_bytes=max_download_bytes,
        )
        self.guard = guard
        self._sleep = sleep or time.sleep
        self._http = httpx2.Client(
            transport=GuardTransport(transport, guard=guard),
            timeout=self._base._timeout,
            follow_redirects=False,
        )
        self._download = httpx2.Client(
            transport=download_transport or httpx2.HTTPTransport(),
            timeout=self._base._timeout,
            follow_redirects=False,
        )

    # -- the public operations ----------------------------------------------------------------

    def generate(
        self,
        model: str,
        prompt: str,
        *,
        size: str | tuple[int, int] | None = None,
        n: int = 1,
        **vendor_params: Any,
    ) -> Result:
        """Generate images from ``prompt`` with ``model`` ("vendor/model"). ``size`` is
        "WxH", (W, H), an aspect ratio "16:9" or a vendor label ("2K", "square_hd"), mapped
        to each vendor's own parameter; other keyword arguments go to the vendor as they are
        (``extra_headers={...}`` adds HTTP headers)."""
        spec, call = self._base._call("generate", model, prompt, size=size, n=n,
                                      params=vendor_params)  # fmt: skip
        return self._run(spec, call)

    def edit(
        self,
        model: str,
        prompt: str,
        image: ImageInput,
        *,
        mask: ImageInput | None = None,
        size: str | tuple[int, int] | None = None,
        n: int = 1,
        **vendor_params: Any,
    ) -> Result:
        """Edit ``image`` (bytes, a path, a SanitizedImage or GeneratedImage, or a list of
        them) as ``prompt`` says. The images are sanitized by the guard on the way out.
        For Replicate and fal, ``image_field=`` / ``mask_field=`` name the model's inputs
        when veilpix does not know them."""
        spec, call = self._base._call("edit", model, prompt, images=image, mask=mask,
                                      size=size, n=n, params=vendor_params)  # fmt: skip
        return self._run(spec, call)

    def describe(
        self,
        model: str,
        image: ImageInput,
        prompt: str = "Describe this image.",
        **vendor_params: Any,
    ) -> Result:
        """Ask a vision model about ``image`` (or a list of images); the answer is in
        ``Result.text``."""
        spec, call = self._base._call("describe", model, prompt, images=image,
                                      params=vendor_params)  # fmt: skip
        return self._run(spec, call)

    # -- plumbing -------------------------------------------------------------------------------

    def _run(self, spec: VendorSpec, call: Call) -> Result:
        plan: Plan = spec.plans[call.operation](call)
        state = _State(started=time.monotonic())
        answer: Any = None
        try:
            while True:
                step = plan.send(answer)
                if isinstance(step, Http):
                    answer = self._request(call, step, state)
                elif isinstance(step, Sleep):
                    self._sleep(step.seconds)
                    answer = time.monotonic() - state.started
                else:
                    answer = self._fetch(call, step)
        except StopIteration as stop:
            return self._base._result(call, stop.value, state)
        finally:
            plan.close()

    def _request(self, call: Call, step: Http, state: _State) -> Reply | None:
        base = self._base
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    step.method,
                    step.url,
                    headers=list(step.headers),
                    content=step.body or None,
                    extensions={_CONTEXT: base._context(call, step)},
                )
            except httpx2.TransportError as exc:
                outcome: Reply | VendorError = base._transport_error(call, exc)
            else:
                outcome = base._reply(call, response, state)
            if isinstance(outcome, Reply):
                return outcome
            if step.optional:
                return None
            delay = base._retry_delay(outcome, attempt)
            if delay is None:
                raise outcome
            self._sleep(delay)
            attempt += 1

    def _fetch(self, call: Call, step: Download) -> Fetched:
        base = self._base
        attempt = 0
        while True:
            try:
                return self._fetch_once(call, step.url)
            except VendorError as error:
                delay = base._retry_delay(error, attempt)
                if delay is None:
                    raise
                self._sleep(delay)
                attempt += 1

    def _fetch_once(self, call: Call, url: str) -> Fetched:
        base = self._base
        for _ in range(4):  # the URL and up to 3 redirects, each checked
            base._check_download(call, url)
            try:
                with self._download.stream(
                    "GET", url, headers={"User-Agent": USER_AGENT, "Accept": "image/*, */*;q=0.5"}
                ) as resp:
                    if resp.is_redirect and "location" in resp.headers:
                        url = urljoin(url, resp.headers["location"])
                        continue
                    if resp.status_code != 200:
                        raise base._download_error(call, url, resp.status_code)
                    chunks, size = [], 0
                    for chunk in resp.iter_bytes():
                        size += len(chunk)
                        base._check_size(call, size, "Client")
                        chunks.append(chunk)
                    ctype = resp.headers.get("content-type")
            except httpx2.TransportError as exc:
                raise base._transport_error(call, exc) from exc
            finally:
                self._download.cookies.clear()
            return base._checked_image(call, url, b"".join(chunks), ctype)
        raise VendorError(f"too many redirects downloading the result from {call.display}",
                          vendor=call.vendor)  # fmt: skip

    def close(self) -> None:
        """Close the HTTP clients, and the transfer log when the Client opened it."""
        self._http.close()
        self._download.close()
        if self._base._owns_log:
            self.guard.log.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the async client ------------------------------------------------------------------------


class AsyncClient:
    """The asynchronous twin of :class:`Client` (same arguments; ``transport`` and
    ``download_transport`` are ``httpx2.AsyncBaseTransport``; ``sleep`` is an async
    function). The guard's CPU work runs in a worker thread."""

    def __init__(
        self,
        policy: Policy | None = None,
        log: AuditLog | str | os.PathLike[str] | None = None,
        *,
        context: Context | None = None,
        api_keys: Mapping[str, str] | None = None,
        base_urls: Mapping[str, str] | None = None,
        timeout: float = 300.0,
        max_retries: int = 2,
        poll_interval: float = 1.0,
        poll_timeout: float = 600.0,
        transport: httpx2.AsyncBaseTransport | None = None,
        download_transport: httpx2.AsyncBaseTransport | None = None,
        max_download_bytes: int = _DEFAULT_DOWNLOAD_CAP,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        guard, owns_log = _make_guard(policy, log, context)
        self._base = _Base(
            guard,
            owns_log=owns_log,
            api_keys=api_keys,
            base_urls=base_urls,
            timeout=timeout,
            max_retries=max_retries,
            poll_interval=poll_interval,
            poll_timeout=poll_timeout,
            max_download_bytes=max_download_bytes,
        )
        self.guard = guard
        self._sleep = sleep
        self._http = httpx2.AsyncClient(
            transport=AsyncGuardTransport(transport, guard=guard),
            timeout=self._base._timeout,
            follow_redirects=False,
        )
        self._download = httpx2.AsyncClient(
            transport=download_transport or httpx2.AsyncHTTPTransport(),
            timeout=self._base._timeout,
            follow_redirects=False,
        )

    async def generate(
        self,
        model: str,
        prompt: str,
        *,
        size: str | tuple[int, int] | None = None,
        n: int = 1,
        **vendor_params: Any,
    ) -> Result:
        """See :meth:`Client.generate`."""
        spec, call = self._base._call("generate", model, prompt, size=size, n=n,
                                      params=vendor_params)  # fmt: skip
        return await self._run(spec, call)

    async def edit(
        self,
        model: str,
        prompt: str,
        image: ImageInput,
        *,
        mask: ImageInput | None = None,
        size: str | tuple[int, int] | None = None,
        n: int = 1,
        **vendor_params: Any,
    ) -> Result:
        """See :meth:`Client.edit`."""
        spec, call = self._base._call("edit", model, prompt, images=image, mask=mask,
                                      size=size, n=n, params=vendor_params)  # fmt: skip
        return await self._run(spec, call)

    async def describe(
        self,
        model: str,
        image: ImageInput,
        prompt: str = "Describe this image.",
        **vendor_params: Any,
    ) -> Result:
        """See :meth:`Client.describe`."""
        spec, call = self._base._call("describe", model, prompt, images=image,
                                      params=vendor_params)  # fmt: skip
        return await self._run(spec, call)

    async def _pause(self, seconds: float) -> None:
        if self._sleep is not None:
            await self._sleep(seconds)
        else:
            import anyio

            await anyio.sleep(seconds)

    async def _run(self, spec: VendorSpec, call: Call) -> Result:
        plan: Plan = spec.plans[call.operation](call)
        state = _State(started=time.monotonic())
        answer: Any = None
        try:
            while True:
                step = plan.send(answer)
                if isinstance(step, Http):
                    answer = await self._request(call, step, state)
                elif isinstance(step, Sleep):
                    await self._pause(step.seconds)
                    answer = time.monotonic() - state.started
                else:
                    answer = await self._fetch(call, step)
        except StopIteration as stop:
            return self._base._result(call, stop.value, state)
        finally:
            plan.close()

    async def _request(self, call: Call, step: Http, state: _State) -> Reply | None:
        base = self._base
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    step.method,
                    step.url,
                    headers=list(step.headers),
                    content=step.body or None,
                    extensions={_CONTEXT: base._context(call, step)},
                )
            except httpx2.TransportError as exc:
                outcome: Reply | VendorError = base._transport_error(call, exc)
            else:
                outcome = base._reply(call, response, state)
            if isinstance(outcome, Reply):
                return outcome
            if step.optional:
                return None
            delay = base._retry_delay(outcome, attempt)
            if delay is None:
                raise outcome
            await self._pause(delay)
            attempt += 1

    async def _fetch(self, call: Call, step: Download) -> Fetched:
        base = self._base
        attempt = 0
        while True:
            try:
                return await self._fetch_once(call, step.url)
            except VendorError as error:
                delay = base._retry_delay(error, attempt)
                if delay is None:
                    raise
                await self._pause(delay)
                attempt += 1

    async def _fetch_once(self, call: Call, url: str) -> Fetched:
        base = self._base
        for _ in range(4):
            base._check_download(call, url)
            try:
                async with self._download.stream(
                    "GET", url, headers={"User-Agent": USER_AGENT, "Accept": "image/*, */*;q=0.5"}
                ) as resp:
                    if resp.is_redirect and "location" in resp.headers:
                        url = urljoin(url, resp.headers["location"])
                        continue
                    if resp.status_code != 200:
                        raise base._download_error(call, url, resp.status_code)
                    chunks, size = [], 0
                    async for chunk in resp.aiter_bytes():
                        size += len(chunk)
                        base._check_size(call, size, "AsyncClient")
                        chunks.append(chunk)
                    ctype = resp.headers.get("content-type")
            except httpx2.TransportError as exc:
                raise base._transport_error(call, exc) from exc
            finally:
                self._download.cookies.clear()
            return base._checked_image(call, url, b"".join(chunks), ctype)
        raise VendorError(f"too many redirects downloading the result from {call.display}",
                          vendor=call.vendor)  # fmt: skip

    async def aclose(self) -> None:
        """Close the HTTP clients, and the transfer log when the client opened it."""
        await self._http.aclose()
        await self._download.aclose()
        if self._base._owns_log:
            self.guard.log.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
