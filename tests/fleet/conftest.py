"""Fixtures of the fleet log's tests: a real PostgreSQL (tests/pgkit.py) per test worker, a
fresh database per test, and the fleet's key file in the test's own folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pgkit
import pytest


@pytest.fixture(scope="session")
def pg() -> Iterator[pgkit.Cluster]:
    reason = pgkit.skip_reason()
    if reason:
        pytest.skip(reason)
    cluster = pgkit.Cluster().start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def fleet_url(pg: pgkit.Cluster) -> str:
    """A new, empty database on the shared cluster."""
    return pg.database()


@pytest.fixture
def fleet_key(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "fleet.key"


@pytest.fixture
def own_pg() -> Iterator[pgkit.Cluster]:
    """A cluster of the test's own, to stop and start."""
    reason = pgkit.skip_reason()
    if reason:
        pytest.skip(reason)
    cluster = pgkit.Cluster().start()
    try:
        yield cluster
    finally:
        cluster.destroy()
