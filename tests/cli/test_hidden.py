"""Hidden files and folders are skipped as "hidden", not as "non-image", and
``--include-hidden`` takes them (issue 18, item 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import factories as F
from clikit import run


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    src = tmp_path / "photos"
    (src / ".thumbs").mkdir(parents=True)
    (src / "a.jpg").write_bytes(F.jpeg())
    (src / ".photo.jpg").write_bytes(F.jpeg())  # GPS and all: must not pass unnoticed
    (src / ".thumbs" / "t.jpg").write_bytes(F.jpeg())
    (src / "notes.txt").write_text("not an image")
    (src / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")  # hidden, and not an image
    return src


def test_scrub_says_hidden_not_non_image(photos: Path, tmp_path: Path) -> None:
    res = run("scrub", str(photos), "-o", str(tmp_path / "out"), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    s = doc["summary"]
    assert (s["ok"], s["skipped"], s["hidden"], s["hidden_folders"]) == (1, 2, 1, 1)
    assert sorted((Path(d["path"]).name, d["reason"], d["kind"]) for d in doc["skipped"]) == [
        (".DS_Store", "not an image", "file"),
        (".photo.jpg", "hidden", "file"),
        (".thumbs", "hidden", "folder"),
        ("notes.txt", "not an image", "file"),
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg"]
    text = run("scrub", str(photos), "-o", str(tmp_path / "out2"))
    assert "2 non-image files skipped" in text.stdout
    assert "1 hidden file and 1 hidden folder skipped (--include-hidden takes them)" in text.stdout


def test_scrub_include_hidden(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run("scrub", str(photos), "-o", str(out), "--include-hidden", "--json")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)["summary"]
    assert (s["ok"], s["hidden"], s["hidden_folders"], s["skipped"]) == (3, 0, 0, 2)
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == [".photo.jpg", ".thumbs/t.jpg", "a.jpg"]
    assert b"Exif" not in (out / ".photo.jpg").read_bytes()


def test_scrub_in_place_include_hidden(photos: Path) -> None:
    res = run("scrub", str(photos), "--in-place", "--include-hidden", "-q")
    assert res.returncode == 0, res.stderr
    assert b"Exif" not in (photos / ".photo.jpg").read_bytes()
    assert b"Exif" not in (photos / ".thumbs" / "t.jpg").read_bytes()


def test_scrub_of_only_hidden_files_says_how_to_take_them(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / ".secret.jpg").write_bytes(F.jpeg())
    res = run("scrub", str(tmp_path / "in"), "-o", str(tmp_path / "out"))
    assert res.returncode == 1
    assert "no image files found" in res.stderr and "--include-hidden" in res.stderr


def test_a_hidden_file_named_directly_is_taken(photos: Path, tmp_path: Path) -> None:
    res = run("scrub", str(photos / ".photo.jpg"), "-o", str(tmp_path / "out"), "-q")
    assert res.returncode == 0 and (tmp_path / "out" / ".photo.jpg").is_file()


def test_inspect_says_hidden_skipped(photos: Path) -> None:
    res = run("inspect", str(photos))
    assert res.returncode == 0, res.stderr
    assert "hidden, skipped (2 entries; --include-hidden inspects them):" in res.stdout
    assert f"  {photos / '.photo.jpg'}\n" in res.stdout
    assert f"  {photos / '.thumbs'} (folder)\n" in res.stdout
    assert "2 files skipped: not images" in res.stdout
    js = json.loads(run("inspect", str(photos), "--json").stdout)
    assert [d["path"] for d in js if "findings" in d] == [str(photos / "a.jpg")]
    assert [(Path(d["path"]).name, d["skipped"], d["kind"]) for d in js if "skipped" in d] == [
        (".thumbs", "hidden", "folder"),
        (".photo.jpg", "hidden", "file"),
    ]


def test_inspect_include_hidden(photos: Path) -> None:
    js = json.loads(run("inspect", str(photos), "--json", "--include-hidden").stdout)
    inspected = {Path(d["path"]).name: d for d in js}
    assert set(inspected) == {"a.jpg", ".photo.jpg", "t.jpg"}
    assert inspected[".photo.jpg"]["gps"] is not None
