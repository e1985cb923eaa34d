"""``scrub`` outputs are never readable by more people than their source (issue 18, item 2).

``--in-place`` once turned a 0600 photo into 0644, and ``-o`` copies were always 0644. Now an
in-place result keeps the source's permission bits; an ``-o`` copy gets them less the umask,
as ``cp`` does: never wider than the source either way.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import factories as F
from veilpix.cli._main import main
from veilpix.cli._scrub import _group_capped, _umask

MODES = [0o600, 0o640, 0o644, 0o400]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> object:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.usefixtures("umask_022")
@pytest.mark.parametrize("mode", MODES, ids=oct)
def test_in_place_keeps_the_source_mode(mode: int, tmp_path: Path) -> None:
    photo = tmp_path / "a.jpg"
    photo.write_bytes(F.jpeg())
    photo.chmod(mode)
    before = photo.stat()
    assert main(["scrub", str(photo), "--in-place", "-q", "-j", "1"]) == 0
    assert b"Exif" not in photo.read_bytes()  # it was replaced...
    assert _mode(photo) == mode  # ...and is exactly as private as before
    assert (photo.stat().st_uid, photo.stat().st_gid) == (before.st_uid, before.st_gid)


@pytest.mark.usefixtures("umask_022")
@pytest.mark.parametrize("mode", MODES, ids=oct)
def test_in_place_conversion_keeps_the_source_mode(mode: int, tmp_path: Path) -> None:
    """b.avif becomes b.jpg: a new name, still the source's mode."""
    (tmp_path / "b.avif").write_bytes(F.avif())
    (tmp_path / "b.avif").chmod(mode)
    assert main(["scrub", str(tmp_path), "--in-place", "-q", "-j", "1"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.jpg"]
    assert _mode(tmp_path / "b.jpg") == mode


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=oct)
@pytest.mark.parametrize("mode", MODES, ids=oct)
def test_copies_are_never_wider_than_the_source(mode: int, umask: int, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(F.jpeg())
    (src / "a.jpg").chmod(mode)
    old = os.umask(umask)
    try:
        code = main(["scrub", str(src), "-o", str(tmp_path / "out"), "-q", "-j", "1"])
    finally:
        os.umask(old)
    assert code == 0
    assert _mode(tmp_path / "out" / "a.jpg") == mode & ~umask


@pytest.mark.usefixtures("umask_022")
def test_parallel_workers_keep_each_files_mode(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for mode in MODES:
        (src / f"{mode:o}.jpg").write_bytes(F.jpeg())
        (src / f"{mode:o}.jpg").chmod(mode)
    assert main(["scrub", str(src), "--in-place", "-q", "-j", "2"]) == 0
    assert {p.name: _mode(p) for p in src.iterdir()} == {f"{m:o}.jpg": m for m in MODES}


def test_the_umask_is_read_without_being_changed() -> None:
    old = os.umask(0o027)
    try:
        assert _umask() == 0o027
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(old)


@pytest.mark.parametrize(
    ("mode", "capped"),
    [(0o640, 0o600), (0o644, 0o644), (0o660, 0o600), (0o664, 0o644), (0o600, 0o600)],
    ids=oct,
)
def test_a_file_that_cannot_keep_its_group_gives_the_group_no_more_than_others(
    mode: int, capped: int
) -> None:
    assert _group_capped(mode) == capped


def test_in_place_caps_the_group_when_the_group_cannot_be_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 0640 photo of group 'family' rewritten by someone who is not in 'family': the new
    file has the writer's group, which may hold other people, so the group gets nothing."""
    photo = tmp_path / "a.jpg"
    photo.write_bytes(F.jpeg())
    photo.chmod(0o640)
    real_stat = os.fstat
    calls = []

    def other_group(fd: int) -> os.stat_result:
        st = real_stat(fd)
        calls.append(fd)
        if len(calls) > 1:
            return st
        fields = list(st)
        fields[stat.ST_GID] = st.st_gid + 1  # the source (read first) is in another group
        return os.stat_result(fields)

    def refuse(*_args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("veilpix.cli._scrub.os.fstat", other_group)
    monkeypatch.setattr("veilpix.cli._scrub.os.fchown", refuse)
    assert main(["scrub", str(photo), "--in-place", "-q", "-j", "1"]) == 0
    assert _mode(photo) == 0o600


@pytest.mark.usefixtures("umask_022")
@pytest.mark.parametrize("workers", ["1", "2"])
def test_copied_folders_are_never_wider_than_the_folders_they_mirror(
    workers: str, tmp_path: Path
) -> None:
    src = tmp_path / "in"
    private, shared = src / "private" / "deeper", src / "shared"
    private.mkdir(parents=True)
    shared.mkdir()
    for folder in (private, shared):
        for i in range(3):
            (folder / f"{i}.jpg").write_bytes(F.jpeg())
    (src / "private").chmod(0o700)
    private.chmod(0o750)
    out = tmp_path / "out" / "new"  # the output folder itself does not exist yet
    assert main(["scrub", str(src), "-o", str(out), "-q", "-j", workers]) == 0
    assert _mode(out / "private") == 0o700  # was 0755: the umask's default
    assert _mode(out / "private" / "deeper") == 0o750
    assert _mode(out / "shared") == 0o755
    assert len(list((out / "private" / "deeper").iterdir())) == 3
