"""Folders and files that cannot be read are failures, never silent skips (issue 18, item 3).

``inspect locked/`` once printed nothing and exited 0; ``scrub photos -o out`` counted
``locked/*`` as neither failed nor skipped. The tests make a folder unreadable by making
``os.scandir`` refuse it (root reads a chmod 000 folder anyway), and once for real with
chmod where the test does not run as root.
"""

from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import factories as F
from veilpix.cli._main import main


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    src = tmp_path / "photos"
    (src / "locked").mkdir(parents=True)
    (src / "a.jpg").write_bytes(F.jpeg())
    (src / "locked" / "b.jpg").write_bytes(F.jpeg())
    return src


def _lock(monkeypatch: pytest.MonkeyPatch, *folders: Path) -> None:
    """``os.scandir`` (what os.walk lists folders with) refuses ``folders``."""
    real = os.scandir
    refused = {str(f) for f in folders}

    def scandir(path: Any = ".") -> Any:
        if os.fspath(path) in refused:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_inspect_reports_an_unreadable_folder(
    photos: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _lock(monkeypatch, photos / "locked")
    code, out, _ = _run(capsys, "inspect", str(photos))
    assert code == 1
    assert "a.jpg  JPEG" in out
    assert f"Permission denied: {photos / 'locked'}" in out
    code, out, _ = _run(capsys, "inspect", str(photos), "--json")
    assert code == 1
    errors = [d for d in json.loads(out) if "error" in d]
    assert errors == [
        {
            "path": str(photos / "locked"),
            "error": {
                "type": "PermissionError",
                "message": f"Permission denied: {photos / 'locked'} (folder not read)",
            },
        }
    ]


def test_inspect_of_a_folder_that_cannot_be_listed_at_all(
    photos: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _lock(monkeypatch, photos)
    code, out, _ = _run(capsys, "inspect", str(photos))
    assert code == 1 and "Permission denied" in out and str(photos) in out


def test_scrub_counts_an_unreadable_folder_as_failed(
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _lock(monkeypatch, photos / "locked")
    out_dir = tmp_path / "out"
    code, out, _ = _run(capsys, "scrub", str(photos), "-o", str(out_dir), "--json", "-j", "1")
    assert code == 1
    doc = json.loads(out)
    s = doc["summary"]
    assert (s["ok"], s["failed"], s["unreadable"]) == (1, 1, 1)
    (bad,) = [f for f in doc["files"] if not f["ok"]]
    assert bad["input"] == str(photos / "locked")
    assert bad["error"]["type"] == "PermissionError"
    assert "Permission denied" in bad["error"]["message"]
    assert (out_dir / "a.jpg").is_file()
    code, out, _ = _run(capsys, "scrub", str(photos), "-o", str(tmp_path / "o2"), "-j", "1")
    assert code == 1
    assert "scrubbed 1 of 1 file" in out and "1 failed" in out
    assert str(photos / "locked") in out and "Permission denied" in out
    code, _, err = _run(capsys, "scrub", str(photos), "-o", str(tmp_path / "o3"), "-q", "-j", "1")
    assert code == 1 and "Permission denied" in err and str(photos / "locked") in err


def test_scrub_of_only_an_unreadable_folder_fails_with_the_reason(
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _lock(monkeypatch, photos / "locked")
    code, out, err = _run(capsys, "scrub", str(photos / "locked"), "-o", str(tmp_path / "o"))
    assert code == 1
    assert "Permission denied" in out and "no image files found" not in err


@pytest.mark.parametrize("command", ["inspect", "scrub"])
def test_an_unreadable_file_is_a_failure(
    command: str,
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    locked = str(photos / "locked" / "b.jpg")
    real_open = builtins.open

    def refusing_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if os.fspath(file) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(f"veilpix.cli._{command}.open", refusing_open, raising=False)
    extra = ["-o", str(tmp_path / "out"), "-j", "1"] if command == "scrub" else []
    code, out, _ = _run(capsys, command, str(photos), *extra, "--json")
    assert code == 1
    doc = json.loads(out)
    entries = doc if command == "inspect" else doc["files"]
    (bad,) = [e for e in entries if "error" in e]
    assert bad["error"] == {"type": "PermissionError", "message": f"Permission denied: {locked}"}


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads chmod 000 folders")
def test_a_real_chmod_000_folder(photos: Path, tmp_path: Path) -> None:  # pragma: no cover
    (photos / "locked").chmod(0)
    try:
        res = subprocess.run(
            [sys.executable, "-m", "veilpix", "inspect", str(photos)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert res.returncode == 1 and "Permission denied" in res.stdout
        res = subprocess.run(
            [sys.executable, "-m", "veilpix", "scrub", str(photos), "-o", str(tmp_path / "o")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert res.returncode == 1 and "Permission denied" in res.stdout
    finally:
        (photos / "locked").chmod(0o755)
