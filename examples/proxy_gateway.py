"""Route an unchanged app through the veilpix gateway (veilpix.proxy), offline.

    python examples/proxy_gateway.py [FOLDER]

The gateway is what `veilpix proxy` runs: apps point their vendor SDK's base URL at it
(OPENAI_BASE_URL=http://127.0.0.1:8787/openai) and change nothing else. Every request is
sanitized, checked against the policy in veilpix.toml and written to the transfer log before
it goes on to the vendor; a blocked call gets a vendor-shaped 403, so the app's own SDK
raises its usual error.

This script runs everything on loopback, with no network and no API key:

1. a stand-in for api.openai.com (uvicorn) that prints what reached it, checked with
   veilpix.inspect;
2. a veilpix.toml that maps [vendors.openai] to the stand-in and defines an app
   "eu-only" (X-Veilpix-App: eu-only) whose policy keeps data in the EEA;
3. the gateway, built from that file with veilpix.proxy.build_gateway and served by uvicorn
   in this process, exactly as `veilpix proxy --config FOLDER/veilpix.toml` would serve it;
4. the official openai SDK with base_url pointing at the gateway: an image edit goes through
   without its GPS position; the same call as "eu-only" is refused with a 403, which the SDK
   raises as openai.PermissionDeniedError;
5. the gateway's /_veilpix/metrics, and the transfer log.

Files go to FOLDER (default: a new temporary folder): veilpix.toml, audit.db and its key.
Needs the 'proxy' extra (uvicorn) and openai. Exit code 0 when everything went as shown.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import httpx2
import openai
import uvicorn

import veilpix
from veilpix.proxy import build_gateway

Message = MutableMapping[str, Any]


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


class FakeOpenAI:
    """An ASGI app that answers an image edit like OpenAI and prints what reached it."""

    def __init__(self) -> None:
        self.received = 0

    async def __call__(
        self,
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.received += 1
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        print(f"  [fake OpenAI] {scope['method']} {scope['path']}")
        print(
            f"    Authorization reached it: {'authorization' in headers}, "
            f"Content-Usage: {headers.get('content-usage')}"
        )
        ctype = headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            form = BytesParser(policy=HTTP).parsebytes(
                f"Content-Type: {ctype}\r\n\r\n".encode() + body
            )
            for part in form.iter_parts():
                if part.get_filename():
                    print(f"    image: {describe(part.get_payload(decode=True))}")
        reply = {"created": 1, "data": [{"b64_json": base64.b64encode(b"edited").decode()}]}
        data = json.dumps(reply).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"x-request-id", b"req_offline_1"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})


# -- serving on loopback ---------------------------------------------------------------------


class Loopback:
    """Serve an ASGI app with uvicorn in a thread on 127.0.0.1 and a free port."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Loopback:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("a loopback server did not start")
            time.sleep(0.01)
        return self

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True  # a graceful stop: lifespan shutdown runs
        self.thread.join(timeout=10)


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="veilpix-proxy-"))
    out.mkdir(parents=True, exist_ok=True)
    photo = sample_jpeg()
    print(f"the photo: {describe(photo)}\n")

    fake = FakeOpenAI()
    with Loopback(fake) as vendor:
        config_file = out / "veilpix.toml"
        config_file.write_text(
            '[log]\npath = "audit.db"             # relative to this file\n\n'
            f'[vendors.openai]\nbase_url = "{vendor.url}/v1"   # the stand-in\n\n'
            "[apps.eu-only]                    # X-Veilpix-App: eu-only\n"
            'allowed_countries = "EEA"\n'
        )
        print(
            f"{config_file}:\n"
            + "".join(f"  {line}\n" for line in config_file.read_text().splitlines())
        )
        # log_path pins the log to FOLDER even when $VEILPIX_LOG is set (it wins over [log])
        gateway = build_gateway(veilpix.load_config(config_file), log_path=out / "audit.db")
        log = gateway.guards[""].log
        try:
            with Loopback(gateway) as proxy:
                print(f"gateway on {proxy.url}: OPENAI_BASE_URL={proxy.url}/openai\n")
                ok = run_calls(proxy.url, photo, fake)
                print(f"\n{proxy.url}/_veilpix/metrics (excerpt):")
                metrics = httpx2.get(f"{proxy.url}/_veilpix/metrics", timeout=10).text
                wanted = ('outcome="sent"', 'outcome="blocked"', "veilpix_images_total ")
                for line in metrics.splitlines():
                    if not line.startswith("#") and any(w in line for w in wanted):
                        print(f"  {line}")
            # the gateway has stopped: its lifespan shutdown closed its HTTP client
            print(f"\nthe transfer log, {log.path}:")
            for rec in log.records():
                d = rec.to_dict()
                how = f"HTTP {d['status']}" if rec.outcome == "sent" else f"rule {d['rule']}"
                print(
                    f"  {rec.id[:8]}  {rec.outcome:<8} app={d['who']['app'] or '-':<8} "
                    f"door={d['who']['door']}  {d['where']['method']} {d['where']['url']}  "
                    f"{d['what']['image_count']} image(s)  {how}"
                )
        finally:
            log.close()
    print(f"\nmore: veilpix audit list --log {log.path}")
    return 0 if ok else 1


def run_calls(gateway_url: str, photo: bytes, fake: FakeOpenAI) -> bool:
    # The app's code is the stock openai SDK; only its base URL points at the gateway
    # (OPENAI_BASE_URL does the same without touching the code).
    print("1. images.edit through the gateway")
    client = openai.OpenAI(base_url=f"{gateway_url}/openai", api_key="sk-offline-example-0000")
    result = client.images.edit(
        model="gpt-image-2", image=("product.jpg", photo, "image/jpeg"), prompt="add a red hat"
    )
    print(f"  the app got {len(result.data or [])} image(s) back")

    print("\n2. the same call as app 'eu-only' ([apps.eu-only] allows EEA countries only)")
    eu_only = openai.OpenAI(
        base_url=f"{gateway_url}/openai",
        api_key="sk-offline-example-0000",
        default_headers={"X-Veilpix-App": "eu-only"},
    )
    before = fake.received
    try:
        eu_only.images.edit(
            model="gpt-image-2", image=("product.jpg", photo, "image/jpeg"), prompt="add a red hat"
        )
    except openai.PermissionDeniedError as exc:
        body: Any = exc.body
        print(f"  openai.PermissionDeniedError: HTTP {exc.status_code}, code {exc.code}")
        print(f"    {body['message']}")
    else:
        print("  not blocked: unexpected")
        return False
    print(f"  requests that reached the vendor: {fake.received - before}")
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
