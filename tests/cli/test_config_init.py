"""``veilpix config init``: a starter veilpix.toml that is valid, commented, and never written
over a file the user did not ask to replace."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from veilpix import load_config
from veilpix.cli._config import starter
from veilpix.cli._main import main

ROOT = Path(__file__).resolve().parents[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_init_writes_a_valid_starter_that_check_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "veilpix.toml"
    code, out, _ = run(capsys, "config", "init", "-o", str(target))
    assert code == 0 and "veilpix config check --config" in out
    assert target.read_text() == starter()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # no secrets in it
    config = load_config(target)
    assert config.policy().faces == "blur"
    assert config.proxy.host == "127.0.0.1"
    code, out, _ = run(capsys, "config", "check", "--config", str(target))
    assert code == 0 and "valid" in out


def test_init_never_replaces_a_file_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "veilpix.toml"
    target.write_text("# mine\n")
    os.chmod(target, 0o600)
    code, _, err = run(capsys, "config", "init", "-o", str(target))
    assert code == 2 and "exists; nothing was written" in err and "--force" in err
    assert target.read_text() == "# mine\n"
    code, out, _ = run(capsys, "config", "init", "-o", str(target), "--force", "--json")
    assert code == 0 and json.loads(out)["written"] == str(target)
    assert target.read_text() == starter()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # kept as narrow as it was


def test_the_lines_it_prints_are_safe_to_paste(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shlex

    target = tmp_path / "cfg dir;$(touch pwned)" / "veilpix.toml"
    target.parent.mkdir()
    code, out, _ = run(capsys, "config", "init", "-o", str(target))
    assert code == 0
    export = out.splitlines()[1].split("use it: ", 1)[1]
    assert shlex.split(export) == ["export", f"VEILPIX_CONFIG={target}"]


def test_init_to_stdout_and_into_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "config", "init", "-o", "-")
    assert code == 0 and out == starter()
    code, _, err = run(capsys, "config", "init", "-o", str(tmp_path))
    assert code == 2 and "is a folder" in err
    assert list(tmp_path.iterdir()) == []


def test_the_example_in_the_repository_is_the_starter() -> None:
    example = ROOT / "examples" / "veilpix.toml"
    if not example.is_file():
        pytest.skip("not run from a checkout")
    assert example.read_text() == starter(), "copy sdk/cli/veilpix.example.toml to examples/"


def test_check_shows_the_register_and_the_console(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from veilpix._passwords import hash_password

    stored = hash_password("correct horse battery staple")
    cfg = tmp_path / "veilpix.toml"
    cfg.write_text(
        '[register]\ncontroller = "Example GmbH"\ndpo = "dpo@example.com"\n'
        f'[console]\nshow_subjects = ["dpo"]\n[console.users]\ndpo = "{stored}"\n'
    )
    code, out, _ = run(capsys, "config", "check", "--config", str(cfg))
    assert code == 0
    assert "register: controller, dpo; not set: address, contact, representative" in out
    assert "console: 127.0.0.1:8790, allow_remote false, 1 user, subjects shown to dpo" in out
    assert stored not in out  # never a password hash
    code, out, _ = run(capsys, "config", "check", "--config", str(cfg), "--json")
    doc = json.loads(out)
    assert doc["register"]["set"] == ["controller", "dpo"]
    assert doc["console"]["users"] == ["dpo"] and stored not in out
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    code, out, _ = run(capsys, "config", "check", "--config", str(empty))
    assert "register: nothing set (the register flags every field)" in out
    assert "subjects sealed" in out
