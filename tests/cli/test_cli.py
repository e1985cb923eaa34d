"""The ``veilpix`` command as a user runs it: a fresh process, real files."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import factories as F
import oracle


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "veilpix", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("cmd", [[], ["inspect"], ["scrub"], ["demo"], ["preview"]])
def test_help_is_helpful(cmd: list[str]) -> None:
    res = run(*cmd, "--help")
    assert res.returncode == 0
    assert "usage: veilpix" in res.stdout
    if cmd != ["demo"]:
        assert "example" in res.stdout


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "veilpix"
    assert script.exists(), "the 'veilpix' console script is missing"
    res = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert res.returncode == 0 and res.stdout.startswith("veilpix ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scrub", "x.jpg"], "one of the arguments -o/--output --in-place is required"),
        (["scrub", "does-not-exist", "-o", "out"], "no such file or folder"),
        (["scrub", ".", "-o", "out", "--quality", "0"], "expected a number above 0"),
        (["scrub", ".", "-o", "out", "--quality", "101"], "quality runs from 1 to 100"),
        (["scrub", ".", "-o", "out", "-j", "many"], "expected a whole number"),
        (["inspect"], "the following arguments are required"),
        (["frobnicate"], "invalid choice"),
        (["scrub", ".", "-o", "out", "--blur-mode", "smear"], "invalid choice: 'smear'"),
        (["scrub", ".", "-o", "out", "--max-side", "-5"], "expected a number above 0"),
        (["scrub", ".", "-o", "out", "--face-padding", "9"], "face_padding must be a number"),
        (["preview", "x.jpg"], "the following arguments are required: -o/--output"),
        (["preview", "x.jpg", "-o", "p.jpg"], "the preview is a PNG"),
        (["preview", "missing.jpg", "-o", "p.png"], "cannot read missing.jpg"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    args: list[str], message: str, tmp_path: Path
) -> None:
    res = run(*args, cwd=tmp_path)
    assert res.returncode == 2
    assert message in res.stderr


def test_no_command_prints_help_and_exits_2() -> None:
    res = run()
    assert res.returncode == 2 and "COMMAND" in res.stdout


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    src = tmp_path / "photos"
    (src / "trip" / "day1").mkdir(parents=True)
    (src / "a.jpg").write_bytes(F.jpeg(orientation=6))
    (src / "trip" / "b.png").write_bytes(F.png())
    (src / "trip" / "day1" / "c.webp").write_bytes(F.webp())
    (src / "trip" / "day1" / "d.gif").write_bytes(F.gif())
    (src / "broken.jpg").write_bytes(F.jpeg()[:-300])
    (src / "notes.txt").write_text("not an image")
    (src / "IMG_1.jpg").write_bytes(F.jpeg())
    (src / "IMG_1.avif").write_bytes(
        F.avif()
    )  # becomes a JPEG: must not overwrite IMG_1.jpg's copy
    return src


def test_scrub_folder_recursively_lists_failures_and_keeps_going(
    photos: Path, tmp_path: Path
) -> None:
    before = {p: sha(p) for p in photos.rglob("*") if p.is_file()}
    out = tmp_path / "clean"
    res = run("scrub", str(photos), "-o", str(out), "--json")
    assert res.returncode == 1, res.stderr  # broken.jpg failed
    doc = json.loads(res.stdout)
    summary = doc["summary"]
    assert (summary["files"], summary["ok"], summary["failed"], summary["skipped"]) == (7, 6, 1, 1)
    failed = [f for f in doc["files"] if not f["ok"]]
    assert (
        failed[0]["input"].endswith("broken.jpg") and failed[0]["error"]["type"] == "CorruptImage"
    )
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == [
        "IMG_1.avif.jpg",
        "IMG_1.jpg",
        "a.jpg",
        "trip/b.png",
        "trip/day1/c.webp",
        "trip/day1/d.gif",
    ]
    assert {p: sha(p) for p in photos.rglob("*") if p.is_file()} == before  # originals untouched
    if oracle.available():
        assert all(not v for v in oracle.residue(str(out / w) for w in written).values())


def test_scrub_table_output_and_exit_code_zero(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(F.jpeg())
    res = run("scrub", str(tmp_path / "a.jpg"), "-o", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    assert "scrubbed 1 of 1 file in" in res.stdout
    assert "gps" in res.stdout and "serial" in res.stdout


def test_scrub_in_place_replaces_and_converts(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(F.jpeg())
    (tmp_path / "b.avif").write_bytes(F.avif())
    res = run("scrub", str(tmp_path), "--in-place", "--json", "-j", "1")
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["a.jpg", "b.jpg"]
    assert b"Exif" not in (tmp_path / "a.jpg").read_bytes()


def test_scrub_refuses_to_overwrite_originals(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(F.jpeg())
    original = sha(tmp_path / "a.jpg")
    res = run("scrub", str(tmp_path / "a.jpg"), "-o", str(tmp_path), "--json")
    assert res.returncode == 1
    assert "overwrite the original" in json.loads(res.stdout)["files"][0]["error"]["message"]
    assert sha(tmp_path / "a.jpg") == original


def test_parallel_and_serial_runs_give_identical_files(photos: Path, tmp_path: Path) -> None:
    run("scrub", str(photos), "-o", str(tmp_path / "j1"), "-j", "1", "-q")
    run("scrub", str(photos), "-o", str(tmp_path / "j2"), "-j", "2", "-q")
    one = {
        str(p.relative_to(tmp_path / "j1")): sha(p)
        for p in (tmp_path / "j1").rglob("*")
        if p.is_file()
    }
    two = {
        str(p.relative_to(tmp_path / "j2")): sha(p)
        for p in (tmp_path / "j2").rglob("*")
        if p.is_file()
    }
    assert one == two and len(one) == 6


def test_inspect_json_and_table(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(F.jpeg())
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    res = run("inspect", str(tmp_path / "a.jpg"), "--json")
    assert res.returncode == 0
    (doc,) = json.loads(res.stdout)
    assert doc["gps"]["latitude"] == pytest.approx(F.GPS[0], abs=1e-5)
    assert doc["sensitive"] and any(f["value"] == F.SERIAL for f in doc["findings"])
    table = run("inspect", str(tmp_path))
    assert table.returncode == 1  # bad.png
    assert "52.516275" in table.stdout and "openstreetmap.org" in table.stdout
    assert "CorruptImage" in table.stdout


def test_demo_runs_on_embedded_defaults(tmp_path: Path) -> None:
    res = run("demo", "-o", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "no metadata found" in res.stdout and "PX1-4711-0042" in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["after.jpg", "before.jpg", "preview.png"]
    assert (tmp_path / "preview.png").read_bytes().startswith(b"\x89PNG")
    doc = json.loads(run("demo", "--json").stdout)
    assert doc["orientation"] == 6 and doc["gps"] is not None


def _astronaut_jpeg(path: Path) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    Image.fromarray(skimage_data.astronaut()).save(path, "JPEG", quality=90)


def test_scrub_blur_faces_and_downscale(tmp_path: Path) -> None:
    _astronaut_jpeg(tmp_path / "a.jpg")
    res = run(
        "scrub", "a.jpg", "-o", "out", "--blur-faces", "--max-side", "256", "--json", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)["files"][0]["report"]
    assert rep["faces_found"] == rep["faces_blurred"] == 1
    assert (rep["width_out"], rep["height_out"]) == (256, 256) and rep["downscaled"]
    blocked = run("scrub", "a.jpg", "-o", "out2", "--require-consent", "--json", cwd=tmp_path)
    assert blocked.returncode == 1
    err = json.loads(blocked.stdout)["files"][0]["error"]
    assert err["type"] == "ConsentRequired"
    ok = run(
        "scrub",
        "a.jpg",
        "-o",
        "out3",
        "--require-consent",
        "--consent",
        "C-1",
        "--json",
        cwd=tmp_path,
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["files"][0]["report"]["consent"] == "C-1"


def test_preview_draws_a_before_after_png(tmp_path: Path) -> None:
    _astronaut_jpeg(tmp_path / "a.jpg")
    res = run("preview", "a.jpg", "-o", "p.png", "--blur-faces", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "faces found: 1, hidden (blur): 1" in res.stdout
    from PIL import Image

    with Image.open(tmp_path / "p.png") as im:
        assert im.format == "PNG" and im.width > 2 * 512 and im.height > 512
    js = run("preview", "a.jpg", "-o", "q.png", "--json", cwd=tmp_path)
    assert js.returncode == 0 and json.loads(js.stdout)["preview"] == "q.png"


@pytest.mark.parametrize("where", ["-o", "--in-place"])
def test_scrub_never_writes_one_output_twice(tmp_path: Path, where: str) -> None:
    """example.avif and example.heic both become JPEG: two outputs, neither lost (issue 15)."""
    pytest.importorskip("pillow_heif")
    src = tmp_path / "in"
    src.mkdir()
    (src / "example.avif").write_bytes(F.avif())
    (src / "example.heic").write_bytes(F.heic())
    (src / "example.png").write_bytes(F.png())  # keeps its format and its name
    args = ["-o", str(tmp_path / "out")] if where == "-o" else ["--in-place"]
    res = run("scrub", str(src), *args, "--json", "-j", "2")
    assert res.returncode == 0, res.stderr
    outputs = [f["output"] for f in json.loads(res.stdout)["files"]]
    assert len(set(outputs)) == 3, outputs
    folder = tmp_path / "out" if where == "-o" else src
    assert sorted(p.name for p in folder.iterdir()) == [
        "example.avif.jpg",
        "example.heic.jpg",
        "example.png",
    ]
    for name in ("example.avif.jpg", "example.heic.jpg"):
        assert (folder / name).read_bytes()[:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_scrub_json_keeps_decoder_warnings_in_the_file_entry(tmp_path: Path, jobs: str) -> None:
    """Library warnings (here Pillow's 'Metadata Warning' on a TIFF tag with too many values,
    met on the pixel path) go into that file's entry, not onto stderr: --json stays clean."""
    from factories import rgb_rows, rgb_tags, tiff_file

    tags = rgb_tags(24, 16)
    tags[274] = (3, 1, (6).to_bytes(2, "little"))  # orientation 6: the pixel path decodes
    tags[296] = (3, 2, (2).to_bytes(2, "little") * 2)  # ResolutionUnit with 2 values
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "warns.tif").write_bytes(tiff_file(tags, rgb_rows()))
    (tmp_path / "in" / "quiet.jpg").write_bytes(F.jpeg())
    res = run("scrub", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json", "-j", jobs)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    doc = json.loads(res.stdout)
    by_name = {Path(f["input"]).name: f for f in doc["files"]}
    assert any("tag 296 had too many entries" in w for w in by_name["warns.tif"]["warnings"])
    assert "warnings" not in by_name["quiet.jpg"]
    assert doc["summary"]["with_warnings"] == 1


def test_warnings_printed_by_c_libraries_are_captured_too(
    capfd: pytest.CaptureFixture[str],
) -> None:
    import os
    import warnings

    from veilpix.cli._scrub import _warnings_into

    out: dict[str, object] = {}
    with _warnings_into(out):
        os.write(2, b"TIFFReadDirectory: Warning, Unknown field with tag 50000\n")
        warnings.warn("Possibly corrupt EXIF data", UserWarning, stacklevel=1)
    assert out["warnings"] == [
        "UserWarning: Possibly corrupt EXIF data",
        "TIFFReadDirectory: Warning, Unknown field with tag 50000",
    ]
    assert capfd.readouterr().err == ""
