"""What :class:`veilpix.Client` and :class:`veilpix.AsyncClient` share: the pure parts of
running a call.

:class:`ClientCore` holds the configuration (keys, base URLs, timeouts, retries, download
cap), builds a :class:`~veilpix.client._steps.Call` from the caller's arguments (reading and
sniffing the images, resolving the vendor and its key), turns each HTTP answer into a
:class:`~veilpix.client._steps.Reply` or a :class:`~veilpix.VendorError`, decides retries,
checks result downloads (https to public hosts only, a size cap, image bytes) and assembles
the :class:`~veilpix.client._results.Result`. The clients only do the I/O, each in its way.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from veilpix import adapters
from veilpix._errors import (
    ConfigError,
    UnsupportedImage,
    VendorError,
    VendorRateLimited,
    VendorUnavailable,
)
from veilpix._net import is_loopback
from veilpix.audit._log import AuditLog
from veilpix.client._results import GeneratedImage, Result
from veilpix.client._steps import (
    Call,
    Fetched,
    Http,
    InputImage,
    Output,
    Reply,
    VendorSpec,
    parse_size,
)
from veilpix.client._vendor_errors import error_for
from veilpix.client.plans import spec_for
from veilpix.client.plans.gemini import invisible_watermark
from veilpix.formats._provenance import detect_provenance
from veilpix.formats._sniff import MEDIA_TYPES, looks_like_image, sniff
from veilpix.guard import Context, Guard
from veilpix.transports._guarded import RECEIPT

if TYPE_CHECKING:
    import httpx2

    from veilpix._policy import Policy
    from veilpix.guard import Receipt

__all__ = ["CallState", "ClientCore", "make_guard"]

_MAX_RETRY_AFTER = 60.0  # a longer Retry-After is not waited for: the error is raised


def _media_type(data: bytes, declared: str | None) -> str:
    """The media type of a result image: sniffed from its bytes, else what the vendor said."""
    try:
        return MEDIA_TYPES[sniff(data)]
    except UnsupportedImage:
        return (declared or "application/octet-stream").split(";", 1)[0].strip().lower()


@dataclass
class CallState:
    """What one call has gathered so far: when it started, the guard's receipts, request ids."""

    started: float
    receipts: list[Receipt] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)


def _read_image(value: Any, what: str) -> InputImage:
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


class ClientCore:
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
        self.owns_log = owns_log
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

    # -- building a call ------------------------------------------------------------------------

    def _key(self, spec: VendorSpec, display: str) -> str:
        key = self._api_keys.get(spec.name)
        if not key:
            key = spec.key_from(os.environ)
        if not key:
            names = " or ".join(spec.env)
            raise ConfigError(
                f"no API key for {display}: {names} is not set",
                hint=f"export {spec.env[0]}=..., or pass Client(api_keys={{{spec.name!r}: ...}})",
            )
        return key

    def make_call(
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

    def context(self, call: Call, step: Http) -> Context:
        return dataclasses.replace(
            self.guard.context, door="sdk", model=call.model, prompt=step.prompt
        )

    def retry_delay(self, error: VendorError, attempt: int) -> float | None:
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
    def reply(call: Call, response: httpx2.Response, state: CallState) -> Reply | VendorError:
        receipt = response.extensions.get(RECEIPT)
        if receipt is not None:
            state.receipts.append(receipt)
        headers = {k.lower(): v for k, v in response.headers.items()}
        rid = next((headers[h] for h in ("x-request-id", "request-id") if h in headers), None)
        if rid:
            state.request_ids.append(rid)
        if 200 <= response.status_code < 300:
            return Reply(response.status_code, headers, response.content)
        return error_for(call, response.status_code, headers, response.content)

    def check_download(self, call: Call, url: str) -> None:
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
        except ValueError:
            parts, host = None, ""
        loopback_ok = is_loopback(urlsplit(call.base_url).hostname or "")
        ok = (
            parts is not None
            and bool(host)
            and (
                parts.scheme == "https"
                or (parts.scheme == "http" and is_loopback(host) and loopback_ok)
            )
        )
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

    def check_size(self, call: Call, size: int, client: str) -> None:
        """Stop a result download that grows past ``max_download_bytes``."""
        if size > self.max_download_bytes:
            raise VendorError(
                f"the result from {call.display} is over {self.max_download_bytes:,} bytes",
                vendor=call.vendor,
                hint=f"raise {client}(max_download_bytes=...)",
            )

    def checked_image(self, call: Call, url: str, data: bytes, ctype: str | None) -> Fetched:
        if not looks_like_image(data) and not (ctype or "").startswith(("image/", "video/")):
            raise VendorError(
                f"the result URL from {call.display} did not return an image "
                f"({ctype or 'no content type'})",
                vendor=call.vendor,
            )
        return Fetched(data, ctype)

    def download_error(self, call: Call, url: str, status: int) -> VendorError:
        cls = VendorUnavailable if status >= 500 or status == 429 else VendorError
        return cls(
            f"downloading the result from {call.display} gave HTTP {status} "
            f"({urlsplit(url).hostname})",
            vendor=call.vendor,
            status=status,
            hint="result URLs expire (BFL: 10 minutes, fal: per X-Fal-Object-Lifecycle); "
            "run the call again",
        )

    def result(self, call: Call, out: Output, state: CallState) -> Result:
        mark = invisible_watermark(call)
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


def make_guard(
    policy: Policy | None,
    log: AuditLog | str | os.PathLike[str] | None,
    context: Context | None,
) -> tuple[Guard, bool]:
    return Guard(policy, log, context=context), not isinstance(log, AuditLog)
