"""Symbolic links and files that are not regular files, found while walking a folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import factories as F
from clikit import run


@pytest.fixture
def linked(tmp_path: Path) -> Path:
    """photos/z.jpg (with GPS) and photos/a.jpg, a symbolic link to it."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "z.jpg").write_bytes(F.jpeg())
    (photos / "a.jpg").symlink_to("z.jpg")
    return photos


def test_in_place_refuses_a_link_and_cleans_the_file_itself(linked: Path) -> None:
    res = run("scrub", str(linked), "--in-place", "--json")
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    failed = [f for f in doc["files"] if not f["ok"]]
    assert [f["error"]["type"] for f in failed] == ["SymbolicLink"]
    assert "a.jpg" in failed[0]["input"]
    assert (linked / "a.jpg").is_symlink()  # the link is left alone
    gate = run("inspect", str(linked / "z.jpg"), "--fail-on", "gps", "-q")
    assert gate.returncode == 0, gate.stdout  # the photo itself was cleaned


def test_a_copy_takes_the_files_own_name_not_the_links(linked: Path, tmp_path: Path) -> None:
    res = run("scrub", str(linked), "-o", str(tmp_path / "out"), "-q")
    assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["z.jpg"]


def test_a_link_named_directly_is_refused_in_place(linked: Path) -> None:
    res = run("scrub", str(linked / "a.jpg"), "--in-place", "-q")
    assert res.returncode == 1 and "symbolic link" in res.stderr
    assert run("inspect", str(linked / "z.jpg"), "--fail-on", "gps", "-q").returncode == 4


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_in_a_folder_is_a_failure_not_a_hang(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    os.mkfifo(photos / "trap.jpg")
    (photos / "ok.jpg").write_bytes(F.jpeg())
    (photos / "via-link.jpg").symlink_to("trap.jpg")
    for args in (("inspect", str(photos)), ("scrub", str(photos), "-o", str(tmp_path / "out"))):
        res = run(*args)  # (clikit's timeout fails the test if it blocks)
        assert res.returncode == 1
        assert "not a regular file" in res.stdout + res.stderr
    assert os.listdir(tmp_path / "out") == ["ok.jpg"]
