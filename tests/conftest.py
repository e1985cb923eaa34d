"""Shared fixtures. The real corpus, face set and oracle script live in ../shared, outside
the repository (several images are licensed for research only): tests that need them skip
when it is absent. Synthetic fixtures built in tests/factories.py cover the same cases."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pgkit import fleet_key, fleet_url, own_pg, pg  # noqa: F401  (a real PostgreSQL)

import oracle
from browserkit import browser, browser_session, page  # noqa: F401  (real-browser fixtures)

ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path | None:
    env = os.environ.get("VEILPIX_SHARED")
    for candidate in ([Path(env)] if env else []) + [ROOT.parent / "shared"]:
        if (candidate / "corpus" / "corpus.tsv").is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def shared() -> Path:
    found = shared_dir()
    if found is None:
        pytest.skip("../shared (corpus and oracle) is not present")
    return found


@pytest.fixture(scope="session")
def exiftool() -> None:
    if not oracle.available():
        pytest.skip("exiftool is not installed (Debian: libimage-exiftool-perl)")


@pytest.fixture
def assert_clean(exiftool: None, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write bytes to a file and assert exiftool finds nothing but structure in it."""

    def check(data: bytes, name: str = "out.bin") -> None:
        path = tmp_path / name
        path.write_bytes(data)
        left = oracle.residue([str(path)])[str(path)]
        assert left == [], f"exiftool still finds: {left}"

    return check
