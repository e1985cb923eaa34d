"""Keep a transfer log of what was sent where, then verify, review, erase and export it.

    python examples/transfer_log.py [FOLDER]

No network and no API keys: the "vendor calls" are stand-ins. Everything is written into
FOLDER (default: a new temporary folder), never into the veilpix user data folder:

    audit.db, audit.db.key   the log and its key file (both 0600)
    public.pem               the log's public signing key, to keep somewhere else
    head.txt                 the log's head, saved to catch a log cut back later
    transfers.csv            CSV for a spreadsheet (0600, like every export)
    transfers.ocsf.jsonl     OCSF API Activity events (class 6003) for a SIEM (0600)
    register.html            the HTML transfer register (0600)

The script records five calls with the Python API (sent, sent for a data subject, failed,
blocked, and one whose outcome never arrived), answers "was this photo sent?", resolves the
open call, erases the data subject (GDPR Art. 17), and runs the `veilpix audit` commands an
operator would run. Exit code 0 when the log verifies.
"""

from __future__ import annotations

import io
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import veilpix
from veilpix import AuditLog, OutboundImage, Transfer

# The transfer mechanism recorded for a vendor when the call does not name one
# (the same as [vendors.openai] transfer_mechanism in veilpix.toml).
MECHANISMS = {"openai": "EU-US Data Privacy Framework (adequacy decision)"}
SUBJECT = "customer-4711"


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


def openai_edit(image: OutboundImage, **extra: object) -> Transfer:
    """What a door knows before it sends an image edit to OpenAI (credentials are removed from
    the URL and headers before anything is stored)."""
    fields: dict[str, object] = {
        "vendor": "openai",
        "url": "https://api.openai.com/v1/images/edits",
        "model": "gpt-image-1",
        "operation": "images.edit",
        "legal_entity": "OpenAI, L.L.C.",
        "country": "US",
        "app": "shop",
        "actor": "alice",
        "purpose": "product photo editing",
        "legal_basis": "Art. 6(1)(b) contract",
        "images": [image],
        "prompt": "put the product on a white background",
        "headers": {"Authorization": "Bearer sk-example-not-a-real-key-0000"},
        "controls_applied": ["content-usage-header"],
        "controls_account_level": ["zero-data-retention"],
    }
    fields.update(extra)
    return Transfer(**fields)  # type: ignore[arg-type]


def fake_vendor(data: bytes) -> tuple[int, int]:
    """Stands in for the HTTP call: (status, response size)."""
    return 200, 3 * len(data)


def audit(log_path: Path, *args: str) -> int:
    """Run `veilpix audit ...` on this log, as an operator would."""
    argv = [sys.executable, "-m", "veilpix", "audit", args[0], "--log", str(log_path), *args[1:]]
    print(f"\n$ veilpix audit {shlex.join(args)}", flush=True)
    return subprocess.run(argv, check=False).returncode


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="veilpix-log-"))
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "audit.db"

    photo = sample_jpeg()
    clean = veilpix.sanitize(photo)  # only clean.data ever leaves
    image = OutboundImage(photo, clean, "image")

    with AuditLog(log_path, mechanisms=MECHANISMS) as log:
        # 1. A sent call: the begin is committed before the call, the finish after it.
        with log.record(openai_edit(image)) as pending:
            status, size = fake_vendor(clean.data)
            pending.finish(status=status, response_bytes=size, request_bytes=len(clean.data))

        # 2. A call for a data subject: the subject reference, the consent reference and the
        #    fingerprints are stored encrypted under that subject's own key.
        gemini = openai_edit(
            image,
            vendor="gemini",
            url="https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash-image:generateContent",
            model="gemini-2.5-flash-image",
            operation="generateContent",
            legal_entity="Google Ireland Limited",
            country="IE",
            subject_ref=SUBJECT,
            consent_ref="consent-2026-031",
        )
        with log.record(gemini) as pending:
            status, size = fake_vendor(clean.data)
            pending.finish(status=status, response_bytes=size)
        subject_record = pending.id

        # 3. A call that breaks off: leaving the block with an exception records "failed".
        try:
            with log.record(openai_edit(image, actor="bob")):
                raise ConnectionError("connection refused")
        except ConnectionError:
            pass

        # 4. A call the policy stops before a byte leaves.
        log.block(
            openai_edit(
                image,
                vendor="stability",
                url="https://api.stability.ai/v2beta/stable-image/edit/inpaint",
                legal_entity="Stability AI Ltd",
                country="GB",
            ),
            reason="vendor not in the allowed list",
            rule="vendors.allowed",
        )

        # 5. A call whose process dies while it waits for the vendor: the begin is on disk,
        #    the finish never comes, and the log shows "outcome unknown" (resolved below).
        unknown_record = log.begin(openai_edit(image, actor="carol")).id

        # Was this photo sent? The log holds keyed fingerprints (HMAC-SHA256 with the log
        # key over the SHA-256 of the bytes) of the original and of the sanitized bytes, so
        # either file finds the calls (with the key file at hand).
        matches = list(log.records(image=photo))
        print(f"the sample photo appears in {len(matches)} calls:")
        for rec in matches:
            print(f"  {rec.id[:8]}  {rec.where['vendor']:<9} {rec.outcome}")

    result = veilpix.verify_log(log_path)
    print(f"verify: ok={result.ok}, {result.records} transfers, {result.checkpoints} checkpoints")
    # Save the head (the newest signed checkpoint) outside the log: a later verify with
    # --expect fails if the log was cut back past it (in production: cron or a SIEM,
    # `veilpix audit verify --json | jq -r .head > head.txt`).
    (out / "head.txt").write_text(f"{result.head}\n", encoding="utf-8")

    audit(log_path, "stats")
    pem = out / "public.pem"
    audit(log_path, "key", "-o", str(pem))

    # The operator finds the open call, learns from the vendor's dashboard that the request
    # never arrived, and records that. The begin stays as it was; a signed finish is added.
    audit(log_path, "list", "--outcome", "unknown")
    resolved = audit(
        log_path,
        "resolve",
        unknown_record[:8],
        "--outcome",
        "failed",
        "--reason",
        "the vendor's dashboard shows no such request",
    )

    # GDPR Art. 17: destroy the subject's key; the facts stay, the linked fields are gone.
    with AuditLog(log_path) as log:
        before = log.get(subject_record).to_dict()["why"]["subject_ref"]
        erased = log.erase(SUBJECT, request_ref="DSR-2026-118")
        after = log.get(subject_record).to_dict()["why"]["subject_ref"]
    print(
        f"\nerased {erased.records} record(s) of {SUBJECT}: subject_ref {before!r} -> {after!r}, "
        f"tombstone at entry {erased.tombstone_seq}"
    )

    # Exports leave subject-linked fields sealed ("--include-subjects" would add them).
    codes = [
        resolved,
        audit(log_path, "verify", "--public-key", str(pem), "--expect", str(out / "head.txt")),
        audit(log_path, "export", "--format", "ocsf", "-o", str(out / "transfers.ocsf.jsonl")),
        audit(log_path, "export", "--format", "csv", "-o", str(out / "transfers.csv")),
        audit(log_path, "report", "-o", str(out / "register.html")),
    ]

    print(f"\nwritten to {out}:")
    for name in (
        "audit.db",
        "audit.db.key",
        "public.pem",
        "head.txt",
        "transfers.csv",
        "transfers.ocsf.jsonl",
        "register.html",
    ):
        print(f"  {out / name}")
    return 0 if not any(codes) and veilpix.verify_log(log_path).ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
