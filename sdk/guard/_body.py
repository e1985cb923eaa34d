"""The request body: every image in it found (veilpix.finder), sanitized (veilpix.image)
and put back, masks given their image's geometry, remote images inlined, upload names made
neutral, the vendor's JSON controls set; and the facts the record needs (model, text, file
names) read in the same walk."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from veilpix._errors import ImageError, RequestError, VeilpixError
from veilpix.audit._record import OutboundImage, redact_url
from veilpix.codec import (
    JsonText,
    build_data_uri,
    dump_json,
    find_urls_in_json,
    load_json,
    parse_multipart,
    replace_at,
    scan_json,
    select,
)
from veilpix.finder import (
    IMAGE_SUFFIXES,
    Finder,
    Refused,
    dotted,
    fix_mime,
    neutral_name_for,
    other_image,
    whole_json,
)
from veilpix.formats._sniff import MEDIA_TYPES, looks_like_image, sniff
from veilpix.guard._destination import same_vendor, vendor_fetches
from veilpix.guard._record_facts import (
    FORM_SYSTEM_FIELDS,
    FORM_TEXT_FIELDS,
    form_json,
    form_models,
    json_models,
)
from veilpix.guard._request import Context, Outbound
from veilpix.guard._rules import Block
from veilpix.guard._work import Work
from veilpix.image._pipeline import sanitize, sanitize_mask

if TYPE_CHECKING:
    from veilpix.adapters import Endpoint
    from veilpix.image._report import SanitizedImage

__all__ = [
    "clean_image",
    "clean_mask",
    "rename_fields",
    "rename_upload",
    "rewrite",
    "unread_facts",
]


def rewrite(out: Outbound, work: Work, ctx: Context) -> None:
    """Find every image in the body, whatever its Content-Type says (see
    :mod:`veilpix.finder`), clean it and put it back; the top-level multipart form and
    JSON document also get the vendor's semantics (masks, prompts, remote URLs, controls)."""
    work.walked = True
    if not out.body:
        return
    ctype_header = out.header("content-type") or ""
    ctype = ctype_header.split(";", 1)[0].strip().lower()
    if ctype.startswith("multipart/"):
        masks = mask_fields(work)

        def field(name: str, data: bytes) -> None:
            form_field(work, name, data)

        form, form_type = new_finder(work, ctx).rewrite_multipart(
            out.body, ctype_header, masks=masks, on_field=field
        )
        if form is not out.body:
            out.body = form
            out.set_header("Content-Type", form_type)
        return
    if looks_like_image(out.body) or other_image(out.body, 0) is not None:
        # Whatever the declared type (google-genai labels upload chunks application/json):
        # bytes that are an image are an image (and one veilpix cannot sanitize, refused).
        out.body, _ = new_finder(work, ctx).rewrite_body(out.body, None)
        out.set_header("Content-Type", MEDIA_TYPES[sniff(out.body)])
        return
    declared_json = ctype == "application/json" or ctype.endswith("+json")
    if declared_json or out.body.lstrip(b" \t\r\n")[:1] in (b"{", b"["):
        try:
            doc = load_json(out.body, max_bytes=work.policy.max_request_bytes)
        except RequestError as exc:
            # Declared JSON must be JSON; anything else that only starts like it (JSON
            # Lines, prose) is searched as bytes below. Duplicate keys are refused.
            if declared_json or ("twice in one object" in exc.message and whole_json(out.body)):
                raise
        else:
            rewrite_json(out, doc, work, ctx)
            return
    if not Finder.might_hold_image(out.body):
        return
    body, new_type = new_finder(work, ctx).rewrite_body(out.body, ctype_header or None)
    if body != out.body:
        out.body = body
        if new_type is not None:
            out.set_header("Content-Type", new_type)


def new_finder(work: Work, ctx: Context) -> Finder:
    def clean(data: bytes, where: str, role: str) -> bytes:
        if role == "mask":
            return clean_mask(data, work, field=where).data
        return clean_image(data, work, ctx, field=where).data

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

    return Finder(
        clean, document=document, renamed=renamed, max_bytes=work.policy.max_request_bytes
    )


def form_field(work: Work, name: str, data: bytes) -> None:
    """A multipart form field (not a file): the model, or text the app sent."""
    vendor = work.vendor
    assert vendor is not None
    parsed = form_json(name, data)
    work.models.update(form_models(vendor, work.path, name, data, parsed))
    if name in FORM_TEXT_FIELDS or name in FORM_SYSTEM_FIELDS:
        text = data.decode("utf-8", "replace")
        _add_text(work, [JsonText((name,), name in FORM_SYSTEM_FIELDS, text)])
    elif parsed is not None:
        _add_text(
            work,
            [
                JsonText((name, k), False, v)
                for k, v in parsed.items()
                if k in FORM_TEXT_FIELDS and isinstance(v, str)
            ],
        )


def unread_facts(request: Outbound, work: Work) -> None:
    """The model and text of a request blocked before its body was walked (a refused
    record header, a destination the policy does not allow): the record of a refused
    call says what it asked for too. Only plain JSON and form bodies are read, and
    nothing that fails to parse is guessed at."""
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
                    form_field(work, part.name, part.data)
        elif ctype == "application/json" or ctype.endswith("+json"):
            doc = load_json(request.body, max_bytes=limit)
            work.models.update(json_models(work.vendor, work.path, doc))
            texts: list[JsonText] = []
            scan_json(doc, min_len=None, url_schemes=(), texts=texts)
            _add_text(work, texts)
    except VeilpixError:
        pass


def rename_upload(out: Outbound, work: Work) -> None:
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


def rename_fields(out: Outbound, work: Work) -> None:
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


def rewrite_json(out: Outbound, doc: Any, work: Work, ctx: Context) -> None:
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
    masks = json_mask_paths(doc, work) if found_images else set()
    found_images.sort(key=lambda f: tuple(f.path) in masks)
    handled = {tuple(f.path) for f in found_images}
    for found in found_images:  # images first: a mask takes its image's geometry
        if not looks_like_image(found.data):
            # declared an image but is not one itself: it may carry one (base64 twice)
            finder = new_finder(work, ctx)
            inner, _ = finder.rewrite_body(found.data, None, "body" + dotted(found.path))
            if inner != found.data:
                uri = build_data_uri(
                    found.declared_type or "application/octet-stream", inner, found.params
                )
                doc = replace_at(doc, found.path, uri)
                changed = True
                continue
        if tuple(found.path) in masks:
            clean = clean_mask(found.data, work, field="body" + dotted(found.path))
        else:
            clean = clean_image(found.data, work, ctx, field="body" + dotted(found.path))
        if found.kind == "data_uri":
            doc = replace_at(doc, found.path, build_data_uri(clean.media_type, clean.data))
        else:
            doc = replace_at(doc, found.path, base64.b64encode(clean.data).decode("ascii"))
            fix_mime(doc, found.path, clean.media_type)
        changed = True
    if found_images:  # a rewritten image may have changed its neighbours (a mime key)
        urls = find_urls_in_json(doc, schemes=("http", "https"))
    fetched = fetched_paths(doc, work) if urls else (set(), set())
    for found_url in urls:
        path = tuple(found_url.path)
        if same_vendor(found_url.url, work):
            continue  # a file stored with the vendor (uploaded through veilpix), not a fetch
        if vendor_fetches(path, fetched, work.endpoint is None):
            doc = inline_remote(doc, path, found_url.url, work, ctx)
            handled.add(path)
            changed = True
    if Finder.might_hold_image(out.body):
        # images anywhere else: inside text, JSON in strings, byte arrays, archives ...
        finder = new_finder(work, ctx)
        doc, found_more = finder.rewrite_doc(doc, skip=frozenset(handled))
        changed |= found_more
    changed |= json_controls(doc, work)
    if changed:
        out.body = dump_json(doc)
        encoding = json.detect_encoding(original)
        if encoding != "utf-8":  # UTF-16/32 JSON (or a BOM) stays as it came
            out.body = out.body.decode("utf-8").encode(encoding)


def json_mask_paths(doc: Any, work: Work) -> set[tuple[Any, ...]]:
    """Paths of the strings in JSON mask slots (BFL fill ``mask``, OpenAI ``mask.image_url``)."""
    if work.endpoint is None:
        return set()
    return {
        tuple(p)
        for slot in work.endpoint.images
        if slot.kind == "json" and slot.role == "mask"
        for p in select(doc, slot.path)
    }


def fetched_paths(doc: Any, work: Work) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """(paths of URL slots the vendor fetches, paths under model-specific ``**`` slots)."""
    exact: set[tuple[Any, ...]] = set()
    deep: set[tuple[Any, ...]] = set()
    if work.endpoint is not None:
        for slot in work.endpoint.images:
            if slot.kind == "json" and slot.fetched_by_vendor:
                found = {tuple(p) for p in select(doc, slot.path)}
                (deep if "**" in slot.path else exact).update(found)
    return exact, deep


def json_controls(doc: Any, work: Work) -> bool:
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


def inline_remote(doc: Any, path: tuple[Any, ...], url: str, work: Work, ctx: Context) -> Any:
    """``doc`` with the remote image at ``path`` inlined (or unchanged when allowed);
    raises Block when the image may not go as a URL and cannot be embedded."""
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
        raise Block(
            "remote_images",
            f"the request names a remote image ({shown}) and {why}",
            "send the image itself (veilpix sanitizes it), or set "
            "Policy(remote_images='allow') to let the vendor fetch it",
        )
    work.heavy()
    data, _ctype = work.fetch(url, work.policy)
    clean = clean_image(data, work, ctx, field="body" + dotted(path))
    work.remote.append((shown, "inlined: fetched, sanitized, embedded"))
    return replace_at(doc, path, build_data_uri(clean.media_type, clean.data))


def mask_fields(work: Work) -> set[str]:
    endpoint = work.endpoint
    if endpoint is None:
        return {"mask"}
    return {s.path for s in endpoint.images if s.kind == "multipart" and s.role == "mask"}


def clean_image(data: bytes, work: Work, ctx: Context, *, field: str) -> SanitizedImage:
    work.heavy()
    policy = work.policy
    endpoint = work.endpoint
    try:
        clean = sanitize(data, policy, consent=ctx.consent_ref)
        if endpoint is not None and clean.media_type not in endpoint.formats:
            clean = sanitize(
                data,
                policy.replace(output_format=_format_for(endpoint.formats, clean)),
                consent=ctx.consent_ref,
            )
        clean = fit_to_limit(data, clean, endpoint, ctx, work)
    except ImageError as exc:
        work.images.append(OutboundImage(data, None, field, error=exc.message))
        raise
    work.images.append(OutboundImage(data, clean, field))
    if work.first_image is None:
        work.first_image = clean
    return clean


def fit_to_limit(
    data: bytes,
    clean: SanitizedImage,
    endpoint: Endpoint | None,
    ctx: Context,
    work: Work,
) -> SanitizedImage:
    """Keep an image under the endpoint's byte limit by downscaling (a few tries)."""
    if endpoint is None or endpoint.max_image_bytes is None:
        return clean
    limit = endpoint.max_image_bytes
    tries = 0
    while len(clean.data) > limit:
        tries += 1
        if tries > 4:
            raise Block(
                "image.too_large",
                f"an image stays over the vendor's limit of {limit:,} bytes even downscaled",
                "send a smaller image",
            )
        pixels = clean.report.width_out * clean.report.height_out
        target = max(int(pixels * (limit / len(clean.data)) * 0.8), 256 * 256)
        policy = work.policy.replace(
            max_pixels=min(target, work.policy.max_pixels or target),
            output_format=_format_for(endpoint.formats, clean),
        )
        clean = sanitize(data, policy, consent=ctx.consent_ref)
    return clean


def clean_mask(data: bytes, work: Work, *, field: str) -> SanitizedImage:
    work.heavy()

    image = work.first_image
    try:
        clean = (
            sanitize_mask(data, image, work.policy)
            if image is not None
            else sanitize(
                data,
                work.policy.replace(
                    faces="off", require_consent_for_faces=False, output_format="png"
                ),
            )
        )
    except ImageError as exc:
        work.images.append(OutboundImage(data, None, field, error=exc.message))
        raise
    work.images.append(OutboundImage(data, clean, field))
    return clean


def _add_text(work: Work, texts: Iterable[JsonText]) -> None:
    """Note text the request carries: for the prompt fingerprint and the data categories."""
    for found in texts:
        text = found.text
        if not text.strip() or text[:5].lower() == "data:":  # a file, not text
            continue
        work.texts.append((found.system, text))
        category = "system instructions" if found.system else "prompt text"
        if category not in work.categories:
            work.categories.append(category)


def _name_image(work: Work, where: str, filename: str) -> None:
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
    if mime.startswith("image/") or name.endswith(IMAGE_SUFFIXES):
        raise Block(
            "upload.chunked_image",
            "a chunked upload of an image sends it in byte ranges, which cannot be sanitized "
            "one at a time",
            "upload images with files.create (one request), or send them inline",
        )


def _format_for(formats: Iterable[str], clean: SanitizedImage) -> str:
    accepted = set(formats)
    if clean.media_type == "image/png" and "image/png" in accepted:
        return "png"
    for media, name in (("image/jpeg", "jpeg"), ("image/png", "png"), ("image/webp", "webp")):
        if media in accepted:
            return name
    return "jpeg"
