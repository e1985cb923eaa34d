"""``veilpix inspect --fail-on``: an exit code a CI job can gate on (issue 18, item 6)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import piexif
import pytest
from PIL import Image

import factories as F
from clikit import run
from veilpix.cli._exit import EXIT_FAILED, EXIT_FOUND, EXIT_OK, EXIT_USAGE
from veilpix.cli._inspect import FAIL_ON, gate
from veilpix.cli._main import main
from veilpix.metadata._facts import CATEGORIES, SENSITIVE


def _clean_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out, "PNG")
    return out.getvalue()


def _camera_only_jpeg() -> bytes:
    """A JPEG whose only metadata is the camera make and model (not sensitive)."""
    exif = piexif.dump({"0th": {piexif.ImageIFD.Make: b"Cam", piexif.ImageIFD.Model: b"C-1"}})
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "JPEG", exif=exif)
    return out.getvalue()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "full.jpg").write_bytes(F.jpeg())  # GPS, serials, owner, ...
    (tmp_path / "camera.jpg").write_bytes(_camera_only_jpeg())
    (tmp_path / "clean.png").write_bytes(_clean_png())
    return tmp_path


def _code(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["inspect", *argv])
    return code, capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "fail_on", "expected"),
    [
        ("clean.png", "any", EXIT_OK),
        ("clean.png", "sensitive", EXIT_OK),
        ("camera.jpg", "any", EXIT_FOUND),
        ("camera.jpg", "sensitive", EXIT_OK),
        ("camera.jpg", "gps", EXIT_OK),
        ("camera.jpg", "device", EXIT_FOUND),
        ("camera.jpg", "gps,serial", EXIT_OK),
        ("camera.jpg", "gps,device", EXIT_FOUND),
        ("full.jpg", "sensitive", EXIT_FOUND),
        ("full.jpg", "gps", EXIT_FOUND),
        ("full.jpg", "SERIAL", EXIT_FOUND),  # case does not matter
        ("full.jpg", "people", EXIT_OK),
    ],
)
def test_the_gate(
    name: str, fail_on: str, expected: int, files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _code(capsys, str(files / name), "--fail-on", fail_on)[0] == expected
    assert _code(capsys, str(files / name), "--fail-on", fail_on, "--json")[0] == expected


def test_without_fail_on_metadata_is_not_an_error(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _code(capsys, str(files))[0] == EXIT_OK


def test_repeated_and_comma_separated_values_add_up(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _code(capsys, str(files / "camera.jpg"), "--fail-on", "gps", "--fail-on", "device")
    assert code == EXIT_FOUND


def test_json_says_what_tripped_the_gate_per_file(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _code(capsys, str(files), "--fail-on", "sensitive", "--json")
    assert code == EXIT_FOUND
    by_name = {Path(d["path"]).name: d for d in json.loads(out)}
    full = by_name["full.jpg"]
    found = {f["category"] for f in full["findings"]}
    assert full["fail_on"] == [c for c in CATEGORIES if c in found and c in SENSITIVE]
    assert {"gps", "serial", "owner"} <= set(full["fail_on"])
    assert by_name["camera.jpg"]["fail_on"] == []
    assert by_name["clean.png"]["fail_on"] == []
    _, plain = _code(capsys, str(files), "--json")
    assert all("fail_on" not in d for d in json.loads(plain))  # only when asked


def test_text_names_the_files_and_categories(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _code(capsys, str(files), "--fail-on", "gps,device")
    assert code == EXIT_FOUND
    assert "--fail-on gps,device: found in 2 of 3 files" in out
    assert f"  {files / 'full.jpg'}: gps, device" in out
    assert f"  {files / 'camera.jpg'}: device" in out
    code, out = _code(capsys, str(files / "clean.png"), "--fail-on", "any")
    assert code == EXIT_OK and "--fail-on any: none found in 1 file" in out


def test_quiet_prints_only_the_verdict(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _code(capsys, str(files), "--fail-on", "serial", "-q")
    assert code == EXIT_FOUND
    assert out.splitlines() == [
        "--fail-on serial: found in 1 of 3 files",
        f"  {files / 'full.jpg'}: serial",
    ]


def test_a_read_error_wins_over_the_gate(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (files / "broken.jpg").write_bytes(b"not an image")
    code, out = _code(capsys, str(files), "--fail-on", "sensitive")
    assert code == EXIT_FAILED  # the check is incomplete: an error, not a verdict
    assert "--fail-on sensitive: found in 1 of 3 files; 1 file or folder not read" in out


@pytest.mark.parametrize("value", ["gpss", "any,nope", "", "sensitive,"])
def test_an_unknown_value_is_a_usage_error(value: str, files: Path) -> None:
    res = run("inspect", str(files), "--fail-on", value)
    assert res.returncode == EXIT_USAGE
    assert "argument --fail-on: unknown value" in res.stderr
    assert f"choose from any, sensitive, {', '.join(CATEGORIES)}" in res.stderr


def test_help_lists_the_vocabulary_and_exit_codes() -> None:
    res = run("inspect", "--help")
    assert res.returncode == 0
    for word in FAIL_ON:
        assert word in res.stdout
    assert "sensitive  a finding that identifies a person, place or device" in res.stdout
    assert "4 read every file, and at least one holds what --fail-on names" in res.stdout


def test_the_vocabulary_is_the_categories() -> None:
    assert ("any", "sensitive", *CATEGORIES) == FAIL_ON
    findings = [
        {"category": "gps", "sensitive": True},
        {"category": "device", "sensitive": False},
    ]
    assert gate(findings, ["any"]) == ["gps", "device"]
    assert gate(findings, ["sensitive"]) == ["gps"]
    assert gate(findings, ["device", "xmp"]) == ["device"]
    assert gate([], ["any"]) == []
