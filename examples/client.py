"""Edit a photo with OpenAI and Black Forest Labs, and ask Claude about it, with veilpix.Client.

    python examples/client.py [FOLDER]
    OPENAI_API_KEY=... BFL_API_KEY=... ANTHROPIC_API_KEY=... python examples/client.py --live [FOLDER]

veilpix.Client names models LiteLLM-style ("openai/gpt-image-2", "bfl/flux-kontext-pro") and
sends every request through the veilpix guard: the photo's GPS position, camera and serial
number are removed before it leaves, the destination is checked against the policy, and every
request (the submit and each poll) is written to the transfer log first. What the vendors send
back is handed over unchanged.

Offline (the default) there is no network and no API key: the Client's inner transport is a
fake of api.openai.com, api.bfl.ai and api.anthropic.com that prints what arrived and whether
a GPS position or an EXIF block survived (checked with veilpix.inspect on the received bytes).
The fake BFL answers "Pending" twice before "Ready", so the Client polls, then downloads the
result from the delivery host with its separate client, which carries no API key.

With --live the same calls go to the real vendors, with the keys from OPENAI_API_KEY,
BFL_API_KEY and ANTHROPIC_API_KEY (a vendor whose key is not set is skipped). They cost
money. The models can be changed with OPENAI_IMAGE_MODEL, BFL_MODEL and ANTHROPIC_MODEL.

Written to FOLDER (default: a new temporary folder), never into the veilpix user data folder:
the edited images as the vendors returned them (openai.png, bfl.jpg) and the transfer
log (audit.db and its key file). Exit code 0 when every call succeeded and the log verifies.
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import sys
import tempfile
import zlib
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import httpx2

import veilpix

MODELS = {
    "openai": "openai/" + os.environ.get("OPENAI_IMAGE_MODEL", "gpt-image-2"),
    "bfl": "bfl/" + os.environ.get("BFL_MODEL", "flux-kontext-pro"),
    "anthropic": "anthropic/" + os.environ.get("ANTHROPIC_MODEL", "claude-opus-4-6"),
}
KEYS = {"openai": "OPENAI_API_KEY", "bfl": "BFL_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
OFFLINE_KEYS = {
    "openai": "sk-offline-example",
    "bfl": "bfl-offline-example",
    "anthropic": "sk-ant-offline-example",
}
CONTEXT = veilpix.Context(app="example", purpose="product photo editing")
PROMPT = "put a red hat on the subject"


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


def summary(data: bytes) -> str:
    """What an image carries, in one line (read with veilpix.inspect, nothing changed)."""
    info = veilpix.inspect(data)
    exif = any("exif" in part.name.lower() for part in info.containers)
    gps = f"GPS {info.gps.latitude:.5f}, {info.gps.longitude:.5f}" if info.gps else "no GPS"
    return (
        f"{info.format} {info.width}x{info.height}, {info.bytes:,} bytes, {gps}, "
        f"{'EXIF' if exif else 'no EXIF'}, {len(info.findings)} metadata finding(s)"
    )


# -- the fake vendors --------------------------------------------------------------------------


def images_in(request: httpx2.Request) -> list[bytes]:
    """The images in a request as it arrived: multipart file parts (OpenAI), base64 fields
    (BFL's input_image, Anthropic's image blocks) and data: URIs."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        head = f"Content-Type: {ctype}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + request.content)
        return [p.get_payload(decode=True) for p in message.iter_parts() if p.get_filename()]
    found: list[bytes] = []

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            if node.get("type") == "base64" and isinstance(node.get("data"), str):
                found.append(base64.b64decode(node["data"]))  # an Anthropic image source
                return
            for name, value in node.items():
                walk(value, name)
        elif isinstance(node, list):
            for value in node:
                walk(value, key)
        elif isinstance(node, str) and node.startswith("data:image/"):
            found.append(base64.b64decode(node.partition(",")[2]))
        elif isinstance(node, str) and key.startswith("input_image"):
            found.append(base64.b64decode(node))  # BFL: bare base64

    walk(json.loads(request.content))
    return found


def painted(received: bytes, fmt: str, *, c2pa: bool = False) -> bytes:
    """The "edited" image: what arrived, with a red hat; optionally with a stand-in C2PA
    manifest (a PNG caBX chunk), as OpenAI marks its images."""
    from PIL import Image, ImageDraw

    im = Image.open(io.BytesIO(received)).convert("RGB")
    w, h = im.size
    ImageDraw.Draw(im).polygon(
        [(w * 0.35, h * 0.4), (w * 0.65, h * 0.4), (w * 0.5, h * 0.1)], fill=(200, 30, 30)
    )
    buf = io.BytesIO()
    im.save(buf, fmt)
    data = buf.getvalue()
    if c2pa:
        source = b"http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
        manifest = b"jumbjumdc2pa" + bytes(12) + b'{"digitalSourceType": "' + source + b'"}'
        chunk = struct.pack(">I", len(manifest)) + b"caBX" + manifest
        chunk += struct.pack(">I", zlib.crc32(b"caBX" + manifest))
        data = data[:33] + chunk + data[33:]  # after the PNG signature and IHDR
    return data


class FakeVendors:
    """Answers like OpenAI, Black Forest Labs and Anthropic would, and prints what reached
    them. ``api`` stands in for the vendors' API hosts (the Client's ``transport``),
    ``delivery`` for BFL's delivery host (its ``download_transport``)."""

    JOB = "e1b6c48a-4e4f-4c3d-9d1a-2b7c0f0e9a11"

    def __init__(self) -> None:
        self.polls = 0
        self.result = b""

    def api(self, request: httpx2.Request) -> httpx2.Response:
        host, path = request.url.host, request.url.path
        print(f"  [fake {host}] {request.method} {path}")
        received = images_in(request) if request.method == "POST" else []
        for data in received:
            print(f"    image: {summary(data)}")
        if host == "api.openai.com" and path == "/v1/images/edits":
            out = base64.b64encode(painted(received[0], "PNG", c2pa=True)).decode()
            return httpx2.Response(
                200, json={"created": 1, "output_format": "png", "data": [{"b64_json": out}]}
            )
        if host == "api.bfl.ai" and request.method == "POST":
            self.polls, self.result = 0, painted(received[0], "JPEG")
            poll = f"https://api.us1.bfl.ai/v1/get_result?id={self.JOB}"
            return httpx2.Response(200, json={"id": self.JOB, "polling_url": poll})
        if host == "api.us1.bfl.ai" and path == "/v1/get_result":
            self.polls += 1
            if self.polls < 3:
                print("    -> Pending")
                return httpx2.Response(200, json={"id": self.JOB, "status": "Pending"})
            sample = f"https://delivery-us1.bfl.ai/results/{self.JOB}/sample.jpeg?se=2099&sig=x"
            print("    -> Ready")
            return httpx2.Response(
                200, json={"id": self.JOB, "status": "Ready", "result": {"sample": sample}}
            )
        if host == "api.anthropic.com" and path == "/v1/messages":
            w, h = veilpix.inspect(received[0]).width, veilpix.inspect(received[0]).height
            text = f"A {w}x{h} picture: a grey gradient, dark on the left, light on the right."
            return httpx2.Response(
                200,
                json={
                    "id": "msg_01",
                    "type": "message",
                    "role": "assistant",
                    "stop_reason": "end_turn",
                    "content": [{"type": "text", "text": text}],
                },
            )
        return httpx2.Response(404, json={"error": {"message": f"no route {host}{path}"}})

    def delivery(self, request: httpx2.Request) -> httpx2.Response:
        keyed = {"x-key", "authorization"} & set(request.headers)
        print(
            f"  [fake {request.url.host}] GET {request.url.path} "
            f"(API key sent: {'yes' if keyed else 'no'})"
        )
        return httpx2.Response(200, content=self.result, headers={"content-type": "image/jpeg"})


# -- the calls ---------------------------------------------------------------------------------


def show(result: veilpix.Result, out: Path, name: str) -> None:
    image = result.image
    saved = image.save(out / f"{name}{image.extension}")
    print(
        f"  got {len(result.images)} image(s): {image.media_type}, "
        f"provenance {image.provenance or 'none'}; saved unchanged to {saved}"
    )
    print(f"  removed before sending: {result.removed}")
    print(f"  transfer-log records: {', '.join(r[:8] for r in result.record_ids)}")


def main(argv: list[str]) -> int:
    live = "--live" in argv
    args = [a for a in argv if a != "--live"]
    vendors = [v for v in KEYS if not live or os.environ.get(KEYS[v])]
    if not vendors:
        sys.exit("--live needs OPENAI_API_KEY, BFL_API_KEY or ANTHROPIC_API_KEY in the environment")
    out = Path(args[0]) if args else Path(tempfile.mkdtemp(prefix="veilpix-client-"))
    out.mkdir(parents=True, exist_ok=True)

    photo = sample_jpeg()
    print(f"the photo: {summary(photo)}\n")
    fake = FakeVendors()
    offline: dict[str, Any] = {
        "api_keys": OFFLINE_KEYS,
        "transport": httpx2.MockTransport(fake.api),
        "download_transport": httpx2.MockTransport(fake.delivery),
        "sleep": lambda seconds: None,  # the fake is ready at once; no need to wait
    }
    failed = 0
    settings = {} if live else offline
    with (
        veilpix.AuditLog(out / "audit.db") as log,
        veilpix.Client(veilpix.Policy(), log, context=CONTEXT, **settings) as client,
    ):
        steps = [
            (
                "openai",
                f"1. edit with {MODELS['openai']} (multipart, base64 result)",
                lambda: client.edit(MODELS["openai"], PROMPT, photo),
            ),
            (
                "bfl",
                f"2. edit with {MODELS['bfl']} (submit, poll, download)",
                lambda: client.edit(MODELS["bfl"], PROMPT, photo),
            ),
            (
                "anthropic",
                f"3. describe with {MODELS['anthropic']}",
                lambda: client.describe(MODELS["anthropic"], photo, "Describe it in one line."),
            ),
        ]
        for vendor, title, call in steps:
            print(title)
            if vendor not in vendors:
                print(f"  skipped: {KEYS[vendor]} is not set\n")
                continue
            try:
                result = call()
            except veilpix.VeilpixError as exc:
                print(f"  {type(exc).__name__}: {exc}\n")
                failed += 1
                continue
            if result.images:
                show(result, out, vendor)
            else:
                print(f"  answer: {result.text}")
                print(f"  removed before sending: {result.removed}")
                print(f"  transfer-log record: {(result.record_id or '')[:8]}")
            print()

        print(f"the transfer log, {out / 'audit.db'}:")
        for rec in log.records():
            d = rec.to_dict()
            print(
                f"  {rec.id[:8]}  {rec.outcome:<6} {d['where']['method']:<4} "
                f"{d['where']['host']:<18} {d['what']['image_count']} image(s)  "
                f"HTTP {d['status']}"
            )
    check = veilpix.verify_log(out / "audit.db")
    print(f"log verifies: {'OK' if check.ok else check.first_problem} ({check.records} records)")
    print(f"\nmore: veilpix audit list --log {out / 'audit.db'}")
    return 0 if check.ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
