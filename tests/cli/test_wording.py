"""Counts read right ("1 file", "2 files") and the audit list explains its face columns
(issue 18, item 5)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import factories as F
from clikit import run
from veilpix.cli._main import main

# "1 files", "1 elements", "1 transfers", "1 entries", "(s)": what the output must never say
WRONG = re.compile(r"(?<![\d.,])1 (files|elements|findings|transfers|entries|checkpoints)\b|\(s\)")


def test_scrub_of_one_file_says_file(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(F.jpeg())
    (tmp_path / "n.txt").write_text("x")
    res = run("scrub", str(tmp_path), "-o", str(tmp_path / "out"), "--max-side", "16")
    assert res.returncode == 0, res.stderr
    assert "scrubbed 1 of 1 file in" in res.stdout
    assert "1 file downscaled" in res.stdout
    assert "1 non-image file skipped" in res.stdout
    assert not WRONG.search(res.stdout), res.stdout


def test_demo_counts(tmp_path: Path) -> None:
    res = run("demo")
    assert res.returncode == 0
    assert re.search(r"\d+ container elements removed, \d+ findings,", res.stdout)
    assert not WRONG.search(res.stdout)


def _log(tmp_path: Path) -> Path:
    from auditkit import fill
    from veilpix import AuditLog

    path = tmp_path / "audit.db"
    long_ago = datetime.now(UTC) - timedelta(days=30)
    with AuditLog(path, clock=lambda: long_ago) as log:
        fill(log, 1, subject_ref="s-1")
    return path


def test_audit_list_explains_its_face_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _log(tmp_path)
    assert main(["audit", "list", "--log", str(path)]) == 0
    out = capsys.readouterr().out
    assert "+?" not in out
    header = next(line for line in out.splitlines() if line.startswith("id "))
    assert header.split()[-3:] == ["unblurred", "unchecked", "outcome"]
    row = next(line for line in out.splitlines() if line.endswith("sent"))
    assert row.split()[-3:] == ["0", "1", "sent"]  # no faces unblurred, one image unchecked
    assert "unblurred: faces sent without blur; unchecked: images sent without a face check" in out
    assert "1 of 1 transfer, newest first" in out
    # --json stays structured: the facts behind both columns, per image
    assert main(["audit", "list", "--log", str(path), "--json"]) == 0
    (rec,) = json.loads(capsys.readouterr().out)
    (image,) = rec["what"]["images"]
    assert image["faces_checked"] is False and "faces_unblurred" in image


def test_audit_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _log(tmp_path)
    assert main(["audit", "verify", "--log", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1 transfer," in out
    argv = ["audit", "erase", "--log", str(path), "--subject", "s-1", "--yes"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "erased the subject-linked fields of 1 transfer;" in out
    assert main(["audit", "prune", "--log", str(path), "--older-than", "7d", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove 1 transfer begun before" in out
    assert not WRONG.search(out)
