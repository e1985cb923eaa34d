"""The vendor adapters: registry, well-formed data, image-endpoint coverage, host matching,
and the generated vendor matrix (docs/vendors.md)."""

from __future__ import annotations

import fnmatch
import itertools
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from veilpix import adapters
from veilpix.adapters import Endpoint, ErrorShape, ImageSlot, Vendor
from veilpix.adapters._matrix import COMMAND, render_markdown

ROOT = Path(__file__).resolve().parents[2]

REGISTRY = {
    "openai": "openai",
    "azure_openai": "azure",
    "gemini": "gemini",
    "vertex": "vertex_ai",
    "anthropic": "anthropic",
    "stability": "stability",
    "replicate": "replicate",
    "fal": "fal",
    "bfl": "bfl",
    "ideogram": "ideogram",
    "mistral": "mistral",
}

# -- the path language of adapters/_base.py, checked here rather than in the adapters -------

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_SEGMENT = re.compile(rf"\*\*|{_NAME}(?:\[\*\]|\[\?{_NAME}=[A-Za-z0-9_.-]+\])*")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\[\])?")
_HOST = re.compile(r"(?:\*[.-])?[a-z0-9]+(?:[.-][a-z0-9]+)*")
_HEADER = re.compile(r"[A-Za-z0-9-]+")
_OPERATION = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")
_NOT_ISO = {"EU", "UK", "EL", "XK"}  # reserved or colloquial codes that are not assigned


def json_path_ok(path: str) -> bool:
    segments = path.split(".")
    return (
        bool(path)
        and all(_SEGMENT.fullmatch(s) for s in segments)
        and all(not (a == b == "**") for a, b in itertools.pairwise(segments))
    )


def select(doc: Any, path: str) -> list[Any]:
    """A minimal evaluator of the path language, to check the adapters' paths on real shapes."""
    nodes = [doc]
    for segment in path.split("."):
        if segment == "**":
            nodes = [d for n in nodes for d in _descendants(n)]
            continue
        name, _, rest = segment.partition("[")
        nodes = [n[name] for n in nodes if isinstance(n, dict) and name in n]
        for selector in re.findall(r"\[([^\]]*)\]", "[" + rest if rest else ""):
            items = [i for n in nodes if isinstance(n, list) for i in n]
            if selector.startswith("?"):
                key, _, value = selector[1:].partition("=")
                items = [i for i in items if isinstance(i, dict) and i.get(key) == value]
            nodes = items
    return nodes


def _descendants(node: Any) -> list[Any]:
    out = [node]
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        out += _descendants(child)
    return out


def all_vendors() -> tuple[Vendor, ...]:
    return adapters.vendors()


def endpoints() -> list[tuple[Vendor, Endpoint]]:
    return [(v, e) for v in all_vendors() for e in v.endpoints]


# -- registry ----------------------------------------------------------------------------


def test_registry_loads_every_module_with_its_litellm_key() -> None:
    assert tuple(REGISTRY) == adapters.VENDOR_MODULES
    assert [v.name for v in all_vendors()] == list(REGISTRY.values())
    for key in REGISTRY.values():
        assert adapters.get(key).name == key
    with pytest.raises(KeyError, match="known: openai"):
        adapters.get("nope")


def test_doc_example_of_the_package() -> None:
    found = adapters.match("eu.api.openai.com")
    assert found is not None
    vendor, region = found
    assert (vendor.name, region.name, region.country) == ("openai", "eu", "IE")


# -- well-formed ---------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", all_vendors(), ids=lambda v: v.name)
def test_vendor_is_well_formed(vendor: Vendor) -> None:
    assert vendor.display and vendor.sources
    assert not any("vendors.md" in s or "shared" in s for s in vendor.sources)
    base = urlsplit(vendor.base_url)
    assert base.scheme == "https" and base.hostname
    assert vendor.region_for(base.hostname) is not None, "base_url host is one of its regions"
    assert all(h == h.lower() and _HEADER.fullmatch(h) for h in vendor.auth_headers)
    assert vendor.auth_headers
    assert all(k == k.upper() for k in vendor.env_key)
    names = [r.name for r in vendor.regions]
    assert len(names) == len(set(names)), "region names are unique"
    for region in vendor.regions:
        assert region.hosts and region.legal_entity.strip()
        assert re.fullmatch(r"[A-Z]{2}", region.country) and region.country not in _NOT_ISO
        for host in region.hosts:
            assert _HOST.fullmatch(host), f"{host!r}: lower-case host, '*' only leading"
        if region.name in ("global", "eu", "us"):
            assert any("*" not in h for h in region.hosts), "routable regions name a host"
    operations = {e.operation for e in vendor.endpoints}
    seen = set()
    for control in vendor.controls:
        assert control.name not in seen and control.description.strip()
        seen.add(control.name)
        assert control.operations <= operations, control.name
        if control.level != "request":
            assert control.header is None and control.json_field is None
            assert not control.operations
        if control.header is not None:
            assert _HEADER.fullmatch(control.header[0]) and control.header[1]
        if control.json_field is not None:
            assert re.fullmatch(_NAME, control.json_field[0])
        if control.level == "request" and control.header is None and control.json_field is None:
            assert sum(1 for r in vendor.regions if any("*" not in h for h in r.hosts)) > 1, (
                f"{control.name}: a routing control needs regional hosts to route to"
            )


@pytest.mark.parametrize(
    ("vendor", "endpoint"), endpoints(), ids=lambda x: getattr(x, "name", None) or x.operation
)
def test_endpoint_is_well_formed(vendor: Vendor, endpoint: Endpoint) -> None:
    assert _OPERATION.fullmatch(endpoint.operation)
    assert endpoint.method in {"GET", "POST", "PUT", "PATCH", "DELETE"}
    assert endpoint.path.startswith("/")
    re.compile(endpoint.path)
    assert all(f.startswith("image/") for f in endpoint.formats) and endpoint.formats
    for limit in (endpoint.max_image_bytes, endpoint.max_images, endpoint.max_request_bytes):
        assert limit is None or limit > 0
    for slot in endpoint.images:
        check_slot(slot)
    kinds = {s.kind for s in endpoint.images}
    if endpoint.upload:
        assert kinds & {"raw", "multipart"}, "an upload carries the file itself"
    if endpoint.accepts_data_uri:
        assert any("data_uri" in s.encodings for s in endpoint.images)
    if "raw" in kinds:
        assert endpoint.upload and len(endpoint.images) == 1


def check_slot(slot: ImageSlot) -> None:
    assert slot.encodings
    if slot.kind == "raw":
        assert slot.path == "" and slot.encodings == {"bytes"}
    elif slot.kind == "multipart":
        assert _FIELD.fullmatch(slot.path) and slot.encodings == {"bytes"}
    else:
        assert json_path_ok(slot.path), slot.path
        assert slot.encodings <= {"data_uri", "base64", "url", "file_id"}
    assert slot.fetched_by_vendor == ("url" in slot.encodings), slot.path
    assert slot.mime_path is None or re.fullmatch(_NAME, slot.mime_path)


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("messages[*].content[?type=image_url].image_url.url", True),
        ("input.**", True),
        ("**", True),
        ("contents[*].parts[*].inlineData.data", True),
        ("", False),
        ("a..b", False),
        ("a.**.**", False),
        ("a[0]", False),
        ("a[?type]", False),
        ("a.b c", False),
    ],
)
def test_path_validator(path: str, ok: bool) -> None:
    assert json_path_ok(path) is ok


# -- every image-carrying endpoint of the research notes (vendors.md §14) is covered -------

COVERAGE = [
    ("openai", "POST", "/v1/images/generations", "images.generate"),
    ("openai", "POST", "/v1/images/edits", "images.edit"),
    ("openai", "POST", "/v1/images/variations", "images.variation"),
    ("openai", "POST", "/v1/chat/completions", "chat.completions"),
    ("openai", "POST", "/v1/responses", "responses.create"),
    ("openai", "POST", "/v1/files", "files.upload"),
    ("openai", "POST", "/v1/uploads", "uploads.create"),
    ("openai", "POST", "/v1/uploads/upload_abc/parts", "uploads.parts"),
    ("azure", "POST", "/openai/deployments/gpt-image/images/generations", "images.generate"),
    ("azure", "POST", "/openai/deployments/gpt-image/images/edits", "images.edit"),
    ("azure", "POST", "/openai/v1/images/edits", "images.edit"),
    ("azure", "POST", "/openai/deployments/gpt-4o/chat/completions", "chat.completions"),
    ("azure", "POST", "/openai/v1/chat/completions", "chat.completions"),
    ("azure", "POST", "/openai/v1/responses", "responses.create"),
    ("azure", "POST", "/openai/responses", "responses.create"),
    ("azure", "POST", "/openai/v1/files", "files.upload"),
    ("azure", "POST", "/openai/uploads/u1/parts", "uploads.parts"),
    ("gemini", "POST", "/v1beta/models/gemini-2.5-flash-image:generateContent", "models.generate_content"),
    ("gemini", "POST", "/v1/models/gemini-3-pro:streamGenerateContent", "models.generate_content"),
    ("gemini", "POST", "/v1beta/cachedContents", "cached_contents.create"),
    ("gemini", "POST", "/v1beta/models/gemini-2.5-flash:batchGenerateContent", "batches.create"),
    ("gemini", "POST", "/v1beta/interactions", "interactions.create"),
    ("gemini", "POST", "/upload/v1beta/files", "files.upload"),
    ("gemini", "PUT", "/upload/v1beta/files", "files.upload"),
    ("gemini", "POST", "/v1beta/models/imagen-4.0-generate-001:predict", "models.predict"),
    ("vertex_ai", "POST", "/v1/projects/p/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent", "models.generate_content"),
    ("vertex_ai", "POST", "/v1beta1/projects/p/locations/global/publishers/google/models/gemini-3-pro:streamGenerateContent", "models.generate_content"),
    ("vertex_ai", "POST", "/v1/publishers/google/models/gemini-2.5-flash:generateContent", "models.generate_content"),
    ("vertex_ai", "POST", "/v1/projects/p/locations/us-central1/publishers/google/models/imagen-3.0-capability-001:predict", "models.predict"),
    ("anthropic", "POST", "/v1/messages", "messages.create"),
    ("anthropic", "POST", "/v1/files", "files.upload"),
    ("stability", "POST", "/v2beta/stable-image/generate/ultra", "generate"),
    ("stability", "POST", "/v2beta/stable-image/generate/sd3", "generate"),
    ("stability", "POST", "/v2beta/stable-image/generate/core", "generate.core"),
    ("stability", "POST", "/v2beta/stable-image/edit/erase", "edit.masked"),
    ("stability", "POST", "/v2beta/stable-image/edit/inpaint", "edit.masked"),
    ("stability", "POST", "/v2beta/stable-image/edit/outpaint", "edit"),
    ("stability", "POST", "/v2beta/stable-image/edit/search-and-replace", "edit"),
    ("stability", "POST", "/v2beta/stable-image/edit/search-and-recolor", "edit"),
    ("stability", "POST", "/v2beta/stable-image/edit/remove-background", "edit"),
    ("stability", "POST", "/v2beta/stable-image/edit/replace-background-and-relight", "edit.relight"),
    ("stability", "POST", "/v2beta/stable-image/upscale/fast", "upscale"),
    ("stability", "POST", "/v2beta/stable-image/upscale/conservative", "upscale"),
    ("stability", "POST", "/v2beta/stable-image/upscale/creative", "upscale"),
    ("stability", "POST", "/v2beta/stable-image/control/sketch", "control"),
    ("stability", "POST", "/v2beta/stable-image/control/structure", "control"),
    ("stability", "POST", "/v2beta/stable-image/control/style", "control"),
    ("stability", "POST", "/v2beta/stable-image/control/style-transfer", "control.style_transfer"),
    ("replicate", "POST", "/v1/predictions", "predictions.create"),
    ("replicate", "POST", "/v1/models/black-forest-labs/flux-kontext-pro/predictions", "predictions.create"),
    ("replicate", "POST", "/v1/deployments/acme/sdxl/predictions", "predictions.create"),
    ("replicate", "POST", "/v1/files", "files.upload"),
    ("fal", "POST", "/fal-ai/flux-pro/kontext", "run"),
    ("fal", "POST", "/fal-ai/flux/dev/image-to-image", "run"),
    ("fal", "POST", "/files/upload", "storage.upload"),
    ("fal", "POST", "/files/upload/multipart", "storage.upload"),
    ("fal", "POST", "/storage/upload/initiate", "storage.upload.initiate"),
    ("bfl", "POST", "/v1/flux-2-pro", "flux2.edit"),
    ("bfl", "POST", "/v1/flux-2-max", "flux2.edit"),
    ("bfl", "POST", "/v1/flux-2-flex", "flux2.edit"),
    ("bfl", "POST", "/v1/flux-2-klein-4b", "flux2.edit"),
    ("bfl", "POST", "/v1/flux-2-klein-9b", "flux2.edit"),
    ("bfl", "POST", "/v1/flux-kontext-pro", "kontext"),
    ("bfl", "POST", "/v1/flux-kontext-max", "kontext"),
    ("bfl", "POST", "/v1/flux-kontext", "kontext"),
    ("bfl", "POST", "/v1/flux-pro-1.0-fill", "fill"),
    ("bfl", "POST", "/v1/flux-pro-1.0-expand", "expand"),
    ("bfl", "POST", "/v1/flux-pro-1.0-canny", "control"),
    ("bfl", "POST", "/v1/flux-pro-1.0-depth", "control"),
    ("bfl", "POST", "/v1/flux-pro-1.1-ultra", "generate"),
    ("bfl", "POST", "/v1/flux-pro-1.1", "generate"),
    ("bfl", "POST", "/v1/flux-dev", "generate"),
    ("bfl", "POST", "/v1/flux-3-video", "video"),
    ("bfl", "POST", "/v1/flux-pro-1.1-some-new-model", "model.other"),
    ("ideogram", "POST", "/v1/ideogram-v3/generate", "v3.generate"),
    ("ideogram", "POST", "/v1/ideogram-v3/inpaint", "v3.inpaint"),
    ("ideogram", "POST", "/v1/ideogram-v3/edit", "v3.inpaint"),
    ("ideogram", "POST", "/v1/ideogram-v3/remix", "v3.edit"),
    ("ideogram", "POST", "/v1/ideogram-v3/reframe", "v3.edit"),
    ("ideogram", "POST", "/v1/ideogram-v3/replace-background", "v3.edit"),
    ("ideogram", "POST", "/v1/ideogram-v4/remix", "v4.remix"),
    ("ideogram", "POST", "/edit", "legacy.edit"),
    ("ideogram", "POST", "/remix", "legacy.image"),
    ("ideogram", "POST", "/upscale", "legacy.image"),
    ("ideogram", "POST", "/describe", "legacy.image"),
    ("ideogram", "POST", "/v2/image/remix/ideogram-4-6", "v2.remix"),
    ("ideogram", "POST", "/v2/image/precise-edit/ideogram-4-6", "v2.precise_edit"),
    ("mistral", "POST", "/v1/chat/completions", "chat.completions"),
]  # fmt: skip


@pytest.mark.parametrize(("vendor", "method", "path", "operation"), COVERAGE)
def test_documented_endpoint_is_covered(
    vendor: str, method: str, path: str, operation: str
) -> None:
    endpoint = adapters.get(vendor).endpoint_for(method, path)
    assert endpoint is not None, f"{vendor} {method} {path} matches no endpoint"
    assert endpoint.operation == operation


def test_every_endpoint_is_exercised_by_the_coverage_list() -> None:
    covered = {(v, op) for v, _m, _p, op in COVERAGE}
    declared = {(v.name, e.operation) for v, e in endpoints()}
    assert declared == covered


@pytest.mark.parametrize(
    ("vendor", "method", "path"),
    [
        ("openai", "GET", "/v1/files"),
        ("openai", "POST", "/v1/images/edits/extra"),
        ("openai", "POST", "/v2/images/edits"),
        ("bfl", "GET", "/v1/get_result"),
        ("fal", "GET", "/fal-ai/flux/dev/requests/abc"),
        ("fal", "PUT", "/fal-ai/flux/dev/requests/abc/cancel"),
        ("gemini", "GET", "/v1beta/models"),
        ("anthropic", "POST", "/v1/messagesx"),
    ],
)
def test_other_requests_match_no_endpoint(vendor: str, method: str, path: str) -> None:
    assert adapters.get(vendor).endpoint_for(method, path) is None


def test_text_only_generation_endpoints_carry_no_image() -> None:
    for vendor, path in [
        ("openai", "/v1/images/generations"),
        ("bfl", "/v1/flux-dev"),
        ("stability", "/v2beta/stable-image/generate/core"),
        ("gemini", "/v1beta/models/imagen-4.0-generate-001:predict"),
    ]:
        endpoint = adapters.get(vendor).endpoint_for("POST", path)
        assert endpoint is not None and endpoint.images == ()


# -- paths against the request shapes the vendors document ---------------------------------

PNG = "data:image/png;base64,iVBORw0KGgo="
SHAPES: list[tuple[str, str, dict[str, Any], set[str]]] = [
    (
        "openai",
        "/v1/chat/completions",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "hi"},
                        {"type": "image_url", "image_url": {"url": PNG, "detail": "high"}},
                    ],
                }
            ]
        },
        {PNG},
    ),
    (
        "openai",
        "/v1/responses",
        {
            "input": [
                {
                    "role": "user",
                    "content": [{"type": "input_image", "image_url": "https://x.test/a.jpg"}],
                },
                {
                    "type": "function_call_output",
                    "call_id": "c",
                    "output": [{"type": "input_image", "image_url": PNG}],
                },
                {
                    "type": "computer_call_output",
                    "call_id": "d",
                    "output": {"type": "computer_screenshot", "image_url": "https://x.test/s.png"},
                },
            ],
            "tools": [{"type": "image_generation", "input_image_mask": {"image_url": PNG}}],
        },
        {"https://x.test/a.jpg", PNG, "https://x.test/s.png"},
    ),
    (
        "openai",
        "/v1/images/edits",
        {"images": [{"image_url": PNG}, {"file_id": "file-1"}], "mask": {"file_id": "file-2"}},
        {PNG, "file-1", "file-2"},
    ),
    (
        "anthropic",
        "/v1/messages",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                        },
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "content": [
                                {
                                    "type": "image",
                                    "source": {"type": "url", "url": "https://x.test/b.png"},
                                }
                            ],
                        },
                    ],
                }
            ]
        },
        {"iVBO", "https://x.test/b.png"},
    ),
    (
        "gemini",
        "/v1beta/models/gemini-2.5-flash-image:generateContent",
        {
            "contents": [
                {
                    "role": "user",
                    "parts": [
                        {"text": "edit"},
                        {"inlineData": {"mimeType": "image/png", "data": "iVBO"}},
                        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x.test/c.jpg"}},
                    ],
                }
            ],
            "systemInstruction": {
                "parts": [{"inline_data": {"mime_type": "image/png", "data": "AAAA"}}]
            },
        },
        {"iVBO", "https://x.test/c.jpg", "AAAA"},
    ),
    (
        "gemini",
        "/v1beta/interactions",
        {
            "model": "m",
            "input": [{"type": "image", "data": "iVBO", "mime_type": "image/png"}],
            "store": False,
        },
        {"iVBO"},
    ),
    (
        "vertex_ai",
        "/v1/projects/p/locations/us-central1/publishers/google/models/imagen-3.0-capability-001:predict",
        {
            "instances": [
                {
                    "prompt": "p",
                    "referenceImages": [
                        {
                            "referenceType": "REFERENCE_TYPE_RAW",
                            "referenceId": 1,
                            "referenceImage": {"bytesBase64Encoded": "iVBO"},
                        }
                    ],
                }
            ]
        },
        {"iVBO"},
    ),
    (
        "mistral",
        "/v1/chat/completions",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": PNG},
                        {"type": "image_url", "image_url": {"url": "https://x.test/d.png"}},
                    ],
                }
            ]
        },
        {PNG, "https://x.test/d.png"},
    ),
    (
        "replicate",
        "/v1/models/acme/model/predictions",
        {"input": {"prompt": "p", "image_input": ["https://x.test/e.png"]}},
        {"https://x.test/e.png"},
    ),
    (
        "bfl",
        "/v1/flux-2-pro",
        {"prompt": "p", "input_image": "https://x.test/f.png", "input_image_8": "iVBO"},
        {"https://x.test/f.png", "iVBO"},
    ),
]


@pytest.mark.parametrize(("vendor", "path", "body", "expected"), SHAPES)
def test_slots_find_images_in_documented_shapes(
    vendor: str, path: str, body: dict[str, Any], expected: set[str]
) -> None:
    endpoint = adapters.get(vendor).endpoint_for("POST", path)
    assert endpoint is not None
    found = {
        node
        for slot in endpoint.images
        if slot.kind == "json"
        for node in select(body, slot.path)
        if isinstance(node, str)
    }
    assert found >= expected
    assert "p" not in found or any("**" in s.path for s in endpoint.images)


def test_gemini_slots_point_at_their_media_type() -> None:
    endpoint = adapters.get("gemini").endpoint_for("POST", "/v1/models/m:generateContent")
    assert endpoint is not None
    for slot in endpoint.images:
        assert slot.mime_path in {"mimeType", "mime_type"}
        assert slot.mime_path == (
            "mimeType" if "inlineData" in slot.path or "fileData" in slot.path else "mime_type"
        )


def test_masks_are_marked() -> None:
    masks = {
        (v.name, e.operation, s.path) for v, e in endpoints() for s in e.images if s.role == "mask"
    }
    assert ("openai", "images.edit", "mask") in masks
    assert ("openai", "images.edit", "markup") in masks
    assert ("stability", "edit.masked", "mask") in masks
    assert ("ideogram", "v2.precise_edit", "mask") in masks
    assert ("bfl", "fill", "mask") in masks


# -- hosts ----------------------------------------------------------------------------------

HOSTS = [
    ("api.openai.com", "openai", "global", "US"),
    ("mtls.api.openai.com", "openai", "global", "US"),
    ("us.api.openai.com", "openai", "us", "US"),
    ("eu.api.openai.com", "openai", "eu", "IE"),
    ("ae.api.openai.com", "openai", "ae", "AE"),
    ("au.api.openai.com", "openai", "au", "AU"),
    ("in.api.openai.com", "openai", "in", "IN"),
    ("jp.api.openai.com", "openai", "jp", "JP"),
    ("myres.openai.azure.com", "azure", "resource", "US"),
    ("myres.cognitiveservices.azure.com", "azure", "resource", "US"),
    ("proj-1.services.ai.azure.com", "azure", "resource", "US"),
    ("generativelanguage.googleapis.com", "gemini", "global", "US"),
    ("aiplatform.googleapis.com", "vertex_ai", "global", "US"),
    ("europe-west4-aiplatform.googleapis.com", "vertex_ai", "europe-west4", "NL"),
    ("europe-west3-aiplatform.googleapis.com", "vertex_ai", "europe-west3", "DE"),
    ("us-central1-aiplatform.googleapis.com", "vertex_ai", "us-central1", "US"),
    ("asia-northeast1-aiplatform.googleapis.com", "vertex_ai", "asia-northeast1", "JP"),
    ("africa-south1-aiplatform.googleapis.com", "vertex_ai", "other-location", "US"),
    ("aiplatform.eu.rep.googleapis.com", "vertex_ai", "eu", "IE"),
    ("aiplatform.us.rep.googleapis.com", "vertex_ai", "us", "US"),
    ("api.anthropic.com", "anthropic", "global", "US"),
    ("api.stability.ai", "stability", "global", "GB"),
    ("api.replicate.com", "replicate", "global", "US"),
    ("fal.run", "fal", "global", "US"),
    ("queue.fal.run", "fal", "global", "US"),
    ("falrun.com", "fal", "global", "US"),
    ("queue.falrun.com", "fal", "global", "US"),
    ("rest.fal.ai", "fal", "global", "US"),
    ("v3.fal.media", "fal", "global", "US"),
    ("v3b.fal.media", "fal", "global", "US"),
    ("api.bfl.ai", "bfl", "global", "US"),
    ("api.eu.bfl.ai", "bfl", "eu", "DE"),
    ("api.us.bfl.ai", "bfl", "us", "US"),
    ("api.eu1.bfl.ai", "bfl", "eu1", "DE"),
    ("api.us1.bfl.ai", "bfl", "us1", "US"),
    ("api.bfl.ml", "bfl", "legacy", "US"),
    ("api.ideogram.ai", "ideogram", "global", "CA"),
    ("api.mistral.ai", "mistral", "global", "FR"),
    ("api.eu.mistral.ai", "mistral", "eu", "FR"),
    ("api.us.mistral.ai", "mistral", "us", "US"),
]


@pytest.mark.parametrize(("host", "vendor", "region", "country"), HOSTS)
def test_documented_host_matches(host: str, vendor: str, region: str, country: str) -> None:
    for variant in (host, host.upper(), f"{host}."):
        found = adapters.match(variant)
        assert found is not None, variant
        assert (found[0].name, found[1].name, found[1].country) == (vendor, region, country)


def test_every_vertex_location_is_its_own_region() -> None:
    from veilpix.adapters.vertex import LOCATIONS

    vertex = adapters.get("vertex_ai")
    for location, country in LOCATIONS.items():
        region = vertex.region_for(f"{location}-aiplatform.googleapis.com")
        assert region is not None and (region.name, region.country) == (location, country)


@pytest.mark.parametrize(
    "host",
    [
        "api.openai.com.evil.test",
        "evilapi.openai.com",
        "api-openai.com",
        "openai.com",
        "eu.api.openai.com.evil.test",
        "openai.azure.com",
        "openai.azure.com.evil",
        "myres.openai.azure.com.evil.test",
        "myres-openai.azure.com",
        "generativelanguage.googleapis.com.attacker.net",
        "aiplatform.googleapis.com.evil.test",
        "europe-west4-aiplatform.googleapis.co",
        "europe-west4.aiplatform.googleapis.com",
        "aiplatform.eu.rep.googleapis.com.evil",
        "xapi.anthropic.com",
        "api.anthropic.com.evil.test",
        "fal.run.evil.test",
        "evilfal.run",
        "v3.fal.media.evil.test",
        "api.bfl.ai.evil",
        "api.eu.bfl.ai.evil.test",
        "apibfl.ai",
        "api.ideogram.ai.example",
        "api.mistral.ai.evil",
        "api.replicate.com.evil",
        "api.stability.ai.evil",
        "localhost",
        "",
    ],
)
def test_look_alike_host_is_rejected(host: str) -> None:
    assert adapters.match(host) is None


def _probes(pattern: str) -> list[str]:
    if "*" not in pattern:
        return [pattern]
    return [pattern.replace("*", label) for label in ("probe", "a.b", "europe-west4", "api")]


def test_no_host_is_claimed_by_two_vendors() -> None:
    everyone = all_vendors()
    for owner in everyone:
        for pattern in owner.host_patterns:
            for host in _probes(pattern):
                claimants = [v.name for v in everyone if v.region_for(host) is not None]
                assert claimants == [owner.name], f"{host} ({pattern}) claimed by {claimants}"
    # and no pattern of one vendor covers a pattern of another
    for a in everyone:
        for b in everyone:
            if a is not b:
                for pa in a.host_patterns:
                    for pb in b.host_patterns:
                        assert not fnmatch.fnmatchcase(pb, pa), (
                            f"{a.name} {pa} covers {b.name} {pb}"
                        )


# -- one vendor lookup for every door ----------------------------------------------------------


def test_resolve_asks_the_mapping_first_then_the_adapters() -> None:
    hosts = {"gw.local:8443": "anthropic", "gw.local": "openai", "api.openai.com": "azure"}
    found = adapters.resolve("gw.local", 8443, hosts)
    assert found is not None and (found[0].name, found[1]) == ("anthropic", None)
    found = adapters.resolve("GW.LOCAL", 443, hosts)  # host:port first, then the host alone
    assert found is not None and found[0].name == "openai"
    found = adapters.resolve("gw.local", None, hosts)  # no port: the host alone
    assert found is not None and found[0].name == "openai"
    # a mapped host that is also an adapter's: the mapping wins, with that vendor's region
    found = adapters.resolve("api.openai.com", 443, hosts)
    assert found is not None and (found[0].name, found[1]) == ("azure", None)
    found = adapters.resolve("eu.api.openai.com", 443, {"eu.api.openai.com": "openai"})
    assert found is not None and found[1] is not None and found[1].name == "eu"
    # unmapped: the adapters' hosts, as match() (which also forgives a trailing dot)
    for host in ("eu.api.openai.com", "EU.API.OPENAI.COM", "eu.api.openai.com."):
        assert adapters.resolve(host, 443, hosts) == adapters.match(host)
        assert adapters.resolve(host) == adapters.match(host)
    assert adapters.resolve("example.com", 443, hosts) is None
    assert adapters.resolve("gw.local", 443) is None
    assert adapters.resolve("gw.local", 443, {}) is None


def test_resolve_refuses_a_mapping_to_no_known_vendor() -> None:
    with pytest.raises(KeyError, match="known: openai"):
        adapters.resolve("gw.local", 443, {"gw.local": "nobody"})
    # the name alone is not checked: a door that leaves the refusal to the guard gets it
    assert adapters.vendor_name("gw.local", 443, {"gw.local": "nobody"}) == "nobody"


def test_a_name_the_door_gives_wins_over_the_mapping_and_the_host() -> None:
    """The gateway routes by path: its vendor name decides, with the region the host means
    for that vendor, and a name no adapter has is refused like one from the mapping."""
    vendor, region = adapters.resolve(
        "eu.api.openai.com", None, {"eu.api.openai.com": "fal"}, name="openai"
    )
    assert vendor.name == "openai" and region is not None and region.name == "eu"
    vendor, region = adapters.resolve("gw.local", 8443, None, name="anthropic")
    assert vendor.name == "anthropic" and region is None
    with pytest.raises(KeyError):
        adapters.resolve("api.openai.com", name="nonesuch")


def test_vendor_name_is_the_name_resolve_finds() -> None:
    hosts = {"gw.local:8443": "anthropic", "gw.local": "openai"}
    for host, port in [
        ("gw.local", 8443),
        ("gw.local", 443),
        ("GW.local", None),
        ("api.anthropic.com", 443),
        ("api.bfl.ai.", 443),
        ("example.com", 443),
    ]:
        found = adapters.resolve(host, port, hosts)
        assert adapters.vendor_name(host, port, hosts) == (found[0].name if found else None)


# -- credentials: declared by each vendor, dropped by the log -----------------------------------

# The headers and query parameters each vendor's documentation and SDK send credentials in.
CREDENTIALS: dict[str, tuple[set[str], set[str]]] = {
    "openai": ({"authorization"}, set()),
    "azure": ({"api-key", "authorization"}, set()),  # a resource key, or an Entra ID token
    "gemini": ({"x-goog-api-key", "authorization"}, {"key"}),  # an API key, or OAuth
    "vertex_ai": ({"authorization", "x-goog-api-key"}, {"key"}),  # OAuth, or an express key
    "anthropic": ({"x-api-key", "authorization"}, set()),
    "stability": ({"authorization"}, set()),
    "replicate": ({"authorization"}, set()),
    "fal": ({"authorization"}, set()),  # "Key <id>:<secret>"
    "bfl": ({"x-key"}, set()),
    "ideogram": ({"api-key"}, set()),
    "mistral": ({"authorization"}, set()),
}


def test_every_vendor_declares_its_credentials() -> None:
    assert set(CREDENTIALS) == {v.name for v in all_vendors()}
    for vendor in all_vendors():
        headers, query = CREDENTIALS[vendor.name]
        assert set(vendor.auth_headers) == headers, vendor.name
        assert set(vendor.auth_query) == query, vendor.name


@pytest.mark.parametrize("vendor", all_vendors(), ids=lambda v: v.name)
def test_the_log_drops_every_credential_a_vendor_declares(vendor: Vendor) -> None:
    from veilpix.audit._record import REDACTED, redact_headers, redact_url

    secret = "0123456789abcdefSECRET"
    for name in vendor.auth_headers:
        for sent in (name, name.upper(), name.title()):
            kept = redact_headers({sent: secret, "accept": "application/json"})
            assert kept == {name: REDACTED, "accept": "application/json"}, sent
    for param in vendor.auth_query:
        url = redact_url(f"{vendor.base_url}/x?{param}={secret}&alt=sse")
        assert secret not in url and f"{param}={REDACTED}" in url
        assert "alt=sse" in url


# -- error shapes ------------------------------------------------------------------------------


def test_each_vendor_words_a_refusal_its_own_way() -> None:
    def body(vendor: str, status: int) -> Any:
        return adapters.get(vendor).error_shape.render(status, "no", "veilpix_blocked")

    openai_style = {
        "error": {
            "message": "no",
            "type": "veilpix_blocked",
            "param": None,
            "code": "veilpix_blocked",
        }
    }
    for name in ("openai", "azure", "mistral", "stability", "fal", "bfl", "ideogram"):
        assert body(name, 403) == openai_style
        assert body(name, 503)["error"]["type"] == "veilpix_error"
    assert body("anthropic", 403) == {
        "type": "error",
        "error": {"type": "permission_error", "message": "no"},
    }
    assert body("anthropic", 503)["error"]["type"] == "overloaded_error"
    assert body("anthropic", 413)["error"]["type"] == "invalid_request_error"
    for name in ("gemini", "vertex_ai"):
        assert body(name, 403) == {
            "error": {"code": 403, "message": "no", "status": "PERMISSION_DENIED"}
        }
        assert body(name, 413)["error"]["status"] == "INVALID_ARGUMENT"
        assert body(name, 401)["error"]["status"] == "FAILED_PRECONDITION"
    assert body("replicate", 413) == {"title": "Blocked by veilpix", "detail": "no", "status": 413}


def test_an_error_shape_fills_only_its_placeholders() -> None:
    shape = ErrorShape(
        {"a": "{message}", "b": ["{kind}"], "c": {"d": "{status}", "e": "say {message}"}},
        kinds={400: "bad"},
        kind="other",
    )
    assert shape.render(400, "m", "c") == {
        "a": "m",
        "b": ["bad"],
        "c": {"d": 400, "e": "say {message}"},
    }
    assert ErrorShape({"k": "{kind}", "c": "{code}"}).render(500, "m", "x") == {"k": "", "c": "x"}


# -- controls the core applies ---------------------------------------------------------------


def test_real_per_request_levers_are_modelled() -> None:
    def control(vendor: str, name: str) -> Any:
        return next(c for c in adapters.get(vendor).controls if c.name == name)

    store = control("openai", "store=false")
    assert store.json_field == ("store", False)
    assert store.operations == {"responses.create", "chat.completions"}
    assert control("fal", "X-Fal-Store-IO: 0").header == ("X-Fal-Store-IO", "0")
    assert control("anthropic", "inference_geo=us").json_field == ("inference_geo", "us")
    assert control("gemini", "store=false").operations == {"interactions.create"}
    for vendor in ("openai", "vertex_ai", "bfl", "mistral"):
        routing = control(vendor, "regional endpoint")
        assert routing.level == "request" and routing.header is None is routing.json_field
        assert "eu" in {r.name for r in adapters.get(vendor).regions}
    assert control("gemini", "regional endpoint").level == "unavailable"
    assert all(c.level != "request" for c in adapters.get("stability").controls)


# -- the generated matrix ----------------------------------------------------------------------


def test_docs_vendors_md_is_the_generated_matrix() -> None:
    text = (ROOT / "docs" / "vendors.md").read_text(encoding="utf-8")
    assert text == render_markdown(), f"docs/vendors.md is stale: run `{COMMAND}`"


def test_matrix_names_every_vendor_host_and_endpoint() -> None:
    text = render_markdown()
    assert text.startswith("<!-- Generated") and COMMAND in text.splitlines()[0]
    for vendor in all_vendors():
        assert f"## {vendor.display} (`{vendor.name}`)" in text
        for host in vendor.host_patterns:
            assert f"`{host}`" in text
        for endpoint in vendor.endpoints:
            assert f"`{endpoint.operation}`" in text


def test_module_entry_point_prints_the_matrix(capsys: pytest.CaptureFixture[str]) -> None:
    from veilpix.adapters.__main__ import main

    main()
    assert capsys.readouterr().out == render_markdown()


def test_lookups_are_remembered_and_bounded() -> None:
    # region_for/endpoint_for answer every request; their answers are kept per vendor, must
    # equal a fresh search, and must not grow without bound (paths carry file ids).
    vendor = adapters.get("openai")
    fresh = Vendor(**{f: getattr(vendor, f) for f in vendor.__dataclass_fields__})
    for host in ("api.openai.com", "API.OPENAI.COM", "eu.api.openai.com", "example.com"):
        assert vendor.region_for(host) == fresh.region_for(host)
        assert vendor.region_for(host) == vendor.region_for(host)
    for i in range(3000):
        path = f"/v1/files/file-{i}/content"
        assert vendor.endpoint_for("get", path) == fresh.endpoint_for("GET", path)
    assert vendor.endpoint_for("POST", "/v1/images/edits") is not None
    assert vendor.endpoint_for("POST", "/v1/images/edits").operation == "images.edit"  # type: ignore[union-attr]
    assert len(vendor._lookups()) <= 1024
    assert vendor == fresh and hash(vendor) == hash(fresh)  # the cache is no field
