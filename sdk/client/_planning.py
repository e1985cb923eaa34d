"""The pieces :class:`veilpix.Client`'s plans are built from (``veilpix.client.plans``).

Requests: the common headers (``User-Agent``, ``Accept``, the key, the caller's extra
headers), JSON and multipart bodies. Answers: JSON bodies, base64 images, result images given
as data URIs, URLs or bare base64. Jobs: the check that a URL a vendor says to poll is the
vendor's own (it gets the API key), and the poller that waits between polls and gives up.
Images go out as the caller's bytes: the guard on the client's transport sanitizes them on
the way (and fixes the media-type fields beside them), so nothing here touches an image.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Generator, Mapping, Sequence
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from veilpix import __version__, adapters
from veilpix._errors import ConfigError, RequestError, VendorError, VendorTimeout
from veilpix.client._steps import (
    Call,
    Download,
    Fetched,
    Http,
    InputImage,
    OutImage,
    Reply,
    Sleep,
    Step,
)
from veilpix.client._vendor_errors import request_id
from veilpix.codec import Part, build_multipart, parse_data_uri

__all__ = [
    "USER_AGENT",
    "Poller",
    "as_dict",
    "bearer",
    "check_followed",
    "decode_b64",
    "headers_for",
    "http_get",
    "image_ref",
    "is_ref",
    "no_mask",
    "one_image",
    "place_images",
    "post_json",
    "post_multipart",
    "ratio_for",
    "read_json",
]

USER_AGENT = f"veilpix-client/{__version__}"


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    """``Authorization: Bearer <key>`` (OpenAI, Stability, Replicate)."""
    return (("Authorization", f"Bearer {key}"),)


def ratio_for(call: Call, allowed: Sequence[str]) -> str:
    """The requested size as one of the aspect ratios a vendor takes."""
    assert call.size is not None
    ratio = call.size.as_ratio
    if ratio is None or ratio not in allowed:
        raise ConfigError(
            f"{call.display} takes an aspect ratio, not size={str(call.size)!r}",
            hint=f"use one of {', '.join(allowed)} (or pass the vendor's own parameter)",
        )
    return ratio


def headers_for(call: Call, content_type: str | None = None) -> tuple[tuple[str, str], ...]:
    out = [("Accept", "application/json"), ("User-Agent", USER_AGENT), *call.auth]
    if content_type is not None:
        out.append(("Content-Type", content_type))
    out += call.extra_headers
    return tuple(out)


def json_bytes(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def post_json(call: Call, url: str, doc: Any, *, extra: Sequence[tuple[str, str]] = ()) -> Http:
    headers = headers_for(call, "application/json") + tuple(extra)
    return Http("POST", url, headers, json_bytes(doc), prompt=call.prompt or None)


def http_get(call: Call, url: str) -> Http:
    return Http("GET", url, headers_for(call))


def read_json(call: Call, reply: Reply) -> Any:
    try:
        return json.loads(reply.body)
    except ValueError as exc:
        raise VendorError(
            f"{call.display} answered HTTP {reply.status} with a body that is not JSON",
            vendor=call.vendor,
            status=reply.status,
            request_id=request_id(reply.headers),
        ) from exc


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def decode_b64(call: Call, text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise VendorError(
            f"{call.display} returned an image whose base64 does not decode",
            vendor=call.vendor,
        ) from exc


_SCHEME = re.compile(r"data:|[A-Za-z][A-Za-z0-9+.-]{1,15}://", re.IGNORECASE)  # not base64


def image_ref(
    call: Call, ref: str, media_type: str | None = None
) -> Generator[Step, Any, OutImage]:
    """An output image given as a data URI, an http(s) URL or bare base64."""
    if ref[:5].lower() == "data:":
        try:
            parsed = parse_data_uri(ref)
        except RequestError as exc:
            raise VendorError(
                f"{call.display} returned a data: URI that does not decode", vendor=call.vendor
            ) from exc
        if parsed is None:
            raise VendorError(f"{call.display} returned a malformed data: URI", vendor=call.vendor)
        return OutImage(parsed.data, parsed.media_type)
    if _SCHEME.match(ref):  # a URL: downloaded only over https (the client checks)
        fetched: Fetched = yield Download(ref)
        return OutImage(fetched.data, media_type or fetched.content_type, url=ref)
    return OutImage(decode_b64(call, ref), media_type)


def is_ref(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and _SCHEME.match(value) is not None


def no_mask(call: Call) -> None:
    if call.mask is not None:
        raise ConfigError(
            f"{call.display} model {call.model!r} takes no mask through veilpix.Client",
            hint="drop mask=..., or use a model that takes one (OpenAI edits, Stability "
            "inpaint/erase, BFL flux-pro-1.0-fill, Replicate/fal inpainting models)",
        )


def one_image(call: Call) -> None:
    if call.n != 1:
        raise ConfigError(
            f"{call.display} ({call.model}) makes one image per call; n={call.n} is not supported",
            hint="call generate() once per image",
        )


def check_followed(call: Call, url: str, what: str) -> str:
    """A URL the vendor told us to poll gets the API key: it must be the vendor's own."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        host, parts = "", None
    base = urlsplit(call.base_url)
    same_scheme = parts is not None and (
        parts.scheme == "https" or (parts.scheme == "http" and base.scheme == "http")
    )
    found = adapters.match(host) if host else None
    ours = host in call.trusted_hosts or (found is not None and found[0].name == call.vendor)
    if not (same_scheme and ours):
        raise VendorError(
            f"{call.display} gave a {what} on a host that is not its own ({host or url!r}); "
            "veilpix does not send the API key there",
            vendor=call.vendor,
            hint="if the vendor really serves from that host, map it with "
            f"Policy(vendor_hosts={{{host!r}: {call.vendor!r}}})",
        )
    return url


class Poller:
    """Waits ``poll_interval`` between polls and gives up after ``poll_timeout``."""

    def __init__(self, call: Call, job_id: str | None) -> None:
        self.call = call
        self.job_id = job_id
        self.slept = 0.0
        self.elapsed = 0.0

    def wait(self) -> Generator[Step, Any, None]:
        call = self.call
        if max(self.elapsed, self.slept) + call.poll_interval > call.poll_timeout:
            job = f" {self.job_id}" if self.job_id else ""
            raise VendorTimeout(
                f"{call.display} job{job} did not finish within {call.poll_timeout:g} s",
                vendor=call.vendor,
                request_id=self.job_id,
            )
        self.elapsed = float((yield Sleep(call.poll_interval)) or 0.0)
        self.slept += call.poll_interval


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def post_multipart(
    call: Call, url: str, fields: Mapping[str, Any], files: Sequence[tuple[str, InputImage, str]]
) -> Http:
    parts = [Part(name, data=_form_value(v).encode("utf-8")) for name, v in fields.items()]
    parts += [
        Part(name, filename=f"{stem}{img.extension}", content_type=img.media_type, data=img.data)
        for name, img, stem in files
    ]
    body, ctype = build_multipart(parts)
    return Http("POST", url, headers_for(call, ctype), body, prompt=call.prompt or None)


def place_images(
    call: Call, args: dict[str, Any], field_name: str, as_list: bool, mask_name: str | None
) -> None:
    """Image inputs as data URIs under ``field_name`` (a list when ``as_list`` or several), and
    the mask under ``mask_name`` (Replicate and fal models take them in their JSON input)."""
    uris = [img.data_uri() for img in call.images]
    if uris:
        args[field_name] = uris if as_list or len(uris) > 1 else uris[0]
    if call.mask is not None:
        if mask_name is None:
            no_mask(call)
        else:
            args[mask_name] = call.mask.data_uri()
