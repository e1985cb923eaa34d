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

import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import anyio  # noqa: TID253 - the async client sleeps on whatever loop runs it
import httpx2  # noqa: TID253 - this module is the httpx-facing door: reached only with the library in use

from veilpix._errors import VendorError, VendorUnavailable
from veilpix.client._core import CallState, ClientCore, make_guard
from veilpix.client._planning import USER_AGENT
from veilpix.client._results import Result
from veilpix.client._steps import Call, Download, Fetched, Http, Plan, Reply, Sleep, VendorSpec
from veilpix.transports._guarded import CONTEXT
from veilpix.transports.httpx2 import AsyncGuardTransport, GuardTransport

if TYPE_CHECKING:
    from veilpix._policy import Policy
    from veilpix.audit._log import AuditLog
    from veilpix.guard import Context

__all__ = ["AsyncClient", "Client"]

ImageInput = Any  # bytes | str | os.PathLike | SanitizedImage / GeneratedImage | a list of them

_DEFAULT_DOWNLOAD_CAP = 64 * 1024 * 1024


def _timeouts(seconds: float) -> httpx2.Timeout:
    """``seconds`` per request, at most 15 of them to connect."""
    return httpx2.Timeout(seconds, connect=min(seconds, 15.0))


def _transport_error(call: Call, exc: httpx2.TransportError) -> VendorUnavailable:
    what = "timed out" if isinstance(exc, httpx2.TimeoutException) else "failed"
    error = VendorUnavailable(
        f"the request to {call.display} {what}: {type(exc).__name__}: {exc}",
        vendor=call.vendor,
    )
    error.__cause__ = exc
    return error


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
        guard, owns_log = make_guard(policy, log, context)
        self._core = ClientCore(
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
            timeout=_timeouts(timeout),
            follow_redirects=False,
        )
        self._download = httpx2.Client(
            transport=download_transport or httpx2.HTTPTransport(),
            timeout=_timeouts(timeout),
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
        spec, call = self._core.make_call(
            "generate", model, prompt, size=size, n=n, params=vendor_params
        )
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
        spec, call = self._core.make_call(
            "edit", model, prompt, images=image, mask=mask, size=size, n=n, params=vendor_params
        )
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
        spec, call = self._core.make_call(
            "describe", model, prompt, images=image, params=vendor_params
        )
        return self._run(spec, call)

    # -- plumbing -------------------------------------------------------------------------------

    def _run(self, spec: VendorSpec, call: Call) -> Result:
        plan: Plan = spec.plans[call.operation](call)
        state = CallState(started=time.monotonic())
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
            return self._core.result(call, stop.value, state)
        finally:
            plan.close()

    def _request(self, call: Call, step: Http, state: CallState) -> Reply | None:
        core = self._core
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    step.method,
                    step.url,
                    headers=list(step.headers),
                    content=step.body or None,
                    extensions={CONTEXT: core.context(call, step)},
                )
            except httpx2.TransportError as exc:
                outcome: Reply | VendorError = _transport_error(call, exc)
            else:
                outcome = core.reply(call, response, state)
            if isinstance(outcome, Reply):
                return outcome
            if step.optional:
                return None
            delay = core.retry_delay(outcome, attempt)
            if delay is None:
                raise outcome
            self._sleep(delay)
            attempt += 1

    def _fetch(self, call: Call, step: Download) -> Fetched:
        core = self._core
        attempt = 0
        while True:
            try:
                return self._fetch_once(call, step.url)
            except VendorError as error:
                delay = core.retry_delay(error, attempt)
                if delay is None:
                    raise
                self._sleep(delay)
                attempt += 1

    def _fetch_once(self, call: Call, url: str) -> Fetched:
        core = self._core
        for _ in range(4):  # the URL and up to 3 redirects, each checked
            core.check_download(call, url)
            try:
                with self._download.stream(
                    "GET", url, headers={"User-Agent": USER_AGENT, "Accept": "image/*, */*;q=0.5"}
                ) as resp:
                    if resp.is_redirect and "location" in resp.headers:
                        url = urljoin(url, resp.headers["location"])
                        continue
                    if resp.status_code != 200:
                        raise core.download_error(call, url, resp.status_code)
                    chunks, size = [], 0
                    for chunk in resp.iter_bytes():
                        size += len(chunk)
                        core.check_size(call, size, "Client")
                        chunks.append(chunk)
                    ctype = resp.headers.get("content-type")
            except httpx2.TransportError as exc:
                raise _transport_error(call, exc) from exc
            finally:
                self._download.cookies.clear()
            return core.checked_image(call, url, b"".join(chunks), ctype)
        raise VendorError(
            f"too many redirects downloading the result from {call.display}", vendor=call.vendor
        )

    def close(self) -> None:
        """Close the HTTP clients, and the transfer log when the Client opened it."""
        self._http.close()
        self._download.close()
        if self._core.owns_log:
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
        guard, owns_log = make_guard(policy, log, context)
        self._core = ClientCore(
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
            timeout=_timeouts(timeout),
            follow_redirects=False,
        )
        self._download = httpx2.AsyncClient(
            transport=download_transport or httpx2.AsyncHTTPTransport(),
            timeout=_timeouts(timeout),
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
        spec, call = self._core.make_call(
            "generate", model, prompt, size=size, n=n, params=vendor_params
        )
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
        spec, call = self._core.make_call(
            "edit", model, prompt, images=image, mask=mask, size=size, n=n, params=vendor_params
        )
        return await self._run(spec, call)

    async def describe(
        self,
        model: str,
        image: ImageInput,
        prompt: str = "Describe this image.",
        **vendor_params: Any,
    ) -> Result:
        """See :meth:`Client.describe`."""
        spec, call = self._core.make_call(
            "describe", model, prompt, images=image, params=vendor_params
        )
        return await self._run(spec, call)

    async def _pause(self, seconds: float) -> None:
        if self._sleep is not None:
            await self._sleep(seconds)
        else:
            await anyio.sleep(seconds)

    async def _run(self, spec: VendorSpec, call: Call) -> Result:
        plan: Plan = spec.plans[call.operation](call)
        state = CallState(started=time.monotonic())
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
            return self._core.result(call, stop.value, state)
        finally:
            plan.close()

    async def _request(self, call: Call, step: Http, state: CallState) -> Reply | None:
        core = self._core
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    step.method,
                    step.url,
                    headers=list(step.headers),
                    content=step.body or None,
                    extensions={CONTEXT: core.context(call, step)},
                )
            except httpx2.TransportError as exc:
                outcome: Reply | VendorError = _transport_error(call, exc)
            else:
                outcome = core.reply(call, response, state)
            if isinstance(outcome, Reply):
                return outcome
            if step.optional:
                return None
            delay = core.retry_delay(outcome, attempt)
            if delay is None:
                raise outcome
            await self._pause(delay)
            attempt += 1

    async def _fetch(self, call: Call, step: Download) -> Fetched:
        core = self._core
        attempt = 0
        while True:
            try:
                return await self._fetch_once(call, step.url)
            except VendorError as error:
                delay = core.retry_delay(error, attempt)
                if delay is None:
                    raise
                await self._pause(delay)
                attempt += 1

    async def _fetch_once(self, call: Call, url: str) -> Fetched:
        core = self._core
        for _ in range(4):
            core.check_download(call, url)
            try:
                async with self._download.stream(
                    "GET", url, headers={"User-Agent": USER_AGENT, "Accept": "image/*, */*;q=0.5"}
                ) as resp:
                    if resp.is_redirect and "location" in resp.headers:
                        url = urljoin(url, resp.headers["location"])
                        continue
                    if resp.status_code != 200:
                        raise core.download_error(call, url, resp.status_code)
                    chunks, size = [], 0
                    async for chunk in resp.aiter_bytes():
                        size += len(chunk)
                        core.check_size(call, size, "AsyncClient")
                        chunks.append(chunk)
                    ctype = resp.headers.get("content-type")
            except httpx2.TransportError as exc:
                raise _transport_error(call, exc) from exc
            finally:
                self._download.cookies.clear()
            return core.checked_image(call, url, b"".join(chunks), ctype)
        raise VendorError(
            f"too many redirects downloading the result from {call.display}", vendor=call.vendor
        )

    async def aclose(self) -> None:
        """Close the HTTP clients, and the transfer log when the client opened it."""
        await self._http.aclose()
        await self._download.aclose()
        if self._core.owns_log:
            self.guard.log.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
