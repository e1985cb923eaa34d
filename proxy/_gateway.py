"""The gateway: a plain ASGI app that apps point their vendor base URL at.

``/<vendor>/<path>`` goes to that vendor's registered base URL (or the one ``veilpix.toml``
names) + ``/<path>``, through the same core as the SDK (``veilpix.Guard``): sanitize, controls,
policy, log. It is never an open relay: only registered vendors, no absolute-form targets, no
``..`` segments, no unknown prefixes. A blocked call gets a vendor-shaped error with status 403
(400 for a record header that may not be used), so the app's own SDK raises something
meaningful. Responses stream through as they arrive.

Each call is recorded with its app's purpose and legal basis from ``veilpix.toml``
(:class:`~veilpix._config.RecordSettings`); where the config allows it, the request itself
may say them, and name the data subject and a consent reference, with ``X-Veilpix-Purpose``,
``X-Veilpix-Legal-Basis``, ``X-Veilpix-Subject`` and ``X-Veilpix-Consent`` (read by the core,
never forwarded).
"""

from __future__ import annotations

import asyncio
import enum
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import unquote

from veilpix import adapters
from veilpix._config import RecordSettings
from veilpix._errors import RequestBlocked, VeilpixError
from veilpix.guard import Context, Guard, Outbound, Prepared, refusal
from veilpix.guard._record_facts import is_record_header
from veilpix.proxy._asgi import (
    APP_HEADER,
    DISCONNECT,
    HEALTH_PATH,
    METRICS_PATH,
    METRICS_TYPE,
    OWN_PREFIX,
    TOKEN_HEADER,
    Message,
    Receive,
    Scope,
    Send,
    reply,
    reply_text,
    vendor_error,
)
from veilpix.proxy._limits import (
    MEMORY_PER_BODY_BYTE,
    RETRY_AFTER,
    BodyClock,
    Lease,
    MemoryBudget,
)
from veilpix.proxy._metrics import Metrics, Outcome
from veilpix.proxy._upstream import UpstreamError, UpstreamPool

__all__ = ["Gateway", "Route"]

# RFC 9110 7.6.1 connection-specific fields, plus what the gateway itself consumes or recomputes.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# "expect": the gateway has the whole body before it calls the vendor; nothing to wait for.
_OWN = frozenset({"host", "content-length", "expect", TOKEN_HEADER, APP_HEADER})
_TOKEN_RAW, _APP_RAW = TOKEN_HEADER.encode(), APP_HEADER.encode()


@dataclass(frozen=True)
class Route:
    """Where one request goes, as the door that took it decided: to ``vendor`` (a registry
    name) at ``url``; ``door`` is the door it came through (``gateway``, ``intercept``: the
    log records it), and ``app`` the app whose guard and record settings apply when the
    request names none in ``X-Veilpix-App`` (None: the default)."""

    vendor: str
    url: str
    door: str
    app: str | None = None


class Gateway:
    """The ASGI app. ``guards`` maps an app name (from ``X-Veilpix-App``) to its own Guard;
    ``""`` is the default. ``base_urls`` overrides vendors' base URLs. ``token`` (when set)
    must come in ``X-Veilpix-Token``. ``upstream`` replaces the transport to the vendors.
    ``records`` maps an app name (``""``: the default) to what its calls are recorded as
    doing: a :class:`~veilpix._config.RecordSettings`, or a mapping with ``purpose``,
    ``legal_basis`` and ``headers`` (the record headers its requests may send).

    A request body must keep coming: no pause over ``idle_timeout`` seconds and, after the
    first ``idle_timeout`` seconds, ``min_body_rate`` bytes per second on average, else
    ``408``. Requests in progress hold at most ``max_image_memory`` bytes together, estimated
    from their bodies (:data:`~veilpix.proxy._limits.MEMORY_PER_BODY_BYTE` per byte, then
    what the rebuilt request keeps); beyond it a request gets ``503`` with ``Retry-After``
    instead of a share. Both doors share these (the intercept proxy forwards through here).

    What the other door uses: :meth:`forward` (a request and its :class:`Route`),
    :meth:`outcome` (the one place requests are counted), :attr:`apps`, :attr:`vendor_hosts`,
    and ``token``, ``max_body`` and ``metrics`` as given."""

    def __init__(
        self,
        guards: Mapping[str, Guard],
        *,
        base_urls: Mapping[str, str] | None = None,
        token: str | None = None,
        max_body: int = 64 * 1024 * 1024,
        upstream: UpstreamPool | None = None,
        connect_timeout: float = 15.0,
        threads: int | None = None,
        metrics: Metrics | None = None,
        idle_timeout: float = 30.0,
        min_body_rate: int = 8192,
        max_image_memory: int = 512 * 1024 * 1024,
        records: Mapping[str, RecordSettings | Mapping[str, Any]] | None = None,
    ) -> None:
        if "" not in guards:
            raise ValueError("guards needs a default entry under ''")
        if idle_timeout <= 0 or min_body_rate <= 0:
            raise ValueError("idle_timeout and min_body_rate must be above 0")
        self.idle_timeout = idle_timeout
        self.min_body_rate = min_body_rate
        self.budget = MemoryBudget(max_image_memory)
        self.guards = dict(guards)
        # what each app's calls are recorded as doing ("" : the default)
        self.records = {app: _record_settings(r) for app, r in (records or {}).items()}
        self.base_urls = dict(base_urls or {})
        self.token = token
        self.max_body = max_body
        self.metrics = metrics or Metrics()
        self._upstream = upstream
        self._connect_timeout = connect_timeout
        # Few threads on purpose: sanitizing is mostly C code that releases the GIL, and more
        # Python threads than cores only fight over the GIL. Log appends from several of them
        # share one commit (group commit), so a handful keeps the disk busy.
        self._threads = threads or min(8, (os.cpu_count() or 1) + 2)
        self._executor: ThreadPoolExecutor | None = None
        # Every app's hosts of vendors (a host any app calls a vendor's is that vendor's for
        # the intercept proxy); the default policy wins a disagreement.
        hosts: dict[str, str] = {}
        for guard in self.guards.values():
            for host, vendor in guard.policy.vendor_hosts.items():
                hosts.setdefault(host.lower(), vendor)
        for host, vendor in self.guards[""].policy.vendor_hosts.items():
            hosts[host.lower()] = vendor
        self._vendor_hosts = hosts

    @property
    def apps(self) -> frozenset[str]:
        """The names of the apps configured besides the default (``X-Veilpix-App``)."""
        return frozenset(name for name in self.guards if name)

    @property
    def vendor_hosts(self) -> Mapping[str, str]:
        """Host (``host`` or ``host:port``, lower case) -> vendor, from every app's policy
        (the hosts of configured base URLs among them; the default policy's win)."""
        return self._vendor_hosts

    def outcome(self, vendor: str, outcome: Outcome) -> None:
        """Count what became of one request to ``vendor`` (``"-"``: none), in the metrics'
        ``veilpix_requests_total``. Both doors and the connection limits count here."""
        self.metrics.count(vendor, outcome)

    # -- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope.get("path", "")
        if path == HEALTH_PATH:
            await reply(send, 200, {"status": "ok"})
            return
        if path == METRICS_PATH:
            await reply_text(send, 200, self.metrics.render(), METRICS_TYPE)
            return
        await self._proxy(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def aclose(self) -> None:
        if self._upstream is not None:
            await self._upstream.aclose()
            self._upstream = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)  # sanitizing still under way finishes first
            self._executor = None

    def _pool(self) -> UpstreamPool:
        if self._upstream is None:
            self._upstream = UpstreamPool(connect_timeout=self._connect_timeout)
        return self._upstream

    # -- the proxy path ---------------------------------------------------------------------------

    def _route(self, scope: Scope) -> Route | str:
        """Where the request goes, or the reason it is refused."""
        raw = scope.get("raw_path") or scope.get("path", "").encode()
        raw_path = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
        if not raw_path.startswith("/") or "://" in raw_path.split("?", 1)[0]:
            return "absolute-form request targets are refused: this is not an open proxy"
        segments = raw_path.split("?", 1)[0].split("/")
        decoded = [unquote(s) for s in segments]
        if any(s in ("..", ".") or "/" in s or "\\" in s for s in decoded):
            return "dot segments and encoded slashes in the path are refused"
        if len(segments) < 3 or not segments[1]:
            return "the path must start with a registered vendor: /<vendor>/<path>"
        vendor = segments[1].lower()
        try:
            spec = adapters.get(vendor)
        except KeyError:
            return f"/{segments[1]}/ is not a registered vendor"
        base = self.base_urls.get(vendor, spec.base_url).rstrip("/")
        if "{" in base:
            return (
                f"{spec.display} needs its base URL in veilpix.toml ([vendors.{vendor}] base_url)"
            )
        rest = "/".join(segments[2:])
        query = scope.get("query_string", b"").decode("latin-1")
        url = f"{base}/{rest}" + (f"?{query}" if query else "")
        return Route(vendor, url, door="gateway")

    async def _proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope)
        vendor_hint = route.vendor if isinstance(route, Route) else "openai"
        if self.token is not None and not secrets.compare_digest(
            _header(scope["headers"], _TOKEN_RAW), self.token.encode()
        ):
            message = "missing or wrong X-Veilpix-Token"
            await self._refuse(send, vendor_hint, 401, message, "veilpix_token", outcome=None)
            return
        if isinstance(route, str):
            await self._refuse(send, "-", 404, route, "veilpix_route", outcome="refused")
            return
        await self.forward(route, scope, receive, send)

    async def forward(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        """Run one ASGI HTTP request, already routed (and past the token check), through the
        guard and on to the vendor; relay the answer."""
        lease = self.budget.lease()
        try:
            await self._guarded(route, scope, receive, send, lease)
        finally:
            lease.release()

    async def _guarded(
        self, route: Route, scope: Scope, receive: Receive, send: Send, lease: Lease
    ) -> None:
        vendor = route.vendor
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            await self._too_large(send, vendor)
            return
        if declared is not None and not lease.reserve(declared * MEMORY_PER_BODY_BYTE):
            await self._busy(send, vendor)  # before a byte of the body is read
            return
        # The head as it is before the body is read: a server may add the fields of a chunked
        # body's trailer to scope["headers"] as they come (uvicorn's httptools parser has
        # already added those that came with the head; they pass the same checks).
        head = list(scope["headers"])
        clock = BodyClock(asyncio.get_running_loop().time(), self.idle_timeout, self.min_body_rate)
        body = await _read_body(receive, self.max_body, clock, lease)
        if body is _Stop.DISCONNECTED:  # the client went away mid-upload: send nothing at all
            self.outcome(vendor, "client_disconnected")
            return
        if body is _Stop.TOO_LARGE:
            await self._too_large(send, vendor)
            return
        if body is _Stop.NO_MEMORY:
            await self._busy(send, vendor)
            return
        if body is _Stop.TIMED_OUT:
            message = (
                f"the request body came too slowly (over {self.idle_timeout:g} s without data, "
                f"or under {self.min_body_rate:,} bytes/s); the connection is closed"
            )
            close = [(b"connection", b"close")]
            await self._refuse(
                send, vendor, 408, message, "veilpix_timeout", outcome="timeout", headers=close
            )
            return
        assert isinstance(body, bytes)
        named = _header_or_none(head, _APP_RAW)
        app = named.decode("latin-1") if named is not None else route.app or ""
        guard = self.guards.get(app) or self.guards[""]
        client = scope.get("client")
        settings = self.records.get(app if app in self.guards else "") or RecordSettings()
        record = settings.for_vendor(vendor)
        context = Context(
            app=app or None,
            client=f"{client[0]}" if client else None,
            door=route.door,
            purpose=record.get("purpose"),
            legal_basis=record.get("legal_basis"),
            record_headers=settings.headers,
        )
        outbound = Outbound(scope["method"], route.url, _forwarded(head), body)
        try:
            prepared = await guard.aprepare(
                outbound, context=context, vendor=vendor, offload=self._in_thread
            )
        except RequestBlocked as exc:
            answer = refusal(exc, vendor)
            self.outcome(vendor, "blocked")
            head = [(k.encode(), v.encode()) for k, v in answer.headers]
            await reply(send, answer.status, answer.body, head)
            return
        except VeilpixError as exc:  # the log cannot be written: fail closed
            text = f"veilpix cannot record the call: {exc.message}"
            await self._refuse(send, vendor, 503, text, "veilpix_log", outcome="error")
            return
        # Sanitizing is done: what stays held is the body and the rebuilt one.
        lease.shrink_to(len(body) + len(prepared.request.body))
        for report in prepared.receipt.images:
            self.metrics.add_image(report.faces_blurred, report.bytes_in, report.bytes_out)
        await self._send_upstream(vendor, prepared, scope, receive, send)

    async def _too_large(self, send: Send, vendor: str) -> None:
        message = f"request body over {self.max_body:,} bytes"
        await self._refuse(send, vendor, 413, message, "veilpix_too_large", outcome="too_large")

    async def _busy(self, send: Send, vendor: str) -> None:
        used, limit = self.budget.used, self.budget.limit
        message = (
            f"veilpix is busy: the requests in progress hold its memory budget for images "
            f"({used:,} of {limit:,} bytes, max_image_memory); retry shortly"
        )
        retry = [(b"retry-after", RETRY_AFTER.encode())]
        await self._refuse(
            send, vendor, 503, message, "veilpix_busy", outcome="busy", headers=retry
        )

    async def _refuse(
        self,
        send: Send,
        vendor: str,
        status: int,
        message: str,
        code: str,
        *,
        outcome: Outcome | None,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        """Answer in the vendor's error shape (counted under ``outcome`` when given)."""
        if outcome is not None:
            self.outcome(vendor, outcome)
        await reply(send, status, vendor_error(vendor, status, message, code), headers)

    async def _send_upstream(
        self, vendor: str, prepared: Prepared, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Send, then relay the answer as it arrives. A client that goes away at any point
        (while the vendor thinks, or mid-stream) cancels the upstream call."""
        relayed = [False]  # set by _relay just before the last body message goes out
        left = False
        task = asyncio.current_task()
        assert task is not None

        def gone() -> None:
            # After the last byte went out the server reports the (normal) end of the
            # exchange as a disconnect too; only one that comes before it is the client
            # leaving, and then the relay (this task) is cancelled.
            nonlocal left
            if not relayed[0] and not left:
                left = True
                task.cancel()

        def on_message(watch: asyncio.Future[Message]) -> None:
            ok = not watch.cancelled() and watch.exception() is None
            if ok and watch.result().get("type") == "http.disconnect":
                gone()

        # veilpix's own uvicorn protocol calls back when the connection is lost; under any
        # other server a task waits in receive() for the disconnect message.
        hook: list[Callable[[], None]] | None = scope.get("extensions", {}).get(DISCONNECT)
        watch: asyncio.Future[Message] | None = None
        if hook is not None:
            hook.append(gone)
        else:
            watch = asyncio.ensure_future(receive())
            watch.add_done_callback(on_message)
        try:
            await self._relay(vendor, prepared, send, relayed)
        except asyncio.CancelledError:
            if not left:
                raise
            task.uncancel()
        finally:
            if hook is not None:
                hook.remove(gone)
            if watch is not None:
                watch.cancel()
        if left:
            self.outcome(vendor, "client_disconnected")
            # A no-op when the vendor had already answered (the record says how).
            await prepared.afail("the client disconnected; the vendor call was cancelled")

    async def _relay(
        self, vendor: str, prepared: Prepared, send: Send, relayed: list[bool]
    ) -> None:
        out = prepared.request
        headers = [(k, v) for k, v in out.headers if k.lower() not in _OWN]
        started = time.perf_counter()
        try:
            response = await self._pool().request(out.method, out.url, headers, out.body)
        except UpstreamError as exc:
            await prepared.afail(f"upstream {exc.kind}: {exc}")
            reason = f"the vendor could not be reached ({exc.kind}): {exc}"
            await self._refuse(send, vendor, 502, reason, "veilpix_upstream", outcome="failed")
            return
        try:
            self.metrics.observe(vendor, time.perf_counter() - started)
            request_id = response.header(b"x-request-id")
            # The record's finish is committed by the log's writer while the answer goes
            # back (it is not fsynced in any case: the next begin makes it durable).
            prepared.finish_nowait(
                status=response.status,
                vendor_request_id=request_id.decode("latin-1") if request_id else None,
            )
            self.outcome(vendor, "sent")
            # Content-Length is kept: the body is relayed byte for byte as it came (still
            # compressed when it was); without one it goes out chunked.
            head = _end_to_end_raw(response.headers)
            await send({"type": "http.response.start", "status": response.status, "headers": head})
            try:
                async for chunk in response.chunks():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except UpstreamError:
                # The head is out: all that is left is to cut the client's response short,
                # which the server does when the app raises.
                self.outcome(vendor, "broken_stream")
                raise
            relayed[0] = True  # from here on, the server reports the normal end as a disconnect
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    async def _in_thread(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking call (sanitizing images, fetching remote ones) on the gateway's
        worker threads, off the event loop."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="veilpix-gw")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(func, *args, **kwargs))


def _record_settings(value: RecordSettings | Mapping[str, Any]) -> RecordSettings:
    if isinstance(value, RecordSettings):
        return value
    return RecordSettings(
        purpose=value.get("purpose"),
        legal_basis=value.get("legal_basis"),
        headers=frozenset(value.get("headers", ())),
    )


def _forwarded(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The request headers that go on to the vendor: without the hop-by-hop ones (RFC 9110
    7.6.1, including those the Connection header names) and the gateway's own (token and
    app; the core reads and drops the record headers, and no other ``X-Veilpix-*`` header
    goes to a vendor either)."""
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
    named = {
        t.strip().lower() for k, v in headers if k.lower() == "connection" for t in v.split(",")
    }
    # Names compared with "_" as "-" (some clients send X_Veilpix_Token); the record headers
    # go on to the core, which reads or refuses them, whatever Connection names.
    return [
        (k, v)
        for k, v in headers
        if (low := k.lower()) not in _HOP_BY_HOP
        and (norm := low.replace("_", "-")) not in _OWN
        and (low not in named or is_record_header(low))
        and (not norm.startswith(OWN_PREFIX) or is_record_header(low))
    ]


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes:
    """The first value of the request header ``name`` (lower-case), or b"" (ASGI servers
    give names in lower case)."""
    value = _header_or_none(headers, name)
    return value if value is not None else b""


def _header_or_none(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """:func:`_header`, with None when the request has no such header."""
    for key, value in headers:
        if key == name:
            return bytes(value)
    return None


_HOP_BY_HOP_RAW = frozenset(h.encode() for h in _HOP_BY_HOP)


def _end_to_end_raw(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """:func:`_forwarded` for a response head (bytes, names lower-case)."""
    named = {t.strip().lower() for k, v in headers if k == b"connection" for t in v.split(b",")}
    return [(k, v) for k, v in headers if k not in _HOP_BY_HOP_RAW and k not in named]


class _Stop(enum.Enum):
    """Why :func:`_read_body` did not return a body."""

    DISCONNECTED = "the client left before sending all of it"
    TOO_LARGE = "over max_body"
    TIMED_OUT = "it came too slowly"
    NO_MEMORY = "the memory budget cannot hold it"


def _content_length(scope: Scope) -> int | None:
    """The declared body size (the server has checked the header's syntax), else None."""
    value = _header(scope["headers"], b"content-length")
    try:
        return int(value) if value else None
    except ValueError:
        return None


async def _read_body(receive: Receive, limit: int, clock: BodyClock, lease: Lease) -> bytes | _Stop:
    """The whole request body, read at ``clock``'s pace and reserved in ``lease`` as it
    grows, or why not."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout_at(clock.deadline()) as timer:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return _Stop.DISCONNECTED
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    return _Stop.TOO_LARGE
                if not lease.reserve(size * MEMORY_PER_BODY_BYTE):
                    return _Stop.NO_MEMORY
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
                clock.progress(asyncio.get_running_loop().time(), len(chunk))
                timer.reschedule(clock.deadline())
    except TimeoutError:
        return _Stop.TIMED_OUT
