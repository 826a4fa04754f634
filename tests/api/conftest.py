"""In-process fixtures: the app of create_app(settings) in this process (tests.support.inprocess), spoken to
over httpx, on SQLite in a temporary directory. The API's own behaviour is tested here, fast; what needs
real processes is in tests/e2e."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.inprocess import AppServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """One app on SQLite for a test module; tests use unique usernames."""
    with AppServer(tmp_path_factory.mktemp("app")) as srv:
        yield srv
        srv.set_clock(0)
