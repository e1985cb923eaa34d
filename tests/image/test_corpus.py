"""The real camera and format corpus in ../shared/corpus (skipped when absent).

Every file must come out clean by the shared oracle (exiftool plus a container walk, see
../shared/tools/residual.py), upright, with its frame count, and a no-change JPEG with its
entropy-coded data bit for bit; or fail with the VeilpixError this test expects by name.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

import veilpix
from conftest import shared_dir

SHARED = shared_dir()
pytestmark = [
    pytest.mark.corpus,
    pytest.mark.skipif(SHARED is None, reason="../shared (the real-image corpus) is not present"),
]
ROWS: dict[str, dict[str, str]] = {}
if SHARED is not None:
    with open(SHARED / "corpus" / "corpus.tsv", newline="") as fh:
        ROWS = {row["filename"]: row for row in csv.DictReader(fh, delimiter="\t")}
NAMES = sorted(ROWS)

# Files that are expected to fail, with the error class veilpix must raise. None today: every
# corpus file is sanitized. (Kept as the place to record a deliberate refusal.)
EXPECTED_ERRORS: dict[str, str] = {}
# Frame counts that change on purpose: secondary images are not part of the picture.
FRAMES_OUT = {
    "pillow__sugarshack.mpo": 1,  # MPF stereo: the second image is dropped
    "exiftool__ExifTool.jpg": 1,  # MPF index with a second image after EOI
    "pillowheif__alpha.heic": 1,  # HEIF collection of 3 images: the primary one is kept
}


@pytest.fixture(scope="session")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if SHARED is None:
        pytest.skip("../shared is not present")
    out_dir = tmp_path_factory.mktemp("corpus-out")
    done: dict[str, Any] = {}
    for name in NAMES:
        data = (SHARED / "corpus" / name).read_bytes()
        try:
            res = veilpix.sanitize(data, veilpix.Policy(verify_decode=True))
        except veilpix.VeilpixError as exc:
            done[name] = exc
            continue
        path = out_dir / (name + res.extension)
        path.write_bytes(res.data)
        done[name] = (res, path)
    return done


@pytest.fixture(scope="session")
def residual(results: dict[str, Any]) -> dict[str, str]:
    """The shared oracle's verdict per output file (one exiftool run for all)."""
    assert SHARED is not None
    paths = [str(v[1]) for v in results.values() if isinstance(v, tuple)]
    proc = subprocess.run(
        [sys.executable, str(SHARED / "tools" / "residual.py"), *paths],
        capture_output=True,
        text=True,
        check=False,
    )
    verdicts: dict[str, str] = {}
    current = None
    for line in proc.stdout.splitlines():
        if line.startswith("== "):
            current = line[3:].rsplit(": ", 1)[0]
            verdicts[current] = ""
        elif current is not None:
            verdicts[current] += line.strip() + "\n"
    assert len(verdicts) == len(paths), proc.stderr
    return verdicts


@pytest.mark.usefixtures("exiftool")
@pytest.mark.parametrize("name", NAMES)
def test_corpus_file_comes_out_clean(
    name: str, results: dict[str, Any], residual: dict[str, str]
) -> None:
    got = results[name]
    if name in EXPECTED_ERRORS:
        assert isinstance(got, veilpix.VeilpixError), f"expected {EXPECTED_ERRORS[name]}"
        assert type(got).__name__ == EXPECTED_ERRORS[name]
        return
    assert not isinstance(got, Exception), f"{type(got).__name__}: {got}"
    res, path = got
    assert residual[str(path)] == "", f"residual metadata:\n{residual[str(path)]}"
    assert veilpix.inspect(res.data).findings == ()


def _reference(name: str) -> Image.Image:
    """The original decoded and turned upright by Pillow (pillow-heif turns HEIF itself)."""
    assert SHARED is not None
    data = (SHARED / "corpus" / name).read_bytes()
    if name.endswith((".heic", ".heif")):
        pillow_heif = pytest.importorskip("pillow_heif")
        heif = pillow_heif.open_heif(io.BytesIO(data))
        return heif[heif.primary_index].to_pillow()
    im = Image.open(io.BytesIO(data))
    try:
        return ImageOps.exif_transpose(im)
    except ValueError:  # Pillow cannot parse some ImageMagick raw EXIF profiles
        return im


def _thumb(im: Image.Image) -> np.ndarray:
    a = np.asarray(
        im.convert("RGBA").convert("L").resize((48, 48), Image.Resampling.BILINEAR),
        dtype=np.float64,
    )
    return (a - a.mean()) / (a.std() + 1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_corpus_file_is_upright_and_keeps_its_frames(name: str, results: dict[str, Any]) -> None:
    got = results[name]
    if isinstance(got, Exception):
        pytest.skip("failed as expected")
    res, _path = got
    ref = _reference(name)
    with Image.open(io.BytesIO(res.data)) as out:
        assert out.size == ref.size, f"{out.size} != {ref.size}"
        frames = getattr(out, "n_frames", 1)
        expected_frames = FRAMES_OUT.get(name, int(ROWS[name]["frames"]))
        assert frames == expected_frames
        out_rgb = out.convert("RGBA").convert("RGB")
    if np.asarray(ref.convert("RGBA").convert("L")).std() < 2:
        return  # a flat image has no up
    r = _thumb(ref)
    score = float((_thumb(out_rgb) * r).mean())
    assert score > 0.9, f"output does not match the upright original (correlation {score:.2f})"
    for op in Image.Transpose:
        turned = out_rgb.transpose(op)
        if turned.size == ref.size:
            assert float((_thumb(turned) * r).mean()) < score + 1e-6, f"{op.name} matches better"


def _entropy(data: bytes) -> bytes:
    """Scan data of the first image: walk the markers to SOS, then up to the first EOI
    (without the fill bytes a writer may put before it: coded data never ends in 0xFF)."""
    p = 2
    while True:
        marker = data[p + 1]
        length = int.from_bytes(data[p + 2 : p + 4], "big")
        if marker == 0xDA:
            return data[p : data.index(b"\xff\xd9", p)].rstrip(b"\xff")
        p += 2 + length


@pytest.mark.parametrize("name", [n for n in NAMES if ROWS[n]["format"] in ("JPEG", "MPO")])
def test_no_change_jpeg_keeps_scan_data_bit_identical(name: str, results: dict[str, Any]) -> None:
    got = results[name]
    if isinstance(got, Exception):
        pytest.skip("failed as expected")
    res, _path = got
    if res.report.orientation != 1:
        return  # turned: losslessly (DCT coefficients) or re-encoded, the scans change
    if not res.report.lossless:
        assert not res.report.icc.startswith(("kept", "none")), res.report
        return
    original = (Path(str(SHARED)) / "corpus" / name).read_bytes()
    if any("re-coded losslessly" in n for n in res.report.notes):
        # progressive scans (or hidden bytes) re-coded from the DCT coefficients: same pixels
        with Image.open(io.BytesIO(res.data)) as out, Image.open(io.BytesIO(original)) as src:
            assert np.array_equal(np.asarray(out), np.asarray(src))
        return
    assert _entropy(res.data) == _entropy(original)
