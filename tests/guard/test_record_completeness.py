"""Record completeness on every door: what a new user's calls look like in the transfer log.

Each door (the Client, the httpx2 transport, the gateway, the intercept proxy) runs the
vendors' own SDKs (openai, anthropic, google-genai) or the Client against fake vendors on
loopback, and the record must name the model, list text as a data category with the text's
length and keyed fingerprint, carry purpose and legal basis from the config (and from the
X-Veilpix-* headers the config allows, which never reach the vendor), and show the neutral
file name an upload went out under: the app's own file name must not reach the vendor or the
log file. The first half checks the same rules on single requests through the core.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

import factories

pytest.importorskip("uvicorn")

from interceptkit import Running, TLSServer
from pki import VendorPKI
from servers import FakeVendor, Server
from veilpix import AuditLog, Client, Context, Guard, Policy, RequestBlocked
from veilpix._config import load_config
from veilpix.codec import Part as FormPart
from veilpix.codec import build_multipart
from veilpix.guard import Outbound
from veilpix.proxy import Gateway
from veilpix.proxy._intercept import InterceptProxy
from veilpix.proxy._serve import build_gateway
from veilpix.proxy._upstream import UpstreamPool
from veilpix.transports.httpx2 import GuardTransport
from wire import form_parts

PHOTO = factories.jpeg()
DATA_URI = "data:image/jpeg;base64," + base64.b64encode(PHOTO).decode()
NAME = "IMG_2041_Anna_at_home.jpg"  # personal data in a file name
SYSTEM = "You are a terse assistant."
USER = "What is Anna holding in this photo?"
EDIT = "add a party hat"
SUBJECT = "customer-4711-anna"
KEY = "sk-test-abcdefghijklmnop"
OPENAI, ANTHROPIC, GEMINI = (
    "api.openai.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
)

IMAGES_REPLY = {"created": 1, "data": [{"b64_json": base64.b64encode(b"x").decode()}]}
CHAT_REPLY = {
    "id": "c",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-5-mini",
    "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "a cup"}}
    ],
}
MESSAGE_REPLY = {
    "id": "m",
    "type": "message",
    "role": "assistant",
    "model": "claude-opus-4-6",
    "content": [{"type": "text", "text": "a cup"}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 1, "output_tokens": 1},
}
GEMINI_REPLY = {"candidates": [{"content": {"role": "model", "parts": [{"text": "a cup"}]}}]}


# -- helpers -----------------------------------------------------------------------------------


def log_bytes(path: Path) -> bytes:
    """Everything the log wrote to disk: the database, its WAL and its journal."""
    return b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))


def prompt_of(log: AuditLog, rec: dict[str, Any], text: str) -> None:
    """The record holds ``text``'s length and keyed fingerprint, never the text."""
    prompt = rec["what"]["prompt"]
    assert prompt["length"] == len(text)
    assert prompt["fingerprint"] == log.fingerprint(text.encode(), label="prompt")


def records(log: AuditLog) -> list[dict[str, Any]]:
    """The log's records as ``veilpix audit show --json`` shows them (sealed fields open)."""
    return [r.to_dict() for r in log.records()]


def by_model(log: AuditLog) -> dict[str | None, dict[str, Any]]:
    return {r["where"]["model"]: r for r in records(log)}


@dataclass
class Done:
    """A request run through the core: its record (``done["what"]`` reads it) and what the
    door would send (None: blocked)."""

    rec: dict[str, Any]
    sent: Outbound | None

    def __getitem__(self, key: str) -> Any:
        return self.rec[key]


def prepare(
    guard: Guard,
    url: str,
    body: bytes | dict[str, Any],
    ctype: str = "",
    headers: tuple[tuple[str, str], ...] = (),
    **kw: Any,
) -> Done:
    """Run one request through the core."""
    if isinstance(body, dict):
        body, ctype = json.dumps(body).encode(), ctype or "application/json"
    request = Outbound("POST", url, [("Content-Type", ctype), *headers], body)
    try:
        prepared = guard.prepare(request, **kw)
    except RequestBlocked as exc:
        assert exc.record_id is not None
        return Done(guard.log.get(exc.record_id).to_dict(), None)
    assert prepared.receipt.record_id is not None
    return Done(guard.log.get(prepared.receipt.record_id).to_dict(), prepared.request)


def form(
    *fields: tuple[str, str], files: tuple[tuple[str, str, bytes], ...] = ()
) -> tuple[bytes, str]:
    parts = [FormPart(n, data=v.encode()) for n, v in fields]
    parts += [FormPart(n, filename=f, content_type="image/jpeg", data=d) for n, f, d in files]
    return build_multipart(parts)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog(tmp_path / "audit.db") as opened:
        yield opened


@pytest.fixture
def guard(log: AuditLog) -> Guard:
    return Guard(Policy(), log)


# -- the model, per vendor -----------------------------------------------------------------------

STABILITY = "https://api.stability.ai/v2beta/stable-image"


@pytest.mark.parametrize(
    ("url", "body", "model"),
    [
        (
            "https://api.openai.com/v1/chat/completions",
            {"model": "gpt-5-mini", "messages": []},
            "gpt-5-mini",
        ),
        ("https://api.openai.com/v1/responses", {"model": "gpt-5", "input": "hi"}, "gpt-5"),
        (
            "https://api.openai.com/v1/images/edits",
            form(("model", "gpt-image-2"), ("prompt", "x")),
            "gpt-image-2",
        ),
        (
            "https://res.openai.azure.com/openai/deployments/my-gpt5/chat/completions"
            "?api-version=2025-04-01",
            {"messages": []},
            "my-gpt5",
        ),
        (
            "https://res.openai.azure.com/openai/v1/chat/completions",
            {"model": "gpt-5-deploy", "messages": []},
            "gpt-5-deploy",
        ),
        (
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent",
            {"contents": []},
            "gemini-2.5-flash",
        ),
        (
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-3-pro:streamGenerateContent",
            {"contents": []},
            "gemini-3-pro",
        ),
        (
            "https://europe-west4-aiplatform.googleapis.com/v1/projects/p/locations/europe-west4/"
            "publishers/google/models/gemini-2.5-pro:generateContent",
            {"contents": []},
            "gemini-2.5-pro",
        ),
        (
            "https://api.anthropic.com/v1/messages",
            {"model": "claude-opus-4-6", "messages": []},
            "claude-opus-4-6",
        ),
        (
            "https://api.mistral.ai/v1/chat/completions",
            {"model": "pixtral-large", "messages": []},
            "pixtral-large",
        ),
        (f"{STABILITY}/generate/ultra", form(("prompt", "x")), "ultra"),
        (f"{STABILITY}/generate/core", form(("prompt", "x")), "core"),
        (
            f"{STABILITY}/generate/sd3",
            form(("prompt", "x"), ("model", "sd3.5-large")),
            "sd3.5-large",
        ),
        (f"{STABILITY}/upscale/fast", form(("prompt", "x")), None),  # names no model
        ("https://api.bfl.ai/v1/flux-2-pro", {"prompt": "x"}, "flux-2-pro"),
        ("https://api.eu.bfl.ai/v1/flux-kontext-max", {"prompt": "x"}, "flux-kontext-max"),
        ("https://api.bfl.ai/v1/finetune", {"prompt": "x"}, None),  # not a model endpoint
        ("https://fal.run/fal-ai/flux/dev", {"prompt": "x"}, "fal-ai/flux/dev"),
        (
            "https://queue.fal.run/fal-ai/flux-pro/kontext",
            {"prompt": "x"},
            "fal-ai/flux-pro/kontext",
        ),
        ("https://rest.fal.ai/storage/upload/initiate", {"file_name": "a.txt"}, None),
        (
            "https://api.replicate.com/v1/models/black-forest-labs/flux-schnell/predictions",
            {"input": {"prompt": "x"}},
            "black-forest-labs/flux-schnell",
        ),
        (
            "https://api.replicate.com/v1/predictions",
            {"version": "owner/m:5c7d5dc6", "input": {}},
            "owner/m:5c7d5dc6",
        ),
        ("https://api.replicate.com/v1/deployments/acme/d/predictions", {"input": {}}, None),
        (
            "https://api.ideogram.ai/generate",
            {"image_request": {"model": "V_2", "prompt": "x"}},
            "V_2",
        ),
        (
            "https://api.ideogram.ai/remix",
            form(("image_request", '{"model": "V_2_TURBO"}')),
            "V_2_TURBO",
        ),
        ("https://api.ideogram.ai/v1/ideogram-v3/generate", form(("prompt", "x")), "ideogram-v3"),
        (
            "https://api.ideogram.ai/v2/image/remix/ideogram-4-6",
            form(("prompt", "x")),
            "ideogram-4-6",
        ),
    ],
)
def test_the_model_comes_from_where_each_vendor_names_it(
    guard: Guard, url: str, body: Any, model: str | None
) -> None:
    if isinstance(body, tuple):
        rec = prepare(guard, url, body[0], body[1])
    else:
        rec = prepare(guard, url, body)
    assert rec["outcome"] != "blocked", rec.rec
    assert rec["where"]["model"] == model


@pytest.mark.parametrize(
    ("value", "recorded"),
    [
        ({"$gt": ""}, None),  # an object names no model
        (["gpt-5", "gpt-4"], None),  # nor does an array
        (42, None),
        (True, None),
        ("", None),
        ("  ", None),
        ("gpt-5\r\nX-Injected: 1", "gpt-5 X-Injected: 1"),  # control characters go
        ("m" * 100_000, "m" * 199 + "…"),  # capped, never a whole payload
    ],
)
def test_a_model_field_that_is_not_a_name(guard: Guard, value: Any, recorded: Any) -> None:
    rec = prepare(
        guard,
        "https://api.openai.com/v1/chat/completions",
        {"model": value, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert rec["where"]["model"] == recorded


def test_the_door_s_own_model_wins_and_is_capped(guard: Guard) -> None:
    ctx = Context(door="sdk", model="x" * 500)
    rec = prepare(
        guard,
        "https://api.openai.com/v1/chat/completions",
        {"model": "gpt-5", "messages": []},
        context=ctx,
    )
    assert rec["where"]["model"] == "x" * 199 + "…"


# -- text: categories, length and fingerprint ------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "body", "text", "expected"),
    [
        (  # OpenAI chat: a system message, text parts, a string content
            "https://api.openai.com/v1/chat/completions",
            {
                "model": "m",
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": USER},
                            {"type": "image_url", "image_url": {"url": DATA_URI}},
                        ],
                    },
                    {"role": "assistant", "content": "a cup"},
                    {"role": "user", "content": "and now?"},
                ],
            },
            [SYSTEM, USER, "a cup", "and now?"],
            {"prompt text", "system instructions", "image"},
        ),
        (  # OpenAI Responses: instructions and a string input
            "https://api.openai.com/v1/responses",
            {"model": "m", "instructions": SYSTEM, "input": USER},
            [SYSTEM, USER],
            {"prompt text", "system instructions"},
        ),
        (  # a developer message is instructions too
            "https://api.openai.com/v1/responses",
            {
                "model": "m",
                "input": [
                    {"role": "developer", "content": SYSTEM},
                    {"role": "user", "content": [{"type": "input_text", "text": USER}]},
                ],
            },
            [SYSTEM, USER],
            {"prompt text", "system instructions"},
        ),
        (  # Anthropic: system blocks and message text
            "https://api.anthropic.com/v1/messages",
            {
                "model": "c",
                "system": [{"type": "text", "text": SYSTEM}],
                "messages": [{"role": "user", "content": [{"type": "text", "text": USER}]}],
            },
            [SYSTEM, USER],
            {"prompt text", "system instructions"},
        ),
        (  # Gemini: systemInstruction and contents parts
            "https://generativelanguage.googleapis.com/v1beta/models/g:generateContent",
            {
                "systemInstruction": {"parts": [{"text": SYSTEM}]},
                "contents": [{"role": "user", "parts": [{"text": USER}]}],
            },
            [SYSTEM, USER],
            {"prompt text", "system instructions"},
        ),
        (  # only instructions: no "prompt text"
            "https://api.anthropic.com/v1/messages",
            {"model": "c", "system": SYSTEM, "messages": []},
            [SYSTEM],
            {"system instructions"},
        ),
        (  # model-specific inputs: prompt and negative_prompt
            "https://api.replicate.com/v1/models/o/m/predictions",
            {"input": {"prompt": EDIT, "negative_prompt": "blurry", "seed": 4}},
            [EDIT, "blurry"],
            {"prompt text"},
        ),
        (  # no text at all
            "https://api.openai.com/v1/chat/completions",
            {
                "model": "m",
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": DATA_URI}}],
                    }
                ],
            },
            None,
            {"image"},
        ),
    ],
)
def test_text_is_a_category_with_length_and_fingerprint(
    log: AuditLog, guard: Guard, url: str, body: Any, text: list[str] | None, expected: set[str]
) -> None:
    rec = prepare(guard, url, body)
    found = set(rec["what"]["categories"])
    assert expected <= found
    assert not ({"prompt text", "system instructions"} - expected) & found
    if text is None:
        assert rec["what"]["prompt"] is None
    else:
        prompt_of(log, rec.rec, "\n\n".join(text))
    raw = json.dumps(rec.rec)
    assert USER not in raw and SYSTEM not in raw  # never in clear


def test_multipart_prompts_and_ideogram_s_image_request(log: AuditLog, guard: Guard) -> None:
    body, ctype = form(("prompt", EDIT), ("negative_prompt", "blurry"), ("style", "x"))
    rec = prepare(guard, f"{STABILITY}/generate/ultra", body, ctype)
    assert "prompt text" in rec["what"]["categories"]
    prompt_of(log, rec.rec, f"{EDIT}\n\nblurry")
    body, ctype = form(("image_request", json.dumps({"prompt": EDIT, "model": "V_2"})))
    rec = prepare(guard, "https://api.ideogram.ai/remix", body, ctype)
    prompt_of(log, rec.rec, EDIT)
    assert rec["where"]["model"] == "V_2"


# -- file names ------------------------------------------------------------------------------------


def test_a_multipart_file_name_is_replaced_in_the_request_and_the_record(
    guard: Guard, tmp_path: Path
) -> None:
    body, ctype = form(
        ("model", "gpt-image-2"),
        ("prompt", EDIT),
        files=(("image[]", NAME, PHOTO), ("image[]", "Anna 2.png", PHOTO)),
    )
    rec = prepare(guard, "https://api.openai.com/v1/images/edits", body, ctype)
    sent = rec.sent
    assert NAME.encode() not in sent.body and b"Anna" not in sent.body
    names = [f for _, f, _, _ in _parts(sent)]
    assert names == [None, None, "image.jpg", "image-2.jpg"]  # the extension is the format sent
    assert [i["filename"] for i in rec["what"]["images"]] == ["image.jpg", "image-2.jpg"]
    guard.log.close()
    assert b"Anna" not in log_bytes(tmp_path / "audit.db")


def test_fal_s_upload_file_name_header_is_replaced(guard: Guard) -> None:
    rec = prepare(
        guard,
        "https://v3.fal.media/files/upload",
        PHOTO,
        "image/jpeg",
        headers=(("X-Fal-File-Name", NAME),),
    )
    assert rec.sent.header("x-fal-file-name") == "image.jpg"
    assert rec["what"]["images"][0]["filename"] == "image.jpg"
    assert NAME not in json.dumps(rec.rec)


def _parts(out: Outbound) -> list[tuple[str, str | None, str | None, bytes]]:
    from wire import Captured

    return form_parts(
        Captured(out.method, out.url, {k.lower(): v for k, v in out.headers}, out.body)
    )


# -- record headers in the core ------------------------------------------------------------------

CHAT = (
    "https://api.openai.com/v1/chat/completions",
    {"model": "gpt-5-mini", "messages": [{"role": "user", "content": "hi"}]},
)
ALL = frozenset({"purpose", "legal_basis", "subject", "consent"})


def headed(guard: Guard, *headers: tuple[str, str], allowed: frozenset[str] = ALL) -> Any:
    url, body = CHAT
    ctx = Context(
        door="gateway", purpose="from config", legal_basis="contract", record_headers=allowed
    )
    return prepare(guard, url, body, headers=headers, context=ctx)


def test_allowed_record_headers_fill_the_record_and_are_not_forwarded(guard: Guard) -> None:
    rec = headed(
        guard,
        ("X-Veilpix-Purpose", "support%20ticket%20f%C3%BCr%20Anna"),
        ("x-veilpix-legal-basis", "Consent"),
        ("X-Veilpix-Subject", SUBJECT),
        ("X_Veilpix_Consent", "consent-2026-031"),
        ("X-Veilpix-App", "hr"),
    )
    assert rec["outcome"] != "blocked", rec.rec
    assert rec["why"]["purpose"] == "support ticket für Anna"  # percent-encoded UTF-8
    assert rec["why"]["legal_basis"] == "consent"
    assert rec["why"]["subject_ref"] == SUBJECT and rec["why"]["consent_ref"] == "consent-2026-031"
    assert rec["subject"] in ("open", "sealed")  # subject-linked: stored under the subject's key
    assert rec.sent is not None
    sent = [k.lower() for k, _ in rec.sent.headers]
    assert [k for k in sent if "veilpix" in k] == ["x-veilpix-app"], sent  # the door's own
    stored = rec["headers"] or {}
    assert [k for k in stored if "veilpix" in k] == [], stored  # (the app is who.app)
    assert SUBJECT not in json.dumps(stored)


def test_without_headers_the_config_stands(guard: Guard) -> None:
    rec = headed(guard)
    assert (rec["why"]["purpose"], rec["why"]["legal_basis"]) == ("from config", "contract")


@pytest.mark.parametrize(
    ("headers", "allowed", "says"),
    [
        ((("X-Veilpix-Purpose", "marketing"),), frozenset(), "not allowed here"),
        ((("X-Veilpix-Subject", SUBJECT),), frozenset({"purpose"}), "not allowed here"),
        ((("X-Veilpix-Legal-Basis", "because"),), ALL, "not one of GDPR"),
        ((("X-Veilpix-Legal-Basis", "contract, consent"),), ALL, "not one of GDPR"),
        ((("X-Veilpix-Purpose", "a"), ("x-veilpix-purpose", "b")), ALL, "sent twice"),
        ((("X-Veilpix-Purpose", "a"), ("X_Veilpix_Purpose", "b")), ALL, "sent twice"),
        ((("X-Veilpix-Purpose", "p" * 201),), ALL, "over 200"),
        ((("X-Veilpix-Purpose", "p" * 100_000),), ALL, "over 200"),
        ((("X-Veilpix-Purpose", "f\u00fcr"),), ALL, "visible ASCII"),  # raw latin-1 / non-UTF-8
        ((("X-Veilpix-Purpose", "a\r\nX-Evil: 1"),), ALL, "visible ASCII"),
        ((("X-Veilpix-Purpose", "a%0D%0AX-Evil:%201"),), ALL, "control or invisible characters"),
        ((("X-Veilpix-Purpose", "%FF%FE"),), ALL, "not UTF-8"),
        ((("X-Veilpix-Subject", "   "),), ALL, "empty"),
    ],
)
def test_record_headers_that_are_refused(
    guard: Guard, headers: tuple[tuple[str, str], ...], allowed: frozenset[str], says: str
) -> None:
    rec = headed(guard, *headers, allowed=allowed)
    assert rec["outcome"] == "blocked" and rec["rule"] == "record.header"
    assert says in rec["reason"]
    assert (rec["why"]["purpose"], rec["why"]["subject_ref"]) == ("from config", None)
    assert "veilpix" not in json.dumps(rec["headers"] or {}).lower()


def test_a_refused_call_still_records_what_it_asked_for(guard: Guard) -> None:
    """Refused before its body was read, the record still names the model and the text."""
    body, ctype = form(("model", "gpt-image-2"), ("prompt", EDIT), files=(("image", NAME, PHOTO),))
    ctx = Context(door="gateway")
    rec = prepare(
        guard,
        "https://api.openai.com/v1/images/edits",
        body,
        ctype,
        headers=(("X-Veilpix-Subject", SUBJECT),),
        context=ctx,
    )
    assert (rec["outcome"], rec["rule"]) == ("blocked", "record.header")
    assert rec["where"]["model"] == "gpt-image-2" and "prompt text" in rec["what"]["categories"]
    prompt_of(guard.log, rec.rec, EDIT)
    assert NAME not in json.dumps(rec.rec) and SUBJECT not in json.dumps(rec.rec)
    gz = prepare(
        guard,
        CHAT[0],
        b"\x1f\x8b not read",
        "application/json",
        headers=(("Content-Encoding", "gzip"), ("X-Veilpix-Purpose", "x")),
        context=ctx,
    )
    assert gz["rule"] == "record.header" and gz["where"]["model"] is None  # not decoded
    eu_only = Guard(Policy(allowed_countries=frozenset({"DE"})), guard.log)
    far = prepare(eu_only, *CHAT)
    assert (far["rule"], far["where"]["model"]) == ("destination.country", "gpt-5-mini")
    assert "prompt text" in far["what"]["categories"]


def test_the_transport_refuses_record_headers_unless_its_context_allows_them(log: AuditLog) -> None:
    seen: list[httpx2.Request] = []

    def vendor(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json=CHAT_REPLY)

    url, body = CHAT
    plain = httpx2.Client(transport=GuardTransport(httpx2.MockTransport(vendor), log=log))
    with pytest.raises(RequestBlocked, match="not allowed"):
        plain.post(url, json=body, headers={"X-Veilpix-Purpose": "x"})
    assert seen == []
    ctx = Context(purpose="p", record_headers=frozenset({"purpose"}))
    allowing = httpx2.Client(
        transport=GuardTransport(httpx2.MockTransport(vendor), log=log, context=ctx)
    )
    assert allowing.post(url, json=body, headers={"X-Veilpix-Purpose": "x"}).status_code == 200
    assert "x-veilpix-purpose" not in seen[-1].headers
    assert [(r["outcome"], r["why"]["purpose"]) for r in records(log)] == [
        ("blocked", None),
        ("sent", "x"),
    ]


# -- the doors, with the vendors' SDKs on loopback -----------------------------------------------


@pytest.fixture
def fake() -> Iterator[tuple[FakeVendor, Server]]:
    vendor = FakeVendor()
    with Server(vendor) as server:
        yield vendor, server


def run_sdks(
    fake: FakeVendor,
    openai_kw: dict[str, Any],
    anthropic_kw: dict[str, Any],
    gemini_http: dict[str, Any],
) -> None:
    """An images.edit with a named file, a chat with a system message and an image, an
    Anthropic message with a system prompt, a Gemini generateContent with instructions."""
    openai = pytest.importorskip("openai")
    anthropic = pytest.importorskip("anthropic")
    genai = pytest.importorskip("google.genai")
    from google.genai import types

    oai = openai.OpenAI(api_key=KEY, max_retries=0, **openai_kw)
    fake.reply = IMAGES_REPLY
    oai.images.edit(model="gpt-image-2", image=(NAME, PHOTO, "image/jpeg"), prompt=EDIT)
    fake.reply = CHAT_REPLY
    oai.chat.completions.create(
        model="gpt-5-mini",
        messages=[
            {"role": "system", "content": SYSTEM},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": USER},
                    {"type": "image_url", "image_url": {"url": DATA_URI}},
                ],
            },
        ],
    )
    fake.reply = MESSAGE_REPLY
    claude = anthropic.Anthropic(api_key="sk-ant-test-abcdefgh", max_retries=0, **anthropic_kw)
    claude.messages.create(
        model="claude-opus-4-6",
        max_tokens=16,
        system=SYSTEM,
        messages=[{"role": "user", "content": USER}],
    )
    fake.reply = GEMINI_REPLY
    gem = genai.Client(
        api_key="AIza-test-key-000000000000000000000000",
        http_options=types.HttpOptions(**gemini_http),
    )
    gem.models.generate_content(
        model="gemini-2.5-flash",
        contents=USER,
        config=types.GenerateContentConfig(system_instruction=SYSTEM),
    )


def check_records(log: AuditLog, door: str, *, purpose: Any = None, basis: Any = None) -> None:
    """What run_sdks must have left in the log."""
    recs = by_model(log)
    assert set(recs) == {"gpt-image-2", "gpt-5-mini", "claude-opus-4-6", "gemini-2.5-flash"}
    for rec in recs.values():
        assert rec["outcome"] == "sent" and rec["who"]["door"] == door, rec
    edit = recs["gpt-image-2"]
    assert edit["where"]["vendor"] == "openai" and edit["where"]["operation"] == "images.edit"
    assert "prompt text" in edit["what"]["categories"]
    prompt_of(log, edit, EDIT)
    assert [i["filename"] for i in edit["what"]["images"]] == ["image.jpg"]
    chat = recs["gpt-5-mini"]
    assert {"image", "prompt text", "system instructions"} <= set(chat["what"]["categories"])
    prompt_of(log, chat, f"{SYSTEM}\n\n{USER}")
    for model in ("claude-opus-4-6", "gemini-2.5-flash"):
        assert {"prompt text", "system instructions"} <= set(recs[model]["what"]["categories"])
        prompt_of(log, recs[model], f"{SYSTEM}\n\n{USER}")
    assert recs["gemini-2.5-flash"]["where"]["operation"] == "models.generate_content"
    if purpose is not None:
        assert recs["gpt-5-mini"]["why"]["purpose"] == purpose
        assert recs["gpt-5-mini"]["why"]["legal_basis"] == basis


def check_upstream(fake: FakeVendor) -> None:
    """The vendor got neutral file names and no X-Veilpix-* header."""
    for seen in fake.seen:
        assert NAME.encode() not in seen.body and b"Anna_at_home" not in seen.body
        assert not [k for k in seen.headers if k.startswith("x-veilpix")], seen.headers
    edits = [s for s in fake.seen if s.path.endswith("/images/edits")]
    assert edits, [s.path for s in fake.seen]
    from wire import Captured

    got = Captured(edits[-1].method, edits[-1].path, edits[-1].headers, edits[-1].body)
    assert [p[1] for p in form_parts(got) if p[0] == "image"] == ["image.jpg"]


def test_the_client_door(fake: tuple[FakeVendor, Server], tmp_path: Path) -> None:
    vendor, server = fake
    photo = tmp_path / NAME
    photo.write_bytes(PHOTO)
    vendor.reply = IMAGES_REPLY
    host = f"127.0.0.1:{server.port}"
    ctx = Context(app="shop", purpose="product photos", legal_basis="contract")
    with (
        AuditLog(tmp_path / "audit.db") as log,
        Client(
            Policy(vendor_hosts={host: "openai"}),
            log,
            context=ctx,
            max_retries=0,
            api_keys={"openai": KEY},
            base_urls={"openai": f"{server.url}/v1"},
        ) as client,
    ):
        client.edit("openai/gpt-image-2", EDIT, image=photo)
        (rec,) = records(log)
        assert rec["who"]["door"] == "sdk" and rec["where"]["model"] == "gpt-image-2"
        assert "prompt text" in rec["what"]["categories"]
        prompt_of(log, rec, EDIT)
        assert [i["filename"] for i in rec["what"]["images"]] == ["image.jpg"]
        assert (rec["why"]["purpose"], rec["why"]["legal_basis"]) == ("product photos", "contract")
    check_upstream(vendor)
    assert b"Anna" not in log_bytes(tmp_path / "audit.db")


def test_the_transport_door(fake: tuple[FakeVendor, Server], tmp_path: Path) -> None:
    vendor, server = fake
    host = f"127.0.0.1:{server.port}"

    def http(name: str) -> httpx2.Client:
        return httpx2.Client(
            transport=GuardTransport(
                httpx2.HTTPTransport(),
                log=log,
                policy=Policy(vendor_hosts={host: name}),
                context=Context(purpose="answers", legal_basis="contract"),
            )
        )

    with AuditLog(tmp_path / "audit.db") as log:
        run_sdks(
            vendor,
            {"base_url": f"{server.url}/v1", "http_client": http("openai")},
            {"base_url": server.url, "http_client": http("anthropic")},
            {"base_url": server.url, "httpx_client": http("gemini")},
        )
        check_records(log, "transport", purpose="answers", basis="contract")
    check_upstream(vendor)
    assert b"Anna" not in log_bytes(tmp_path / "audit.db")


GATEWAY_TOML = """
[record]
purpose = "support answers"
legal_basis = "contract"

[vendors.openai]
base_url = "{url}/v1"

[vendors.anthropic]
base_url = "{url}"
purpose = "claude drafts"
legal_basis = "legitimate_interests"

[vendors.gemini]
base_url = "{url}"

[apps.hr]
purpose = "hr photos"
record_headers = ["purpose", "legal_basis", "subject", "consent"]
"""


@dataclass
class GatewayRun:
    vendor: FakeVendor
    server: Server
    log: AuditLog
    path: Path

    def post(self, *headers: tuple[str, str], body: Any = None) -> httpx2.Response:
        return httpx2.post(
            f"{self.server.url}/openai/chat/completions",
            json=body or CHAT[1],
            headers=[("Authorization", f"Bearer {KEY}"), *headers],
            timeout=30,
        )


@pytest.fixture
def gateway(fake: tuple[FakeVendor, Server], tmp_path: Path) -> Iterator[GatewayRun]:
    vendor, upstream = fake
    config = tmp_path / "veilpix.toml"
    config.write_text(GATEWAY_TOML.format(url=upstream.url))
    app = build_gateway(load_config(config), log_path=tmp_path / "audit.db")
    log = app.guards[""].log
    try:
        with Server(app) as server:
            yield GatewayRun(vendor, server, log, tmp_path / "audit.db")
    finally:
        log.close()


def test_the_gateway_door(gateway: GatewayRun) -> None:
    url = gateway.server.url
    run_sdks(
        gateway.vendor,
        {"base_url": f"{url}/openai"},
        {"base_url": f"{url}/anthropic"},
        {"base_url": f"{url}/gemini"},
    )
    check_records(gateway.log, "gateway", purpose="support answers", basis="contract")
    claude = by_model(gateway.log)["claude-opus-4-6"]  # [vendors.anthropic] over [record]
    assert (claude["why"]["purpose"], claude["why"]["legal_basis"]) == (
        "claude drafts",
        "legitimate_interests",
    )
    check_upstream(gateway.vendor)
    gateway.log.close()
    assert b"Anna" not in log_bytes(gateway.path)


def test_gateway_record_headers_for_an_app_that_may_send_them(gateway: GatewayRun) -> None:
    openai = pytest.importorskip("openai")
    gateway.vendor.reply = CHAT_REPLY
    client = openai.OpenAI(
        api_key=KEY,
        base_url=f"{gateway.server.url}/openai",
        max_retries=0,
        default_headers={
            "X-Veilpix-App": "hr",
            "X-Veilpix-Purpose": "onboarding",
            "X-Veilpix-Legal-Basis": "legal_obligation",
            "X-Veilpix-Subject": SUBJECT,
            "X-Veilpix-Consent": "form-2026-17",
            "X-Veilpix-Debug": "anything",
        },
    )
    client.chat.completions.create(model="gpt-5-mini", messages=[{"role": "user", "content": USER}])
    (rec,) = records(gateway.log)
    assert (rec["why"]["purpose"], rec["why"]["legal_basis"]) == ("onboarding", "legal_obligation")
    assert (rec["why"]["subject_ref"], rec["why"]["consent_ref"]) == (SUBJECT, "form-2026-17")
    assert rec["who"]["app"] == "hr" and rec["where"]["model"] == "gpt-5-mini"
    assert not [k for k in gateway.vendor.last.headers if k.startswith("x-veilpix")]
    # the subject and consent references are sealed under the subject's key: not in clear
    gateway.log.close()
    stored = log_bytes(gateway.path)
    assert SUBJECT.encode() not in stored and b"form-2026-17" not in stored


def test_gateway_refuses_record_headers_the_config_does_not_allow(gateway: GatewayRun) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(
        api_key=KEY,
        base_url=f"{gateway.server.url}/openai",
        max_retries=0,
        default_headers={"X-Veilpix-Purpose": "anything goes"},
    )
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gpt-5-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert "X-Veilpix-Purpose header is not allowed" in str(info.value)
    assert gateway.vendor.seen == []  # nothing left
    (rec,) = records(gateway.log)  # the refusal is recorded as a block, with the config's why
    assert (rec["outcome"], rec["rule"]) == ("blocked", "record.header")
    assert rec["why"]["purpose"] == "support answers" and rec["where"]["model"] == "gpt-5-mini"


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ((("X-Veilpix-Legal-Basis", "vibes"),), "not one of GDPR"),
        ((("X-Veilpix-Purpose", "p" * 5000),), "over 200"),
        ((("X-Veilpix-Purpose", "a"), ("X-Veilpix-Purpose", "b")), "sent twice"),
        ((("X-Veilpix-Subject", "%0d%0aX-Evil: 1"),), "control or invisible characters"),
    ],
)
def test_gateway_attack_cases_get_a_400_and_send_nothing(
    gateway: GatewayRun, headers: tuple[tuple[str, str], ...], says: str
) -> None:
    resp = gateway.post(("X-Veilpix-App", "hr"), *headers)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "record.header" and says in error["message"]
    assert gateway.vendor.seen == []
    assert [(r["outcome"], r["rule"]) for r in records(gateway.log)] == [
        ("blocked", "record.header")
    ]


@pytest.mark.parametrize(
    "line",
    [
        b"X-Veilpix-Purpose: f\xfcr Anna\r\n",  # latin-1, not UTF-8
        b"X-Veilpix-Purpose: \xc3\xbc\r\n",  # raw UTF-8: not visible ASCII either
        b"X-Veilpix-Purpose: a\rX-Evil: 1\r\n",  # a bare CR (the server may refuse it first)
        b"X-Veilpix-Purpose: a\x00b\r\n",
    ],
)
def test_gateway_raw_header_bytes(gateway: GatewayRun, line: bytes) -> None:
    body = json.dumps(CHAT[1]).encode()
    head = (
        b"POST /openai/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"X-Veilpix-App: hr\r\nContent-Type: application/json\r\n"
        + line
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gateway.server.port), timeout=10) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.split(b" ", 2)[1] == b"400", answer[:300]
    assert gateway.vendor.seen == []


def test_gateway_model_fields_that_are_not_names(gateway: GatewayRun) -> None:
    for model in ({"$ne": None}, ["a", "b"], "m" * 50_000):
        resp = gateway.post(body={"model": model, "messages": [{"role": "user", "content": "x"}]})
        assert resp.status_code == 200, resp.text
    models = [r["where"]["model"] for r in records(gateway.log)]
    assert sorted(models, key=str) == sorted([None, None, "m" * 199 + "…"], key=str)


# -- the intercept door ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> VendorPKI:
    folder = tmp_path_factory.mktemp("rc-vendor-pki")
    return VendorPKI.create(folder, "record completeness vendor root", OPENAI, ANTHROPIC, GEMINI)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from veilpix._ca import Authority

    return Authority.init(tmp_path_factory.mktemp("rc-intercept") / "ca")


def test_the_intercept_door(pki: VendorPKI, ca: Any, tmp_path: Path) -> None:
    openai = pytest.importorskip("openai")
    vendor = FakeVendor()
    with TLSServer(vendor, pki) as upstream, AuditLog(tmp_path / "audit.db") as log:
        address = ("127.0.0.1", upstream.port)
        pool = UpstreamPool(
            resolve={h: address for h in (OPENAI, ANTHROPIC, GEMINI)}, extra_ca=str(pki.ca)
        )
        gateway = Gateway(
            {"": Guard(Policy(), log)},
            upstream=pool,
            records={
                "": {
                    "purpose": "support answers",
                    "legal_basis": "contract",
                    "headers": ["purpose", "subject"],
                }
            },
        )
        with Running(InterceptProxy(gateway, ca)) as proxy:
            verify = ssl.create_default_context(cafile=str(ca.cert_path))

            def http() -> httpx2.Client:
                return httpx2.Client(proxy=proxy.url, verify=verify, trust_env=False)

            run_sdks(
                vendor, {"http_client": http()}, {"http_client": http()}, {"httpx_client": http()}
            )
            check_records(log, "intercept", purpose="support answers", basis="contract")
            check_upstream(vendor)
            assert vendor.seen[0].headers["host"] == OPENAI
            # a header the config allows; one it does not
            client = openai.OpenAI(
                api_key=KEY,
                max_retries=0,
                http_client=http(),
                default_headers={"X-Veilpix-Purpose": "escalation", "X-Veilpix-Subject": SUBJECT},
            )
            vendor.reply = CHAT_REPLY
            client.chat.completions.create(
                model="gpt-5-nano", messages=[{"role": "user", "content": "x"}]
            )
            rec = by_model(log)["gpt-5-nano"]
            assert (rec["why"]["purpose"], rec["why"]["subject_ref"]) == ("escalation", SUBJECT)
            assert not [k for k in vendor.last.headers if k.startswith("x-veilpix")]
            sent = len(vendor.seen)
            client = openai.OpenAI(
                api_key=KEY,
                max_retries=0,
                http_client=http(),
                default_headers={"X-Veilpix-Legal-Basis": "consent"},
            )
            with pytest.raises(openai.BadRequestError, match="not allowed"):
                client.chat.completions.create(
                    model="gpt-5-nano", messages=[{"role": "user", "content": "x"}]
                )
            assert len(vendor.seen) == sent
            blocked = [r for r in records(log) if r["outcome"] == "blocked"]
            assert [(r["rule"], r["who"]["door"]) for r in blocked] == [
                ("record.header", "intercept")
            ]
    stored = log_bytes(tmp_path / "audit.db")
    assert b"Anna" not in stored and SUBJECT.encode() not in stored


def test_free_text_a_door_hands_the_log_is_clipped(tmp_path: Path) -> None:
    """Whatever builds a Transfer (an app through Context, a custom door), the log keeps
    every free-text field short and on one line."""
    from veilpix import AuditLog, Transfer

    with AuditLog(tmp_path / "audit.db") as log:
        pending = log.begin(
            Transfer(
                vendor="openai",
                url="https://api.openai.com/v1/images/edits",
                model="m" * 100_000,
                purpose="line one\nline two " + "p" * 5000,
                app="shop\r\n",
                legal_basis="contract",
                consent_ref="c" * 10_000,
            )
        )
        pending.finish(status=200)
        rec = log.get(pending.id)
    assert len(rec.where["model"]) <= 200 and rec.where["model"].endswith("…")
    assert "\n" not in rec.why["purpose"] and len(rec.why["purpose"]) <= 200
    assert rec.who["app"] == "shop" and len(rec.why["consent_ref"]) <= 200


def test_scheme_credentials_are_masked_whatever_space_follows_the_scheme() -> None:
    """The cheap trigger for "Bearer x" / "Key x" schemes must not miss any whitespace the
    pattern itself accepts, nor fire on "key" alone (redacted ?key= parameters)."""
    from veilpix.audit._record import REDACTED, scrub_secrets

    for space in (" ", "\t", "\u00a0", "\u2003", "\u3000"):
        text = f'{{"note":"Key{space}abcdefgh12345678","url":"?key=[redacted]"}}'
        assert "abcdefgh12345678" not in scrub_secrets(text), repr(space)
        assert REDACTED in scrub_secrets(text)
    plain = '{"url":"https://x/?key=%5Bredacted%5D","h":{"x-api-key":"[redacted]"}}'
    assert scrub_secrets(plain) == plain


# -- found by the adversarial review of these doors (each a way round them, now closed) --------


def test_rfc2231_continued_file_names_are_replaced_too(guard: Guard) -> None:
    boundary = "----vpx"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\ngpt-image-1\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            "filename*0*=UTF-8''Anna%20Secret; filename*1*=Passport.jpg\r\n"
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + PHOTO
        + f"\r\n--{boundary}--\r\n".encode()
    )
    rec = prepare(
        guard,
        "https://api.openai.com/v1/images/edits",
        body,
        f"multipart/form-data; boundary={boundary}",
    )
    assert b"Anna" not in rec.sent.body and b"Passport" not in rec.sent.body
    assert b'filename="image.jpg"' in rec.sent.body


def test_only_common_extensions_survive_a_neutral_name() -> None:
    from veilpix.finder import neutral_name_for

    assert neutral_name_for(b"%PDF-1.7 ...", "Anna Schmidt contract.pdf") == "file.pdf"
    assert neutral_name_for(b"plain text", "anna.schmidt") == "file"
    assert neutral_name_for(b"plain text", "Scan of passport.Mueller", 2) == "file-2"


def test_file_name_headers_and_malformed_dispositions_never_reach_the_log() -> None:
    from veilpix._errors import MalformedMultipart
    from veilpix.audit._record import REDACTED, redact_headers
    from veilpix.codec import split_params as _split_params

    assert redact_headers({"X-Fal-File-Name": NAME})["x-fal-file-name"] == REDACTED
    with pytest.raises(MalformedMultipart) as exc:
        _split_params(
            f'form-data; name="image"; @=1; filename="{NAME}"',
            "Content-Disposition",
            MalformedMultipart,
        )
    assert NAME not in str(exc.value) and "Anna" not in str(exc.value)


def test_record_header_names_and_values_that_hide_something() -> None:
    from veilpix.guard._record_facts import HeaderRefused, is_record_header, read_record_headers

    assert is_record_header(" X-Veilpix-Subject") and is_record_header("X-Veilpix-Subject\t")
    for value in ("abc%E2%80%AEdef", "a%E2%80%8Bb", "x%EF%BB%BFy"):  # RLO, zero width, BOM
        with pytest.raises(HeaderRefused, match="invisible"):
            read_record_headers([("X-Veilpix-Purpose", value)], ALL)
    with pytest.raises(HeaderRefused) as exc:
        read_record_headers([("X-Veilpix-Legal-Basis", "customer-4711-ssn-123")], ALL)
    assert "4711" not in exc.value.message  # a refused value is not repeated into the log


def test_lone_surrogates_in_a_request_s_text_do_not_fail_the_record(guard: Guard) -> None:
    body = json.dumps(
        {"model": "gpt-\ud800x", "messages": [{"role": "user", "content": "hi \udc00 there"}]}
    )
    rec = prepare(
        guard, "https://api.openai.com/v1/chat/completions", body.encode(), "application/json"
    )
    assert rec["where"]["model"] == "gpt- x" and rec["what"]["prompt"]["length"] > 0


@pytest.mark.parametrize(
    "headers",
    [
        (("X-Veilpix_Debug", "leaked"), ("x_veilpix-debug", "leaked")),
        (("X-Veilpix_Token", "secret-gw-token"),),
    ],
)
def test_no_spelling_of_an_x_veilpix_header_reaches_the_vendor(
    gateway: GatewayRun, headers: tuple[tuple[str, str], ...]
) -> None:
    resp = gateway.post(*headers)
    assert resp.status_code == 200, resp.text
    sent = gateway.vendor.last.headers
    assert not [k for k in sent if "veilpix" in k.lower()], sent


def test_connection_cannot_hide_a_record_header_from_the_guard(gateway: GatewayRun) -> None:
    resp = gateway.post(("Connection", "X-Veilpix-Purpose"), ("X-Veilpix-Purpose", "no"))
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "record.header"
    assert gateway.vendor.seen == []


def test_a_header_name_http_does_not_allow_is_refused_and_not_recorded(guard: Guard) -> None:
    rec = headed(guard, ("X-Veilpix-Subject:x", SUBJECT), allowed=frozenset())
    assert (rec["outcome"], rec["rule"]) == ("blocked", "record.header")
    assert SUBJECT not in json.dumps(rec.rec)


def test_every_vendor_s_credential_header_and_parameter_is_redacted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The adapters say which headers and query parameters carry a vendor's credentials;
    the log's redaction reads them from there, so a vendor added with a header of its own
    is covered without a second list (shown with a made-up one)."""
    from dataclasses import replace

    import veilpix.adapters as adapters
    from veilpix.audit._record import (
        REDACTED,
        _secret_header,
        _vendor_secrets,
        redact_headers,
        redact_url,
    )

    for vendor in adapters.vendors():
        for name in vendor.auth_headers:
            assert redact_headers({name: "s3cr3t-value"})[name.lower()] == REDACTED, vendor.name
        for param in vendor.auth_query:
            assert "s3cr3t" not in redact_url(f"{vendor.base_url}/x?{param}=s3cr3t")
    made_up = replace(
        adapters.vendors()[0], name="acme", auth_headers=("x-acme-pass",), auth_query=("acmepin",)
    )
    known = adapters.vendors()
    monkeypatch.setattr(adapters, "vendors", lambda: (*known, made_up))
    _vendor_secrets.cache_clear()
    _secret_header.cache_clear()
    redact_url.cache_clear()
    try:
        assert redact_headers({"X-Acme-Pass": "hunter22"})["x-acme-pass"] == REDACTED
        assert "1234" not in redact_url("https://api.acme.example/v1?acmepin=1234")
    finally:
        _vendor_secrets.cache_clear()
        _secret_header.cache_clear()
        redact_url.cache_clear()


@pytest.mark.parametrize(
    ("url", "body", "field", "headers"),
    [
        (
            "https://api.openai.com/v1/uploads",
            {
                "purpose": "assistants",
                "filename": "Anna Schmidt contract.pdf",
                "bytes": 1000,
                "mime_type": "application/pdf",
            },
            ("filename",),
            (),
        ),
        (
            "https://rest.fal.ai/storage/upload/initiate",
            {"file_name": "Anna_Passport.jpg", "content_type": "image/jpeg"},
            ("file_name",),
            (),
        ),
        (
            "https://generativelanguage.googleapis.com/upload/v1beta/files",
            {"file": {"display_name": "IMG_2041_Anna_at_home.jpg"}},
            ("file", "display_name"),
            (("X-Goog-Upload-Command", "start"), ("X-Goog-Upload-Protocol", "resumable")),
        ),
    ],
)
def test_an_upload_s_first_request_names_the_file_neutrally(
    guard: Guard,
    url: str,
    body: dict[str, Any],
    field: tuple[str, ...],
    headers: tuple[tuple[str, str], ...],
) -> None:
    """The request that starts an upload names the file in JSON; the bytes come later. The
    name leaves as a neutral one with a common extension, never the app's."""
    rec = prepare(guard, url, body, headers=headers)
    assert rec.sent is not None, rec.rec
    sent = json.loads(rec.sent.body)
    for key in field:
        sent = sent[key]
    assert sent in ("file.pdf", "file.jpg"), sent
    assert b"Anna" not in rec.sent.body and "Anna" not in json.dumps(rec.rec)
