"""Images in the odd places real requests put them, found and cleaned, or the call refused.

    python examples/find_images.py [FOLDER]

Apps do not always send a photo as a file part or a data URI in a JSON field. Batch files
hold JSON Lines of data URIs, tool calls hold JSON inside a JSON string, prompts hold
markdown with an inline image, some clients send JSON as text/plain, archives hold whole
folders of photos. veilpix's transport (here the httpx2 one, as an SDK would use it) searches
every request body, whatever its Content-Type says, and puts each cleaned image back where it
was, in the same encoding.

Offline: no network, no API key. The inner transport is a stand-in for api.openai.com that
takes each body apart with the standard library (email, json, zipfile, tarfile, base64; not
veilpix's own code) and prints what it found where the photo was. The transfer log is
written to FOLDER/audit.db (default: a new temporary folder). Exit code 0 when every photo
arrived clean and the one request that hides an image where it cannot be rebuilt was
refused without a byte sent.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

import httpx2

import veilpix
from veilpix.transports import GuardTransport


def sample_jpeg() -> bytes:
    """A phone-like JPEG: GPS position, camera model and serial number in its EXIF."""
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
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((320, 240)).convert("RGB").save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def describe(data: bytes) -> str:
    info = veilpix.inspect(data)
    gps = f"GPS {info.gps.latitude:.5f}, {info.gps.longitude:.5f}" if info.gps else "no GPS"
    return f"{info.format} {info.width}x{info.height}, {gps}, {len(info.findings)} finding(s)"


def uri(photo: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(photo).decode()


# Each shape: (path, Content-Type or None, body, how the vendor would get the photo back out).
Shape = tuple[str, str | None, bytes, Callable[[bytes], bytes]]


def shapes(photo: bytes) -> dict[str, Shape]:
    def from_uri(text: str) -> bytes:
        return base64.b64decode(text.split(",", 1)[1].split(")", 1)[0])

    batch = (
        "\n".join(
            json.dumps(
                {
                    "custom_id": f"r{i}",
                    "method": "POST",
                    "url": "/v1/responses",
                    "body": {"input": [{"type": "input_image", "image_url": uri(photo)}]},
                }
            )
            for i in range(2)
        )
        + "\n"
    )
    form = (
        b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="Jane_Doe_batch.jsonl"\r\n'
        b"Content-Type: application/jsonl\r\n\r\n" + batch.encode() + b"\r\n--B--\r\n"
    )

    def from_batch(body: bytes) -> bytes:
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: multipart/form-data; boundary=B\r\n\r\n" + body
        )
        part = list(message.iter_parts())[1]
        print(f"      file name sent: {part.get_filename()}")
        first = part.get_payload(decode=True).decode().splitlines()[0]
        return from_uri(json.loads(first)["body"]["input"][0]["image_url"])

    tool = {
        "model": "gpt-5.4-mini",
        "messages": [
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {
                            "name": "edit",
                            "arguments": json.dumps({"image": uri(photo)}),
                        },
                    }
                ],
            }
        ],
    }

    def from_tool(body: bytes) -> bytes:
        args = json.loads(body)["messages"][0]["tool_calls"][0]["function"]["arguments"]
        return from_uri(json.loads(args)["image"])

    prose = {"model": "gpt-5.4-mini", "input": f"What is in ![this]({uri(photo)})?"}
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as archive:
        info = tarfile.TarInfo("holiday/IMG_0042.jpg")
        info.size = len(photo)
        archive.addfile(info, io.BytesIO(photo))

    def from_tar(body: bytes) -> bytes:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(body))) as archive:
            member = archive.extractfile("holiday/IMG_0042.jpg")
            assert member is not None
            return member.read()

    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("scan.tif", b"page 1\n")
        archive.writestr("photo.jpg", photo)
    return {
        "batch file: JSON Lines of data URIs in a form upload": (
            "/v1/files",
            "multipart/form-data; boundary=B",
            form,
            from_batch,
        ),
        "tool call: JSON inside a JSON string": (
            "/v1/chat/completions",
            "application/json",
            json.dumps(tool).encode(),
            from_tool,
        ),
        "markdown image in a prompt, JSON sent as text/plain": (
            "/v1/responses",
            "text/plain",
            json.dumps(prose).encode(),
            lambda body: from_uri(json.loads(body)["input"]),
        ),
        "a .tar.gz of photos, no Content-Type": (
            "/v1/files",
            None,
            gzip.compress(tar.getvalue()),
            from_tar,
        ),
        "a zip holding the photo": (
            "/v1/files",
            "application/zip",
            zipped.getvalue(),
            lambda body: zipfile.ZipFile(io.BytesIO(body)).read("photo.jpg"),
        ),
    }


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    folder = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="veilpix-find-"))
    folder.mkdir(parents=True, exist_ok=True)
    photo = sample_jpeg()
    print(f"the photo: {describe(photo)}\n")
    arrived: list[bytes] = []

    def vendor(request: httpx2.Request) -> httpx2.Response:
        arrived.append(request.read())
        return httpx2.Response(200, json={"ok": True})

    ok = True
    with veilpix.AuditLog(folder / "audit.db") as log:
        transport = GuardTransport(httpx2.MockTransport(vendor), log=log)
        with httpx2.Client(transport=transport) as client:
            for name, (path, ctype, body, take_apart) in shapes(photo).items():
                headers = {"content-type": ctype} if ctype else {}
                reply = client.post(f"https://api.openai.com{path}", content=body, headers=headers)
                images = reply.extensions["veilpix_receipt"].images
                print(
                    f"  {name}\n      found {len(images)} image(s); sent {len(arrived[-1]):,} bytes"
                )
                got = take_apart(arrived[-1])
                print(f"      where the photo was: {describe(got)}")
                ok &= veilpix.inspect(got).gps is None and photo not in arrived[-1]
            hidden = b"header\x00" + base64.b64decode(
                "SUkqAAgAAAABAAABAwABAAAAAQAAAAAAAAA="  # a TIFF inside other bytes: no end
            )
            sent_before = len(arrived)
            try:
                client.post(
                    "https://api.openai.com/v1/files",
                    content=hidden,
                    headers={"content-type": "application/octet-stream"},
                )
                ok = False
            except veilpix.RequestBlocked as exc:
                print(f"\n  a TIFF inside unknown bytes: RequestBlocked: rule={exc.rule}")
                print(f"      requests that reached the vendor: {len(arrived) - sent_before}")
                ok &= len(arrived) == sent_before
    print(f"\ntransfer log: {folder / 'audit.db'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
