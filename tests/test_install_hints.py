"""Install hints say the command that works for this install (veilpix is not on the package
index: a checkout or a built wheel is where it comes from)."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from veilpix import UnsupportedImage
from veilpix._install import _source, install_command


class FakeDist:
    def __init__(self, direct_url: Any) -> None:
        self.text = None if direct_url is None else json.dumps(direct_url)

    def read_text(self, name: str) -> str | None:
        assert name == "direct_url.json"
        return self.text


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Any:
    def use(direct_url: Any) -> None:
        monkeypatch.setattr(metadata, "distribution", lambda name: FakeDist(direct_url))
        _source.cache_clear()

    yield use
    _source.cache_clear()


def test_from_a_checkout_editable_or_not(installed: Any, tmp_path: Path) -> None:
    src = tmp_path / "my checkout"
    src.mkdir()
    installed({"url": src.as_uri(), "dir_info": {"editable": True}})
    assert install_command("heif") == f"pip install -e '{src}[heif]'"
    installed({"url": src.as_uri(), "dir_info": {}})
    assert install_command("proxy") == f"pip install '{src}[proxy]'"
    assert install_command(upgrade=True) == f"pip install -U '{src}'"


def test_from_a_wheel_file(installed: Any, tmp_path: Path) -> None:
    wheel = tmp_path / "veilpix-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    installed({"url": wheel.as_uri(), "archive_info": {}})
    assert install_command("heif") == f"pip install '{wheel}[heif]'"  # quoted: [ is a glob


def test_from_git_and_from_the_index(installed: Any, tmp_path: Path) -> None:
    installed({"url": "https://github.com/veilpix/veilpix", "vcs_info": {"vcs": "git"}})
    assert install_command("heif") == (
        "pip install 'veilpix[heif] @ git+https://github.com/veilpix/veilpix'"
    )
    installed(None)  # from an index
    assert install_command("heif") == "pip install 'veilpix[heif]'"
    installed({"url": (tmp_path / "gone").as_uri(), "dir_info": {}})  # moved away since
    assert install_command("heif") == "pip install 'veilpix[heif]'"
    installed("not a dict")
    assert install_command() == "pip install veilpix"


def test_error_hints_name_the_extra_with_its_brackets(installed: Any, tmp_path: Path) -> None:
    installed({"url": tmp_path.as_uri(), "dir_info": {"editable": True}})
    hint = UnsupportedImage("x").hint
    assert f"pip install -e '{tmp_path}[heif]'" in hint
