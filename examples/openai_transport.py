"""Send photos to OpenAI through veilpix, with the official openai SDK (openai 3.x).

    python examples/openai_transport.py [FOLDER]
    OPENAI_API_KEY=sk-... python examples/openai_transport.py --live [FOLDER]

veilpix plugs into the SDK as its HTTP transport. Every request the SDK builds goes through
it: the images in it are sanitized (GPS, camera, serial numbers and the rest removed), the
destination is checked against the policy, the vendor's privacy controls are added, and the
call is written to a transfer log, all before a byte leaves. A request that breaks the policy
raises veilpix.RequestBlocked and is never sent.

Offline (the default) there is no network and no API key: the transport's inner transport is
a stand-in for api.openai.com that prints what arrived and whether a GPS position or an EXIF
block survived (checked with veilpix.inspect on the received bytes). With --live and
OPENAI_API_KEY set, the same code sends to OpenAI for real (an image edit and a chat call,
which cost money); the blocked call is blocked there too, before anything is sent.

The transfer log is written to FOLDER/audit.db (default: a new temporary folder), never into
the veilpix user data folder. Exit code 0 when everything went as shown.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import tempfile
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import httpx2
import openai

import veilpix
from veilpix.transports import GuardTransport

IMAGE_MODEL = os.environ.get("OPENAI_IMAGE_MODEL", "gpt-image-2")
CHAT_MODEL = os.environ.get("OPENAI_CHAT_MODEL", "gpt-5.4-mini")
CONTEXT = veilpix.Context(app="shop", purpose="product photo editing")


def sample_jpeg() -> bytes:
    """A 640x480 JPEG carrying what a phone photo carries: GPS position, camera, serial."""
    import piexif
    from PIL import Image

    exif = piexif.dump(
        {
            "0th": {piexif.ImageIFD.Make: b"Apple", piexif.ImageIFD.Model: b"iPhone 15"},
            "Exif": {piexif.ExifIFD.BodySerialNumber: b"F2LZK0XYN73D"},
            "GPS": {
                piexif.GPSIFD.GPSLatitudeRef: b"N",
                piexif.GPSIFD.GPSLatitude: ((48, 1), (51, 1), (2964, 100)),
                piexif.GPSIFD.GPSLongitudeRef: b"E",
                piexif.GPSIFD.GPSLongitude: ((2, 1), (17, 1), (4008, 100)),
            },
        }
    )
    picture = Image.linear_gradient("L").resize((640, 480)).convert("RGB")
    buf = io.BytesIO()
    picture.save(buf, "JPEG", quality=85, exif=exif)
    return buf.getvalue()


def describe(data: bytes) -> str:
    """What an image carries, in one line (read with veilpix.inspect, nothing changed)."""
    info = veilpix.inspect(data)
    exif = any("exif" in part.name.lower() for part in info.containers)
    gps = f"GPS {info.gps.latitude:.5f}, {info.gps.longitude:.5f}" if info.gps else "no GPS"
    return (
        f"{info.format} {info.width}x{info.height}, {info.bytes:,} bytes, {gps}, "
        f"{'EXIF' if exif else 'no EXIF'}, {len(info.findings)} metadata finding(s)"
    )


# -- the stand-in for api.openai.com ---------------------------------------------------------


def images_in(request: httpx2.Request) -> list[bytes]:
    """The images in a request as it arrived: multipart file parts and data: URIs in JSON."""
    ctype = request.headers.get("content-type", "")
    body = request.content
    if ctype.startswith("multipart/form-data"):
        head = f"Content-Type: {ctype}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + body)
        return [
            part.get_payload(decode=True) for part in message.iter_parts() if part.get_filename()
        ]
    found: list[bytes] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str) and node.startswith("data:image/"):
            found.append(base64.b64decode(node.partition(",")[2]))

    walk(json.loads(body))
    return found


class FakeOpenAI:
    """Answers like OpenAI would and prints what reached it."""

    def __init__(self) -> None:
        self.received = 0

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.received += 1
        print(f"  [fake OpenAI] {request.method} {request.url.host}{request.url.path}")
        print(
            f"    body {len(request.content):,} bytes, Content-Usage: "
            f"{request.headers.get('content-usage')}"
        )
        for data in images_in(request):
            print(f"    image: {describe(data)}")
        if request.url.path.endswith("/images/edits"):
            tiny = base64.b64encode(veilpix.sanitize(sample_jpeg()).data).decode()
            reply: dict[str, Any] = {"created": 1, "data": [{"b64_json": tiny}]}
        else:
            sent = json.loads(request.content)
            print(f"    store: {sent.get('store')}")
            reply = {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": sent["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "A grey gradient."},
                    }
                ],
            }
        return httpx2.Response(200, json=reply, headers={"x-request-id": f"req_{self.received}"})


# -- the calls -------------------------------------------------------------------------------


def openai_client(
    policy: veilpix.Policy, log: veilpix.AuditLog, inner: httpx2.BaseTransport | None
) -> openai.OpenAI:
    """The official client with veilpix as its transport. ``inner`` sends what veilpix lets
    through: None for httpx2's own transport (the network), or the stand-in. The one-line
    form is openai.OpenAI(http_client=veilpix.http_client(policy=..., log=...))."""
    transport = GuardTransport(inner, policy=policy, log=log, context=CONTEXT)
    api_key = os.environ["OPENAI_API_KEY"] if inner is None else "sk-offline-example-0000"
    return openai.OpenAI(api_key=api_key, http_client=httpx2.Client(transport=transport))


def show(receipt: veilpix.Receipt) -> None:
    print(
        f"  receipt: {receipt.vendor} {receipt.operation} at {receipt.host} "
        f"({receipt.country}, {receipt.legal_entity})"
    )
    print(f"    removed: {receipt.removed}")
    print(f"    controls applied: {', '.join(receipt.controls_applied)}")
    print(f"    account-level (yours to check): {', '.join(receipt.controls_account_level)}")
    print(f"    log record: {receipt.record_id}")


def main(argv: list[str]) -> int:
    live = "--live" in argv
    args = [a for a in argv if a != "--live"]
    if live and not os.environ.get("OPENAI_API_KEY"):
        sys.exit("--live needs OPENAI_API_KEY in the environment")
    out = Path(args[0]) if args else Path(tempfile.mkdtemp(prefix="veilpix-openai-"))
    out.mkdir(parents=True, exist_ok=True)

    photo = sample_jpeg()
    print(f"the photo: {describe(photo)}\n")
    fake = FakeOpenAI()
    inner = None if live else httpx2.MockTransport(fake)

    with veilpix.AuditLog(out / "audit.db") as log:
        client = openai_client(veilpix.Policy(), log, inner)

        # 1. An image edit (multipart). with_raw_response gives the HTTP response, which
        #    carries veilpix's receipt; client.images.edit(...) alone works the same way.
        print("1. images.edit")
        raw = client.images.with_raw_response.edit(
            model=IMAGE_MODEL,
            image=("product.jpg", photo, "image/jpeg"),
            prompt="put the product on a white background",
        )
        edited = raw.parse()
        print(f"  got {len(edited.data or [])} image(s) back")
        show(raw.http_response.extensions["veilpix_receipt"])

        # 2. A chat call with the photo inline as a data: URI (JSON).
        print("\n2. chat.completions.create with a data: URI")
        uri = "data:image/jpeg;base64," + base64.b64encode(photo).decode()
        messages: Any = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe this picture in one sentence."},
                    {"type": "image_url", "image_url": {"url": uri}},
                ],
            }
        ]
        raw = client.chat.completions.with_raw_response.create(model=CHAT_MODEL, messages=messages)
        print(f"  answer: {raw.parse().choices[0].message.content}")
        show(raw.http_response.extensions["veilpix_receipt"])

        # 3. A policy that keeps data in the EEA: api.openai.com processes in the US, so the
        #    call is refused before a byte leaves. openai 3.x lets RequestBlocked through as it is.
        print("\n3. the same chat call under Policy(allowed_countries=veilpix.EEA)")
        eea_only = openai_client(veilpix.Policy(allowed_countries=veilpix.EEA), log, inner)
        before = fake.received
        try:
            eea_only.chat.completions.create(model=CHAT_MODEL, messages=messages)
        except veilpix.RequestBlocked as exc:
            print(f"  RequestBlocked: rule={exc.rule}")
            print(f"    reason: {exc.reason}")
            print(f"    log record: {exc.record_id}")
        else:
            print("  not blocked: unexpected")
            return 1
        print(f"  requests that reached the vendor: {fake.received - before}")

        # 4. Route to OpenAI's EU host instead (needs a data-residency project, so offline only).
        if not live:
            print("\n4. the same call under Policy(allowed_countries=veilpix.EEA, region='eu')")
            policy = veilpix.Policy(allowed_countries=veilpix.EEA, region="eu")
            eu = openai_client(policy, log, inner)
            raw = eu.chat.completions.with_raw_response.create(model=CHAT_MODEL, messages=messages)
            show(raw.http_response.extensions["veilpix_receipt"])

        # Where it all went: one record per call, the blocked one with its rule.
        print(f"\nthe transfer log, {out / 'audit.db'}:")
        for rec in log.records():
            d = rec.to_dict()
            how = f"HTTP {d['status']}" if rec.outcome == "sent" else f"rule {d['rule']}"
            print(
                f"  {rec.id[:8]}  {rec.outcome:<8} {d['where']['host']:<18} "
                f"{d['where']['country']}  {d['what']['image_count']} image(s)  {how}"
            )
    print(f"\nmore: veilpix audit list --log {out / 'audit.db'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
