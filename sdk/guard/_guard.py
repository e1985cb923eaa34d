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

import dataclasses
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from veilpix._errors import (
    AuditLogError,
    BlockRule,
    ConsentRequired,
    ImageError,
    RequestTooLarge,
    VeilpixError,
)
from veilpix._policy import Policy
from veilpix.audit._log import AuditLog
from veilpix.audit._record import Transfer, clip_text
from veilpix.codec import decode_body
from veilpix.finder import Refused
from veilpix.guard._body import rename_fields, rename_upload, rewrite, unread_facts
from veilpix.guard._destination import privacy_headers, resolve, sort_controls
from veilpix.guard._record_facts import HeaderRefused, is_record_header, read_record_headers
from veilpix.guard._remote import Fetch, fetch_url
from veilpix.guard._request import Context, Outbound, Prepared, Receipt
from veilpix.guard._rules import Block, NeedsThread
from veilpix.guard._work import Work

if TYPE_CHECKING:
    pass

__all__ = ["Context", "Guard", "Outbound", "Prepared", "Receipt", "fetch_url"]


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
            rid = self.log.block(
                self._transfer(request, ctx, work, rule=block.rule),
                reason=block.reason,
                rule=block.rule,
            )
            raise block.error(rid, self._receipt(work, rid, blocked=block.rule))
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
        """:meth:`prepare` for async code: the one route from an event loop into the core,
        taken by the async transports, ``veilpix.AsyncClient`` and the gateway. A request of
        at most ``inline_limit`` bytes is checked on the event loop, and moves to
        ``offload(func, *args)`` (default: a worker thread of anyio's, so any event loop
        anyio runs on will do) at the first image, compressed body or remote fetch; a larger
        one goes there at once. The log commits run on the log's writer thread, shared with
        the other calls in flight."""
        ctx = context or self.context
        if offload is None:
            import anyio.to_thread

            offload = anyio.to_thread.run_sync
        run = None
        if len(request.body) <= inline_limit:
            try:
                run = self._run(request, ctx, vendor, inline=True)
            except NeedsThread:
                run = None
        if run is None:
            run = await offload(self._run, request, ctx, vendor)
        out, work, block = run
        if block is not None:
            rid = await self.log.ablock(
                self._transfer(request, ctx, work, rule=block.rule),
                reason=block.reason,
                rule=block.rule,
            )
            raise block.error(rid, self._receipt(work, rid, blocked=block.rule))
        pending = await self.log.abegin(self._transfer(out, ctx, work, rule="allowed"))
        return Prepared(out, self._receipt(work, pending.id), pending)

    def _run(
        self, request: Outbound, ctx: Context, vendor: str | None, *, inline: bool = False
    ) -> tuple[Outbound, Work, Block | None]:
        """The request rebuilt and what was learned, or the reason it must be blocked (with
        the request itself, for the record). Writes nothing."""
        work = Work(policy=self.policy, inline=inline, fetch=self._fetch, door=ctx.door)
        try:
            return self._prepare(request, ctx, work, vendor), work, None
        except Block as block:
            unread_facts(request, work)
            return request, work, block
        except ImageError as exc:
            return (
                request,
                work,
                Block(
                    "image.unsanitizable",
                    f"an image in the request could not be sanitized: {exc.message}",
                    exc.hint,
                ),
            )
        except ConsentRequired as exc:
            return request, work, Block("faces.consent", exc.message, exc.hint)
        except Refused as exc:
            return request, work, Block(exc.rule, exc.message, exc.hint)
        except AuditLogError:
            raise  # cannot record: nothing is sent, and there is nothing to record it in
        except VeilpixError as exc:
            rule: BlockRule = (
                "request.too_large" if isinstance(exc, RequestTooLarge) else "request.malformed"
            )
            return request, work, Block(rule, exc.message, exc.hint)

    def _prepare(
        self, request: Outbound, ctx: Context, work: Work, vendor_name: str | None = None
    ) -> Outbound:
        url = resolve(request, work, vendor_name, self.policy, self.vendor_policies)
        vendor, policy = work.vendor, work.policy
        assert vendor is not None
        ctx = self._record_headers(request, ctx, work)
        sort_controls(work)
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
        rewrite(out, work, ctx)
        rename_upload(out, work)
        rename_fields(out, work)
        limit = work.endpoint.max_request_bytes if work.endpoint is not None else None
        if limit is not None and len(out.body) > limit:
            raise Block(
                "request.too_large",
                f"the request is {len(out.body):,} bytes after sanitizing, over {vendor.display}'s "
                f"limit of {limit:,}",
                "send fewer or smaller images, or downscale them with Policy(max_side=...)",
            )
        headers = privacy_headers(work)
        headers.append(("Content-Length", str(len(out.body))))
        out.set_headers(headers, drop=("transfer-encoding",))
        return out

    def _record_headers(self, request: Outbound, ctx: Context, work: Work) -> Context:
        """``ctx`` with what the request's ``X-Veilpix-*`` record headers say (where
        ``ctx.record_headers`` allows them), kept in ``work`` for the record."""
        try:
            found = read_record_headers(request.headers, ctx.record_headers)
        except HeaderRefused as exc:
            raise Block("record.header", exc.message, exc.hint) from exc
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

    # -- records -------------------------------------------------------------------------------

    def _transfer(self, out: Outbound, ctx: Context, work: Work, *, rule: str) -> Transfer:
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

    def _receipt(self, work: Work, record_id: str | None, *, blocked: str | None = None) -> Receipt:
        """What was done to the request; for a ``blocked`` one only where it was going (no
        image or control is listed: nothing was sent)."""
        vendor, region = work.vendor, work.region
        where: dict[str, Any] = {
            "record_id": record_id,
            "vendor": vendor.name if vendor is not None else "unknown",
            "operation": work.endpoint.operation if work.endpoint is not None else None,
            "host": work.host,
            "region": region.name if region is not None else None,
            "country": work.country,
            "legal_entity": region.legal_entity if region is not None else None,
        }
        if blocked is not None:
            return Receipt(**where, blocked=blocked)
        assert vendor is not None
        return Receipt(
            **where,
            images=tuple(i.sanitized.report for i in work.images if i.sanitized is not None),
            controls_applied=tuple(work.applied),
            controls_account_level=tuple(work.account),
            controls_unavailable=tuple(work.unavailable),
            remote_images=tuple(work.remote),
        )
