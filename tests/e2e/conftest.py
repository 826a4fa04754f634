"""End-to-end fixtures: real `twostep serve` processes on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One single-worker server on SQLite for a test module; tests use unique usernames."""
    with Server(tmp_path_factory.mktemp("server")) as srv:
        yield srv
        srv.set_clock(0)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def multi_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """`twostep serve --workers 4` on SQLite and on PostgreSQL (the race tests)."""
    data_dir: Path = tmp_path_factory.mktemp(f"multi-{request.param}")
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    with Server(data_dir, database_url=url, workers=4) as srv:
        yield srv
