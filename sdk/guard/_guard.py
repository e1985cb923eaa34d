"""The core every door runs an outbound request through.

A door (the httpx2/httpx transports, the Client, the proxy) turns its native request into an
:class:`Outbound` (method, URL, headers, body bytes) and calls :meth:`Guard.prepare`. That:

1. resolves the destination (vendor, region, country, legal entity) and applies destination
   policy: registered vendors only, allowed vendors and countries, HTTPS only (plain HTTP to
   loopback), the regional host the policy asks for;
2. decodes the body (gzip, deflate, br, zstd; capped) and finds every image in it: multipart
   parts whose bytes are an image whatever their declared type, data: URIs and base64 images
   anywhere in JSON, raw image bodies; URLs the vendor would fetch itself;
3. sanitizes each (metadata, orientation, faces, size), converting to a format the endpoint
   accepts and keeping it under the vendor's size limit; masks get their image's geometry;
4. rebuilds the body with the same meaning (other fields untouched, fresh multipart boundary,
   sibling media-type fields updated, Content-Length recomputed, no Content-Encoding);
5. applies the vendor's real per-request privacy controls and the Content-Usage signal;
6. writes the transfer record *before* returning (write-ahead), or records the block.

The record's facts are read in the same passes (see :mod:`veilpix.guard._record_facts`): the model
from the URL path or the body (per the vendor's adapter), the text sent (prompts, message
content, system instructions) from the body walk, the neutral file names given to uploads,
and, where the door allows them, purpose, legal basis, subject and consent from
``X-Veilpix-*`` headers (which are never forwarded, nor stored with the record's headers).

Fail closed: anything that looks like an image but cannot be sanitized, a malformed body, or a
log that cannot be written stops the request with :class:`~veilpix.RequestBlocked` (or
``AuditLogError``); no error path hands back the original bytes.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import ipaddress
import json
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from veilpix._errors import (
    AuditLogError,
    ConsentRequired,
    ImageError,
    RequestBlocked,
    RequestError,
    RequestTooLarge,
    VeilpixError,
)
from veilpix._policy import Policy
from veilpix.audit._record import OutboundImage, Transfer, clip_text, redact_url
from veilpix.codec._codec import (
    JsonText,
    build_data_uri,
    dump_json,
    find_urls_in_json,
    load_json,
    replace_at,
    scan_json,
)
from veilpix.finder._finder import (
    _IMAGE_SUFFIXES,
    Finder,
    Refused,
    _dotted,
    _fix_mime,
    _other_image,
    _whole_json,
    neutral_name_for,
)
from veilpix.formats._sniff import MEDIA_TYPES, looks_like_image, sniff
from veilpix.guard._record_facts import (
    FORM_SYSTEM_FIELDS,
    FORM_TEXT_FIELDS,
    HeaderRefused,
    form_json,
    form_models,
    is_record_header,
    json_models,
    path_models,
    read_record_headers,
)

if TYPE_CHECKING:
    from veilpix.adapters import Endpoint, Region, Vendor
    from veilpix.audit._log import AuditLog, PendingTransfer
    from veilpix.image._report import ImageReport, SanitizedImage

__all__ = ["Context", "Guard", "Outbound", "Prepared", "Receipt", "fetch_url"]

Fetch = Callable[[str, Policy], tuple[bytes, str | None]]

_IMAGE_KEY_HINTS = ("image", "mask", "img", "photo", "picture", "reference", "control")
_NOT_IMAGE_KEYS = ("webhook", "callback", "redirect", "polling_url")


@dataclass
class Outbound:
    """A door-neutral HTTP request. Header names keep their case; lookups ignore it."""

    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        low = name.lower()
        for key, value in self.headers:
            if key.lower() == low:
                return value
        return None

    def set_header(self, name: str, value: str) -> None:
        self.set_headers([(name, value)])

    def set_headers(self, pairs: Iterable[tuple[str, str]], *, drop: Iterable[str] = ()) -> None:
        """Drop the headers named in ``drop``, then :meth:`set_header` each pair in turn
        (a later pair replaces an earlier one of the same name), in one pass."""
        final: dict[str, tuple[str, str]] = {}
        for name, value in pairs:
            low = name.lower()
            final.pop(low, None)  # re-inserted last, as a second set_header would put it
            final[low] = (name, value)
        gone = final.keys() | {n.lower() for n in drop}
        self.headers = [(k, v) for k, v in self.headers if k.lower() not in gone]
        self.headers.extend(final.values())

    def drop_header(self, *names: str) -> None:
        self.set_headers((), drop=names)


@dataclass(frozen=True, kw_only=True)
class Context:
    """Who is calling and why: recorded with every transfer (see ``veilpix.Transfer``).

    ``model`` and ``prompt``, when the door knows them, win over what the request says.
    ``record_headers`` names the record fields (``purpose``, ``legal_basis``, ``subject``,
    ``consent``) a request may set itself with ``X-Veilpix-Purpose``,
    ``X-Veilpix-Legal-Basis``, ``X-Veilpix-Subject`` and ``X-Veilpix-Consent``; a request
    carrying any other of them is refused (by default: all of them)."""

    app: str | None = None
    actor: str | None = None
    client: str | None = None
    purpose: str | None = None
    legal_basis: str | None = None
    consent_ref: str | None = None
    subject_ref: str | None = None
    retention: str = "standard"
    door: str = "transport"
    model: str | None = None
    prompt: str | None = field(default=None, repr=False)
    record_headers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Receipt:
    """What veilpix did to one request: where it went, what it removed, which controls."""

    record_id: str | None
    vendor: str
    operation: str | None
    host: str
    region: str | None
    country: str | None
    legal_entity: str | None
    images: tuple[ImageReport, ...] = ()
    controls_applied: tuple[str, ...] = ()
    controls_account_level: tuple[str, ...] = ()
    controls_unavailable: tuple[str, ...] = ()
    remote_images: tuple[tuple[str, str], ...] = ()  # (URL without credentials, what was done)

    @property
    def removed(self) -> dict[str, int]:
        """Metadata categories found (and removed) across the request's images."""
        out: dict[str, int] = {}
        for report in self.images:
            for cat, n in report.categories().items():
                out[cat] = out.get(cat, 0) + n
        return out


class Prepared:
    """A request ready to send, with its transfer record begun. Call :meth:`finish` (or
    :meth:`fail`) once the call is over."""

    def __init__(self, request: Outbound, receipt: Receipt, pending: PendingTransfer) -> None:
        self.request = request
        self.receipt = receipt
        self._pending = pending

    def finish(
        self,
        *,
        status: int | None,
        response_bytes: int | None = None,
        vendor_request_id: str | None = None,
    ) -> None:
        self._pending.finish(
            status=status,
            response_bytes=response_bytes,
            request_bytes=len(self.request.body),
            vendor_request_id=vendor_request_id,
        )

    def fail(self, reason: str) -> None:
        if not self._pending.finished:
            self._pending.fail(reason[:500])

    def finish_nowait(self, *, status: int | None, vendor_request_id: str | None = None) -> None:
        """:meth:`finish` queued for the log's writer thread, returning at once: what async
        doors use (see :meth:`veilpix.PendingTransfer.finish_nowait`)."""
        self._pending.finish_nowait(
            status=status,
            request_bytes=len(self.request.body),
            vendor_request_id=vendor_request_id,
        )

    async def afail(self, reason: str) -> None:
        if not self._pending.finished:
            await self._pending.afail(reason[:500])


class _NeedsThread(Exception):
    """Raised by an inline run (``aprepare`` on the event loop) at the first piece of heavy or
    blocking work: decompressing, sanitizing an image, fetching a URL. Nothing has been
    written yet, so the run starts over on a worker thread."""


class _Block(Exception):
    def __init__(self, rule: str, reason: str, hint: str | None = None) -> None:
        super().__init__(reason)
        self.rule, self.reason, self.hint = rule, reason, hint

    def error(self, record_id: str) -> RequestBlocked:
        """What the caller gets once the block is recorded as ``record_id``."""
        return RequestBlocked(self.reason, rule=self.rule, hint=self.hint, record_id=record_id)


@dataclass
class _Work:
    """What prepare() learns along the way, for the record whether sent or blocked."""

    vendor: Vendor | None = None
    region: Region | None = None
    host: str = ""
    country: str | None = None
    endpoint: Endpoint | None = None
    images: list[OutboundImage] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    account: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)
    remote: list[tuple[str, str]] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)  # non-image files sent ("document (PDF)")
    first_image: SanitizedImage | None = None
    path: str = ""  # the URL path the call goes to
    models: dict[int, str] = field(default_factory=dict)  # vendor model-field rank -> model
    # text sent (system instructions?, text), for the log (never stored clear)
    texts: list[tuple[bool, str]] = field(default_factory=list)
    context: Context | None = None  # the call's context with its record headers applied
    walked: bool = False  # the body walk has begun (its facts are in here)
    policy: Policy = field(default_factory=Policy)  # the guard's, or the vendor's override
    inline: bool = False  # on the event loop: heavy work raises _NeedsThread

    def heavy(self) -> None:
        if self.inline:
            raise _NeedsThread


@functools.lru_cache(maxsize=256)
def _is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Guard:
    """Runs requests through the core under ``policy``, recording them in ``log``.

    ``log`` is an :class:`~veilpix.AuditLog`, a path, or None for the default log (see
    ``veilpix audit``). ``context`` is recorded with every call unless a call gives its own.
    ``fetch`` replaces the downloader used to inline remote images (tests, proxies).
    ``vendor_policies`` maps a vendor name to the policy used for its requests instead of
    ``policy`` (which still decides which host is whose).
    """

    def __init__(
        self,
        policy: Policy | None = None,
        log: AuditLog | str | os.PathLike[str] | None = None,
        *,
        context: Context | None = None,
        fetch: Fetch | None = None,
        vendor_policies: Mapping[str, Policy] | None = None,
    ) -> None:
        from veilpix.audit._log import AuditLog

        self.policy = policy or Policy()
        self.vendor_policies = dict(vendor_policies or {})
        self.log = log if isinstance(log, AuditLog) else AuditLog.from_config(path=log)
        self.context = context or Context()
        self._fetch = fetch or fetch_url

    # -- the pipeline ------------------------------------------------------------------------

    def prepare(
        self, request: Outbound, *, context: Context | None = None, vendor: str | None = None
    ) -> Prepared:
        """Sanitize, rebuild and record ``request``; raise :class:`RequestBlocked` instead of
        returning anything that was not proved clean. ``vendor`` names the vendor when the
        door knows it better than the host does (the gateway routes by path, and one
        corporate gateway host may serve several vendors)."""
        ctx = context or self.context
        out, work, block = self._run(request, ctx, vendor)
        if block is not None:
            rid = self.log.block(self._transfer(request, ctx, work, rule=block.rule),
                                 reason=block.reason, rule=block.rule)  # fmt: skip
            raise block.error(rid)
        pending = self.log.begin(self._transfer(out, ctx, work, rule="allowed"))
        return Prepared(out, self._receipt(work, pending.id), pending)

    async def aprepare(
        self,
        request: Outbound,
        *,
        context: Context | None = None,
        vendor: str | None = None,
        offload: Callable[..., Awaitable[Any]] | None = None,
        inline_limit: int = 64 * 1024,
    ) -> Prepared:
        """:meth:`prepare` for asyncio code (the gateway). A request of at most
        ``inline_limit`` bytes is checked on the event loop, and moves to
        ``offload(func, *args)`` (a worker thread) at the first image, compressed body or
        remote fetch; a larger one goes there at once. The log commits run on the log's
        writer thread, shared with the other calls in flight."""
        ctx = context or self.context
        run = None
        if offload is None or len(request.body) <= inline_limit:
            try:
                run = self._run(request, ctx, vendor, inline=offload is not None)
            except _NeedsThread:
                run = None
        if run is None:
            assert offload is not None
            run = await offload(self._run, request, ctx, vendor)
        out, work, block = run
        if block is not None:
            rid = await self.log.ablock(self._transfer(request, ctx, work, rule=block.rule),
                                        reason=block.reason, rule=block.rule)  # fmt: skip
            raise block.error(rid)
        pending = await self.log.abegin(self._transfer(out, ctx, work, rule="allowed"))
        return Prepared(out, self._receipt(work, pending.id), pending)

    def _run(
        self, request: Outbound, ctx: Context, vendor: str | None, *, inline: bool = False
    ) -> tuple[Outbound, _Work, _Block | None]:
        """The request rebuilt and what was learned, or the reason it must be blocked (with
        the request itself, for the record). Writes nothing."""
        work = _Work(policy=self.policy, inline=inline)
        try:
            return self._prepare(request, ctx, work, vendor), work, None
        except _Block as block:
            self._unread_facts(request, work)
            return request, work, block
        except ImageError as exc:
            return (
                request,
                work,
                _Block(
                    "image.unsanitizable",
                    f"an image in the request could not be sanitized: {exc.message}",
                    exc.hint,
                ),
            )
        except ConsentRequired as exc:
            return request, work, _Block("faces.consent", exc.message, exc.hint)
        except Refused as exc:
            return request, work, _Block(exc.rule, exc.message, exc.hint)
        except AuditLogError:
            raise  # cannot record: nothing is sent, and there is nothing to record it in
        except VeilpixError as exc:
            rule = "request.too_large" if isinstance(exc, RequestTooLarge) else "request.malformed"
            return request, work, _Block(rule, exc.message, exc.hint)

    def _prepare(
        self, request: Outbound, ctx: Context, work: _Work, vendor_name: str | None = None
    ) -> Outbound:
        from veilpix import adapters
        from veilpix.codec._codec import decode_body

        policy = work.policy = self.policy
        parts = urlsplit(request.url)
        host = (parts.hostname or "").lower()
        work.host = host
        port = parts.port
        named = (
            vendor_name
            or policy.vendor_hosts.get(f"{host}:{port}")
            or policy.vendor_hosts.get(host)
        )
        if named is not None:
            try:
                work.vendor = adapters.get(named)
            except KeyError as exc:
                raise _Block("destination.vendor", str(exc.args[0])) from exc
            work.region = work.vendor.region_for(host)
        else:
            found = adapters.match(host)
            if found is not None:
                work.vendor, work.region = found
        if work.vendor is None:
            raise _Block(
                "destination.unknown_host",
                f"{host or request.url!r} is not the host of a registered AI vendor",
                "veilpix only sends to vendors it has an adapter for; map a gateway or test "
                "server to one with Policy(vendor_hosts={'host': 'openai'})",
            )
        vendor = work.vendor
        # (routing to a regional host below changes the host, never the path)
        work.path = parts.path
        work.models.update(path_models(vendor, parts.path))
        # From here on the vendor's own policy applies, when one is set for it.
        policy = work.policy = self.vendor_policies.get(vendor.name, self.policy)
        plain_ok = parts.scheme == "http" and (_is_loopback(host) or not policy.https_only)
        if parts.scheme != "https" and not plain_ok:
            raise _Block(
                "destination.https_only",
                f"plain {parts.scheme}:// to {host} would send the data unencrypted",
                "use https (plain http is allowed only to loopback, for tests and local models)",
            )
        if policy.allowed_vendors is not None and vendor.name not in policy.allowed_vendors:
            raise _Block(
                "destination.vendor",
                f"{vendor.display} is not among the allowed vendors "
                f"({', '.join(sorted(policy.allowed_vendors)) or 'none'})",
                "add it to Policy(allowed_vendors=...) if it should be allowed",
            )
        url = self._route_region(request.url, work)
        # A host the policy names (an Azure resource in Sweden) is where the policy says.
        work.country = policy.host_countries.get(host) or (
            work.region.country if work.region is not None else None
        )
        if policy.allowed_countries is not None and work.country not in policy.allowed_countries:
            where = work.country or "an unknown country"
            raise _Block(
                "destination.country",
                f"{vendor.display} at {work.host} processes requests in {where}, which the "
                "policy does not allow",
                "choose a region inside the allowed countries (Policy(region='eu')) or widen "
                "Policy(allowed_countries=...)",
            )
        work.endpoint = vendor.endpoint_for(request.method, work.path)
        ctx = self._record_headers(request, ctx, work)
        self._sort_controls(work)
        encoding = request.header("content-encoding")
        if encoding and encoding.strip().lower() != "identity":
            work.heavy()
        body = decode_body(request.body, encoding, max_bytes=policy.max_request_bytes)
        out = Outbound(request.method.upper(), url, list(request.headers), body)
        # A resumable upload may declare the file's length before sending it; only the
        # sanitized length will be true, so the (optional) declaration goes.
        declared = work.endpoint.declared_length_headers if work.endpoint is not None else ()
        own = [k for k, _ in out.headers if is_record_header(k)]  # read above, never sent
        out.drop_header("content-encoding", *declared, *own)
        self._rewrite(out, work, ctx)
        self._rename_upload(out, work)
        self._rename_fields(out, work)
        limit = work.endpoint.max_request_bytes if work.endpoint is not None else None
        if limit is not None and len(out.body) > limit:
            raise _Block(
                "request.too_large",
                f"the request is {len(out.body):,} bytes after sanitizing, over {vendor.display}'s "
                f"limit of {limit:,}",
                "send fewer or smaller images, or downscale them with Policy(max_side=...)",
            )
        headers = self._privacy_headers(work)
        headers.append(("Content-Length", str(len(out.body))))
        out.set_headers(headers, drop=("transfer-encoding",))
        return out

    def _record_headers(self, request: Outbound, ctx: Context, work: _Work) -> Context:
        """``ctx`` with what the request's ``X-Veilpix-*`` record headers say (where
        ``ctx.record_headers`` allows them), kept in ``work`` for the record."""
        try:
            found = read_record_headers(request.headers, ctx.record_headers)
        except HeaderRefused as exc:
            raise _Block("record.header", exc.message, exc.hint) from exc
        if found:
            ctx = dataclasses.replace(
                ctx,
                purpose=found.get("purpose", ctx.purpose),
                legal_basis=found.get("legal_basis", ctx.legal_basis),
                subject_ref=found.get("subject", ctx.subject_ref),
                consent_ref=found.get("consent", ctx.consent_ref),
            )
        work.context = ctx
        return ctx

    # -- destination -------------------------------------------------------------------------

    def _route_region(self, url: str, work: _Work) -> str:
        """Send to the regional host the policy asks for, when the vendor offers it."""
        wanted = work.policy.region
        vendor = work.vendor
        assert vendor is not None
        if wanted is None:
            return url
        if work.region is not None and work.region.name == wanted:
            work.applied.append(f"regional endpoint ({wanted})")
            return url
        target = next((r for r in vendor.regions if r.name == wanted), None)
        concrete = next((h for h in target.hosts if "*" not in h), None) if target else None
        if target is None or concrete is None or work.region is None:
            work.unavailable.append(f"regional endpoint ({wanted})")
            return url
        if work.region is not vendor.regions[0]:
            # Addressed to a specific regional host already (e.g. a BFL polling URL on
            # api.us1.bfl.ai, where the job lives): moving it would break the call.
            # allowed_countries decides whether that host may be used.
            work.unavailable.append(
                f"regional endpoint ({wanted}): the request names region {work.region.name}"
            )
            return url
        parts = urlsplit(url)
        if vendor.path_names_region:
            work.unavailable.append(f"regional endpoint ({wanted}): the request names its location")
            return url
        netloc = concrete if parts.port is None else f"{concrete}:{parts.port}"
        work.applied.append(f"regional endpoint ({wanted})")
        work.region, work.host = target, concrete
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def _sort_controls(self, work: _Work) -> None:
        vendor, policy = work.vendor, work.policy
        assert vendor is not None
        op = work.endpoint.operation if work.endpoint is not None else None
        for control in vendor.controls:
            if control.level == "account":
                work.account.append(control.name)
            elif control.level == "unavailable":
                work.unavailable.append(control.name)
            elif control.header is None and control.json_field is None:
                continue  # routing controls (regions) are recorded by _route_region
            elif not policy.privacy_controls:
                work.unavailable.append(f"{control.name} (turned off by policy)")
            elif (
                (control.operations and op not in control.operations)
                or (control.json_field is not None and work.endpoint is None)
                or (control.when_region is not None and policy.region != control.when_region)
            ):
                continue
            else:
                work.applied.append(control.name)
        if policy.content_usage:
            work.applied.append(f"Content-Usage: {policy.content_usage}")
        if policy.sec_gpc:
            work.applied.append("Sec-GPC: 1")
        applied = {a.lower() for a in work.applied}
        missing = [c for c in policy.require_controls if c not in applied]
        if missing:
            raise _Block(
                "controls.required",
                f"{vendor.display} cannot apply the required control(s) "
                f"{', '.join(sorted(missing))} on this call",
                "see docs/vendors.md for what each vendor offers per request",
            )

    def _privacy_headers(self, work: _Work) -> list[tuple[str, str]]:
        vendor, policy = work.vendor, work.policy
        assert vendor is not None
        headers = []
        if policy.content_usage:
            headers.append(("Content-Usage", policy.content_usage))
        if policy.sec_gpc:
            headers.append(("Sec-GPC", "1"))
        headers.extend(
            c.header for c in vendor.controls if c.header is not None and c.name in work.applied
        )
        return headers

    # -- bodies --------------------------------------------------------------------------------

    def _rewrite(self, out: Outbound, work: _Work, ctx: Context) -> None:
        """Find every image in the body, whatever its Content-Type says (see
        :mod:`veilpix.finder._finder`), clean it and put it back; the top-level multipart form and
        JSON document also get the vendor's semantics (masks, prompts, remote URLs, controls)."""
        work.walked = True
        if not out.body:
            return
        ctype_header = out.header("content-type") or ""
        ctype = ctype_header.split(";", 1)[0].strip().lower()
        if ctype.startswith("multipart/"):
            masks = self._mask_fields(work)

            def field(name: str, data: bytes) -> None:
                self._form_field(work, name, data)

            form, form_type = self._finder(work, ctx).rewrite_multipart(
                out.body, ctype_header, masks=masks, on_field=field
            )
            if form is not out.body:
                out.body = form
                out.set_header("Content-Type", form_type)
            return
        if looks_like_image(out.body) or _other_image(out.body, 0) is not None:
            # Whatever the declared type (google-genai labels upload chunks application/json):
            # bytes that are an image are an image (and one veilpix cannot sanitize, refused).
            out.body, _ = self._finder(work, ctx).rewrite_body(out.body, None)
            out.set_header("Content-Type", MEDIA_TYPES[sniff(out.body)])
            return
        declared_json = ctype == "application/json" or ctype.endswith("+json")
        if declared_json or out.body.lstrip(b" \t\r\n")[:1] in (b"{", b"["):
            try:
                doc = load_json(out.body, max_bytes=work.policy.max_request_bytes)
            except RequestError as exc:
                # Declared JSON must be JSON; anything else that only starts like it (JSON
                # Lines, prose) is searched as bytes below. Duplicate keys are refused.
                if declared_json or (
                    "twice in one object" in exc.message and _whole_json(out.body)
                ):
                    raise
            else:
                self._rewrite_json(out, doc, work, ctx)
                return
        if not Finder.might_hold_image(out.body):
            return
        body, new_type = self._finder(work, ctx).rewrite_body(out.body, ctype_header or None)
        if body != out.body:
            out.body = body
            if new_type is not None:
                out.set_header("Content-Type", new_type)

    def _finder(self, work: _Work, ctx: Context) -> Finder:
        def clean(data: bytes, where: str, role: str) -> bytes:
            if role == "mask":
                return self._clean_mask(data, work, field=where).data
            return self._clean(data, work, ctx, field=where).data

        def document(kind: str, where: str) -> None:
            if work.policy.documents == "block":
                raise Refused(
                    "upload.document",
                    f"{where} is a file that may carry personal data ({kind}), and the policy "
                    "blocks such files",
                    hint="send images only, or set Policy(documents='allow'); nothing was sent",
                )
            category = f"document ({kind})"
            if category not in work.categories:
                work.categories.append(category)

        def renamed(where: str, filename: str) -> None:
            _name_image(work, where, filename)

        return Finder(clean, document=document, renamed=renamed,
                      max_bytes=work.policy.max_request_bytes)  # fmt: skip

    # -- what the request says about itself, for the record ----------------------------------

    def _form_field(self, work: _Work, name: str, data: bytes) -> None:
        """A multipart form field (not a file): the model, or text the app sent."""
        vendor = work.vendor
        assert vendor is not None
        parsed = form_json(name, data)
        work.models.update(form_models(vendor, work.path, name, data, parsed))
        if name in FORM_TEXT_FIELDS or name in FORM_SYSTEM_FIELDS:
            text = data.decode("utf-8", "replace")
            _add_text(work, [JsonText((name,), name in FORM_SYSTEM_FIELDS, text)])
        elif parsed is not None:
            _add_text(work, [JsonText((name, k), False, v) for k, v in parsed.items()
                             if k in FORM_TEXT_FIELDS and isinstance(v, str)])  # fmt: skip

    def _unread_facts(self, request: Outbound, work: _Work) -> None:
        """The model and text of a request blocked before its body was walked (a refused
        record header, a destination the policy does not allow): the record of a refused
        call says what it asked for too. Only plain JSON and form bodies are read, and
        nothing that fails to parse is guessed at."""
        from veilpix.codec._codec import parse_multipart

        if work.vendor is None or work.walked or not request.body:
            return
        if (request.header("content-encoding") or "identity").strip().lower() != "identity":
            return
        ctype_header = request.header("content-type") or ""
        ctype = ctype_header.split(";", 1)[0].strip().lower()
        limit = work.policy.max_request_bytes
        try:
            if ctype == "multipart/form-data":
                form = parse_multipart(request.body, ctype_header, max_bytes=limit)
                for part in form.parts:
                    if not part.is_file:
                        self._form_field(work, part.name, part.data)
            elif ctype == "application/json" or ctype.endswith("+json"):
                doc = load_json(request.body, max_bytes=limit)
                work.models.update(json_models(work.vendor, work.path, doc))
                texts: list[JsonText] = []
                scan_json(doc, min_len=None, url_schemes=(), texts=texts)
                _add_text(work, texts)
        except VeilpixError:
            pass

    def _rename_upload(self, out: Outbound, work: _Work) -> None:
        """Give a raw-body upload a neutral file name where a header carries the app's
        (fal's ``X-Fal-File-Name``), as multipart file parts get one."""
        endpoint = work.endpoint
        if endpoint is None or not endpoint.filename_headers:
            return
        for header in endpoint.filename_headers:
            original = out.header(header)
            if original is not None:
                name = neutral_name_for(out.body, original)
                out.set_header(header, name)
                _name_image(work, "body", name)

    def _rename_fields(self, out: Outbound, work: _Work) -> None:
        """Give the file an upload's first request names (in a JSON field: OpenAI's uploads
        ``filename``, fal's ``file_name``, Gemini's ``file.display_name``) a neutral name,
        as multipart file parts get one; the bytes follow in another request."""
        endpoint = work.endpoint
        if endpoint is None or not endpoint.filename_fields or not out.body.strip():
            return
        try:
            doc = load_json(out.body)
        except VeilpixError:
            return  # not JSON (a resumable upload's bytes): nothing named here
        changed = False
        for path in endpoint.filename_fields:
            *parents, key = path.split(".")
            node = doc
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict) and isinstance(node.get(key), str):
                node[key] = neutral_name_for(b"", node[key])
                changed = True
        if changed:
            encoding = json.detect_encoding(out.body)
            out.body = dump_json(doc)
            if encoding != "utf-8":  # UTF-16/32 JSON stays as it came
                out.body = out.body.decode("utf-8").encode(encoding)

    def _rewrite_json(self, out: Outbound, doc: Any, work: _Work, ctx: Context) -> None:
        original = out.body
        if work.endpoint is not None and work.endpoint.chunked_start:
            _refuse_chunked_image(doc)
        vendor = work.vendor
        assert vendor is not None
        work.models.update(json_models(vendor, work.path, doc))
        changed = False
        texts: list[JsonText] = []
        found_images, urls = scan_json(doc, url_schemes=("http", "https"), texts=texts)
        image_paths = {tuple(f.path) for f in found_images}
        _add_text(work, [t for t in texts if tuple(t.path) not in image_paths])
        masks = self._json_mask_paths(doc, work) if found_images else set()
        found_images.sort(key=lambda f: tuple(f.path) in masks)
        handled = {tuple(f.path) for f in found_images}
        for found in found_images:  # images first: a mask takes its image's geometry
            if not looks_like_image(found.data):
                # declared an image but is not one itself: it may carry one (base64 twice)
                finder = self._finder(work, ctx)
                inner, _ = finder.rewrite_body(found.data, None, "body" + _dotted(found.path))
                if inner != found.data:
                    uri = build_data_uri(found.declared_type or "application/octet-stream",
                                         inner, found.params)  # fmt: skip
                    doc = replace_at(doc, found.path, uri)
                    changed = True
                    continue
            if tuple(found.path) in masks:
                clean = self._clean_mask(found.data, work, field="body" + _dotted(found.path))
            else:
                clean = self._clean(found.data, work, ctx, field="body" + _dotted(found.path))
            if found.kind == "data_uri":
                doc = replace_at(doc, found.path, build_data_uri(clean.media_type, clean.data))
            else:
                doc = replace_at(doc, found.path, base64.b64encode(clean.data).decode("ascii"))
                _fix_mime(doc, found.path, clean.media_type)
            changed = True
        if found_images:  # a rewritten image may have changed its neighbours (a mime key)
            urls = find_urls_in_json(doc, schemes=("http", "https"))
        fetched = self._fetched_paths(doc, work) if urls else (set(), set())
        for found_url in urls:
            path = tuple(found_url.path)
            if _same_vendor(found_url.url, work):
                continue  # a file stored with the vendor (uploaded through veilpix), not a fetch
            if _vendor_fetches(path, fetched, work.endpoint is None):
                doc = self._remote(doc, path, found_url.url, work, ctx)
                handled.add(path)
                changed = True
        if Finder.might_hold_image(out.body):
            # images anywhere else: inside text, JSON in strings, byte arrays, archives ...
            finder = self._finder(work, ctx)
            doc, found_more = finder.rewrite_doc(doc, skip=frozenset(handled))
            changed |= found_more
        changed |= self._json_controls(doc, work)
        if changed:
            out.body = dump_json(doc)
            encoding = json.detect_encoding(original)
            if encoding != "utf-8":  # UTF-16/32 JSON (or a BOM) stays as it came
                out.body = out.body.decode("utf-8").encode(encoding)

    def _json_mask_paths(self, doc: Any, work: _Work) -> set[tuple[Any, ...]]:
        """Paths of the strings in JSON mask slots (BFL fill ``mask``, OpenAI ``mask.image_url``)."""
        from veilpix.codec._codec import select

        if work.endpoint is None:
            return set()
        return {
            tuple(p)
            for slot in work.endpoint.images
            if slot.kind == "json" and slot.role == "mask"
            for p in select(doc, slot.path)
        }

    def _fetched_paths(
        self, doc: Any, work: _Work
    ) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
        """(paths of URL slots the vendor fetches, paths under model-specific ``**`` slots)."""
        from veilpix.codec._codec import select

        exact: set[tuple[Any, ...]] = set()
        deep: set[tuple[Any, ...]] = set()
        if work.endpoint is not None:
            for slot in work.endpoint.images:
                if slot.kind == "json" and slot.fetched_by_vendor:
                    found = {tuple(p) for p in select(doc, slot.path)}
                    (deep if "**" in slot.path else exact).update(found)
        return exact, deep

    def _json_controls(self, doc: Any, work: _Work) -> bool:
        vendor = work.vendor
        assert vendor is not None
        changed = False
        if not isinstance(doc, dict):
            return False
        for control in vendor.controls:
            if control.json_field is not None and control.name in work.applied:
                key, value = control.json_field
                if doc.get(key, object()) != value:
                    doc[key] = value
                    changed = True
        return changed

    def _remote(self, doc: Any, path: tuple[Any, ...], url: str, work: _Work, ctx: Context) -> Any:
        """``doc`` with the remote image at ``path`` inlined (or unchanged when allowed);
        raises _Block when the image may not go as a URL and cannot be embedded."""
        from veilpix.codec._codec import build_data_uri, replace_at

        mode = work.policy.remote_images
        endpoint = work.endpoint
        embeddable = endpoint is not None and endpoint.accepts_data_uri
        shown = redact_url(url)
        if mode == "allow":
            work.remote.append((shown, "allowed: the vendor fetches the original"))
            return doc
        if mode == "block" or not embeddable:
            why = (
                "policy blocks remote images"
                if mode == "block"
                else (
                    "this endpoint does not take inline images, so the vendor would fetch the "
                    "unsanitized original"
                )
            )
            work.remote.append((shown, "blocked"))
            raise _Block(
                "remote_images",
                f"the request names a remote image ({shown}) and {why}",
                "send the image itself (veilpix sanitizes it), or set "
                "Policy(remote_images='allow') to let the vendor fetch it",
            )
        work.heavy()
        data, _ctype = self._fetch(url, work.policy)
        clean = self._clean(data, work, ctx, field="body" + _dotted(path))
        work.remote.append((shown, "inlined: fetched, sanitized, embedded"))
        return replace_at(doc, path, build_data_uri(clean.media_type, clean.data))

    def _mask_fields(self, work: _Work) -> set[str]:
        endpoint = work.endpoint
        if endpoint is None:
            return {"mask"}
        return {s.path for s in endpoint.images if s.kind == "multipart" and s.role == "mask"}

    # -- images --------------------------------------------------------------------------------

    def _clean(self, data: bytes, work: _Work, ctx: Context, *, field: str) -> SanitizedImage:
        from veilpix.image._pipeline import sanitize

        work.heavy()
        policy = work.policy
        endpoint = work.endpoint
        try:
            clean = sanitize(data, policy, consent=ctx.consent_ref)
            if endpoint is not None and clean.media_type not in endpoint.formats:
                clean = sanitize(data, policy.replace(output_format=_format_for(endpoint.formats, clean)),
                                 consent=ctx.consent_ref)  # fmt: skip
            clean = self._fit(data, clean, endpoint, ctx, work)
        except ImageError as exc:
            work.images.append(OutboundImage(data, None, field, error=exc.message))
            raise
        work.images.append(OutboundImage(data, clean, field))
        if work.first_image is None:
            work.first_image = clean
        return clean

    def _fit(
        self,
        data: bytes,
        clean: SanitizedImage,
        endpoint: Endpoint | None,
        ctx: Context,
        work: _Work,
    ) -> SanitizedImage:
        """Keep an image under the endpoint's byte limit by downscaling (a few tries)."""
        from veilpix.image._pipeline import sanitize

        if endpoint is None or endpoint.max_image_bytes is None:
            return clean
        limit = endpoint.max_image_bytes
        tries = 0
        while len(clean.data) > limit:
            tries += 1
            if tries > 4:
                raise _Block(
                    "image.too_large",
                    f"an image stays over the vendor's limit of {limit:,} bytes even downscaled",
                    "send a smaller image",
                )
            pixels = clean.report.width_out * clean.report.height_out
            target = max(int(pixels * (limit / len(clean.data)) * 0.8), 256 * 256)
            policy = work.policy.replace(max_pixels=min(target, work.policy.max_pixels or target),
                                         output_format=_format_for(endpoint.formats, clean))  # fmt: skip
            clean = sanitize(data, policy, consent=ctx.consent_ref)
        return clean

    def _clean_mask(self, data: bytes, work: _Work, *, field: str) -> SanitizedImage:
        from veilpix.image._pipeline import sanitize, sanitize_mask

        work.heavy()

        image = work.first_image
        try:
            clean = sanitize_mask(data, image, work.policy) if image is not None else sanitize(
                data, work.policy.replace(faces="off", require_consent_for_faces=False,
                                          output_format="png")
            )  # fmt: skip
        except ImageError as exc:
            work.images.append(OutboundImage(data, None, field, error=exc.message))
            raise
        work.images.append(OutboundImage(data, clean, field))
        return clean

    # -- records -------------------------------------------------------------------------------

    def _transfer(self, out: Outbound, ctx: Context, work: _Work, *, rule: str) -> Transfer:
        vendor = work.vendor
        ctx = work.context or ctx  # with its record headers, when they were accepted
        model = clip_text(ctx.model) or (work.models[min(work.models)] if work.models else None)
        # system instructions first, whatever the key order of the body: the same text
        # through another door or SDK has the same fingerprint
        texts = [t for _, t in sorted(work.texts, key=lambda t: not t[0])]
        prompt = ctx.prompt if ctx.prompt is not None else "\n\n".join(texts) or None
        categories = list(work.categories)
        if ctx.prompt and "prompt text" not in categories:
            categories.append("prompt text")
        return Transfer(
            vendor=vendor.name if vendor is not None else "unknown",
            url=out.url,
            method=out.method,
            model=model,
            operation=work.endpoint.operation if work.endpoint is not None else None,
            legal_entity=work.region.legal_entity if work.region is not None else None,
            region=work.region.name if work.region is not None else None,
            country=work.country,
            app=ctx.app,
            actor=ctx.actor,
            client=ctx.client,
            door=ctx.door,
            purpose=ctx.purpose,
            legal_basis=ctx.legal_basis,
            consent_ref=ctx.consent_ref,
            subject_ref=ctx.subject_ref,
            images=tuple(work.images),
            prompt=prompt,
            request_bytes=len(out.body),
            headers=dict(out.headers),  # (the log keeps no X-Veilpix-* header: redact_headers)
            controls_applied=tuple(work.applied),
            controls_account_level=tuple(work.account),
            controls_unavailable=tuple(work.unavailable),
            data_categories=tuple(categories),
            rule=rule,
            retention=ctx.retention,
        )

    def _receipt(self, work: _Work, record_id: str | None) -> Receipt:
        vendor = work.vendor
        assert vendor is not None
        return Receipt(
            record_id=record_id,
            vendor=vendor.name,
            operation=work.endpoint.operation if work.endpoint is not None else None,
            host=work.host,
            region=work.region.name if work.region is not None else None,
            country=work.country,
            legal_entity=work.region.legal_entity if work.region is not None else None,
            images=tuple(i.sanitized.report for i in work.images if i.sanitized is not None),
            controls_applied=tuple(work.applied),
            controls_account_level=tuple(work.account),
            controls_unavailable=tuple(work.unavailable),
            remote_images=tuple(work.remote),
        )


def _add_text(work: _Work, texts: Iterable[JsonText]) -> None:
    """Note text the request carries: for the prompt fingerprint and the data categories."""
    for found in texts:
        text = found.text
        if not text.strip() or text[:5].lower() == "data:":  # a file, not text
            continue
        work.texts.append((found.system, text))
        category = "system instructions" if found.system else "prompt text"
        if category not in work.categories:
            work.categories.append(category)


def _name_image(work: _Work, where: str, filename: str) -> None:
    """Record the neutral name the image found at ``where`` was sent under."""
    for i in range(len(work.images) - 1, -1, -1):
        image = work.images[i]
        if image.field == where and image.filename is None:
            work.images[i] = dataclasses.replace(image, filename=filename)
            return


def _refuse_chunked_image(doc: Any) -> None:
    """A chunked upload of an image would send byte ranges no one can sanitize one by one."""
    if not isinstance(doc, dict):
        return
    mime = str(doc.get("mime_type") or doc.get("mimeType") or "").lower()
    name = str(doc.get("filename") or "").lower()
    if mime.startswith("image/") or name.endswith(_IMAGE_SUFFIXES):
        raise _Block(
            "upload.chunked_image",
            "a chunked upload of an image sends it in byte ranges, which cannot be sanitized "
            "one at a time",
            "upload images with files.create (one request), or send them inline",
        )


def _same_vendor(url: str, work: _Work) -> bool:
    from veilpix import adapters

    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return False
    found = adapters.match(host)
    return found is not None and work.vendor is not None and found[0].name == work.vendor.name


def _vendor_fetches(
    path: tuple[Any, ...],
    slots: tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]],
    unknown_endpoint: bool,
) -> bool:
    """Is the URL at ``path`` an image the vendor would download itself?"""
    keys = [p.lower() for p in path if isinstance(p, str)]
    if any(k in _NOT_IMAGE_KEYS for k in keys):
        return False
    exact, deep = slots
    if path in exact:
        return True
    image_key = bool(keys) and any(h in k for k in keys[-2:] for h in _IMAGE_KEY_HINTS)
    # Model-specific inputs (Replicate, fal, BFL) and unknown endpoints on a vendor host: a URL
    # under an image-like key is an image input.
    return image_key and (path in deep or unknown_endpoint)


def _format_for(formats: Iterable[str], clean: SanitizedImage) -> str:
    accepted = set(formats)
    if clean.media_type == "image/png" and "image/png" in accepted:
        return "png"
    for media, name in (("image/jpeg", "jpeg"), ("image/png", "png"), ("image/webp", "webp")):
        if media in accepted:
            return name
    return "jpeg"


def fetch_url(url: str, policy: Policy) -> tuple[bytes, str | None]:
    """Download a remote image for inlining: https only (http to loopback), size- and
    time-capped, no credentials sent, at most 3 redirects and each to https."""
    import httpx2

    limit = policy.remote_max_bytes
    try:
        with httpx2.Client(timeout=policy.remote_timeout, follow_redirects=False) as client:
            for _hop in range(4):
                parts = urlsplit(url)
                if parts.scheme != "https" and not (
                    parts.scheme == "http" and _is_loopback(parts.hostname or "")
                ):
                    raise _Block("remote_images", f"refusing to fetch {redact_url(url)}: not https")
                with client.stream("GET", url) as resp:
                    if resp.is_redirect and "location" in resp.headers:
                        url = str(resp.url.join(resp.headers["location"]))
                        continue
                    if resp.status_code != 200:
                        raise _Block(
                            "remote_images",
                            f"fetching {redact_url(url)} gave HTTP {resp.status_code}",
                        )
                    chunks, size = [], 0
                    for chunk in resp.iter_bytes():
                        size += len(chunk)
                        if size > limit:
                            raise _Block(
                                "remote_images",
                                f"the remote image {redact_url(url)} is over {limit:,} bytes",
                                "raise Policy(remote_max_bytes=...) or send a smaller image",
                            )
                        chunks.append(chunk)
                    return b"".join(chunks), resp.headers.get("content-type")
            raise _Block("remote_images", f"too many redirects fetching {redact_url(url)}")
    except httpx2.HTTPError as exc:
        raise _Block("remote_images", f"could not fetch {redact_url(url)}: {exc}") from exc
