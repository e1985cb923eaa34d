"""The compliance console on a demo log: a few hundred transfers to five vendors, with a
blocked call, an open one and a data subject, and a veilpix.toml with a [register] section.

    python examples/compliance_console.py demo/            # write demo/audit.db and veilpix.toml
    veilpix audit serve --log demo/audit.db --config demo/veilpix.toml --allow-changes

or both at once (the console runs until Ctrl+C):

    python examples/compliance_console.py demo/ --serve

Open the printed link; try "Was this photo sent?" with demo/photo.jpg.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
from pathlib import Path

from PIL import Image

import veilpix
from veilpix import AuditLog, OutboundImage, Transfer

VENDORS = [  # vendor, legal entity, host, country, transfer mechanism
    ("openai", "OpenAI Ireland Ltd", "api.openai.com", "US", "EU-US Data Privacy Framework"),
    ("gemini", "Google Ireland Ltd", "europe-west4-aiplatform.googleapis.com", "NL", None),
    ("anthropic", "Anthropic Ireland Ltd", "api.anthropic.com", "US", "SCCs (Module 2)"),
    ("mistral", "Mistral AI SAS", "api.mistral.ai", "FR", None),
    ("stability", "Stability AI Ltd", "api.stability.ai", "GB", None),  # no mechanism recorded
]
APPS = [  # app, purpose, legal basis
    ("shop", "product photos for the shop", "contract"),
    ("support", "support chat attachments", "legitimate interests"),
    ("marketing", "campaign images", "consent"),
]
CONFIG = """\
[log]
retention = "180d"

[register]
controller = "Example Shop GmbH"
address = "Hauptstrasse 1, 10115 Berlin, Germany"
contact = "privacy@shop.example"
dpo = "Dr. Jane Doe, dpo@shop.example"
representative = "not needed: established in the EU"
data_subjects = ["customers", "support requesters"]
security_measures = ["access to the log limited to the privacy team", "disk encryption"]

[register.retention]
"product photos for the shop" = "6 months after the order"
"*" = "180d"

[console]
show_subjects = true
"""


def photo(seed: int) -> bytes:
    """A small JPEG with a camera's metadata, as an app would send it."""
    rnd = random.Random(seed)
    img = Image.new("RGB", (96, 64), (rnd.randrange(256), rnd.randrange(256), 180))
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "ExampleCam", "X100"  # make, model
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85, exif=exif)
    return out.getvalue()


def fill(path: Path, n: int) -> bytes:
    """``n`` transfers into the log at ``path``; the photo of the first one."""
    rnd = random.Random(7)
    first = photo(0)
    with AuditLog(path) as log:
        for i in range(n):
            vendor, entity, host, country, mechanism = VENDORS[rnd.randrange(len(VENDORS))]
            app, purpose, basis = APPS[rnd.randrange(len(APPS))]
            data = first if i == 0 else photo(i)
            transfer = Transfer(
                vendor=vendor,
                url=f"https://{host}/v1/images/edits",
                model="image-model",
                operation="images.edit",
                legal_entity=entity,
                country=country,
                transfer_mechanism=mechanism,
                app=app,
                actor=f"user-{rnd.randrange(40)}",
                door=rnd.choice(["sdk", "gateway"]),
                purpose=purpose,
                legal_basis=basis,
                subject_ref="customer-4711" if i % 50 == 0 else None,
                consent_ref="consent-2026-0042" if app == "marketing" else None,
                images=[OutboundImage(data, veilpix.sanitize(data), "image")],
                prompt="put the product on a white background",
            )
            if country == "GB" and rnd.random() < 0.3:
                log.block(
                    transfer, reason="GB is not in allowed_countries", rule="allowed_countries"
                )
                continue
            pending = log.begin(transfer)
            if i == n - 3:
                continue  # left open: the process "died" mid-call
            pending.finish(status=200, request_bytes=len(data) + 300, response_bytes=2048)
    return first


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="where to write audit.db and veilpix.toml")
    parser.add_argument("--transfers", type=int, default=300, help="how many (default 300)")
    parser.add_argument("--serve", action="store_true", help="then run the console")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    log_path, config = args.folder / "audit.db", args.folder / "veilpix.toml"
    if log_path.exists():
        print(f"{log_path} exists already: choose an empty folder", file=sys.stderr)
        return 1
    (args.folder / "photo.jpg").write_bytes(fill(log_path, args.transfers))
    config.write_text(CONFIG, encoding="utf-8")
    command = [
        "veilpix", "audit", "serve", "--log", str(log_path), "--config", str(config),
        "--allow-changes",
    ]  # fmt: skip
    print(f"wrote {args.transfers} transfers to {log_path}, and {config}")
    if not args.serve:
        print("now run: " + " ".join(command))
        return 0
    from veilpix.cli import main as cli

    return cli(command[1:])


if __name__ == "__main__":
    sys.exit(main())
