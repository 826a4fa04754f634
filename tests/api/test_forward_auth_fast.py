"""Forward authentication's fast path (issue 13, F1): the allowed answer is given before FastAPI, from one
read on the driver itself, and must be the answer the whole application gives (the same status and headers,
the once-a-minute last-seen write, the access line) on SQLite and on PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from tests.support.api import API, Clients, login, signup
from tests.support.database import db_rows
from tests.support.inprocess import AppServer
from twostep.web.app import TwostepAPI

pytestmark = pytest.mark.api

ORIGINAL = {"X-Original-URL": "https://app.example.test/page?a=1&b=2"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    with AppServer(tmp_path_factory.mktemp("fast"), database_url=url) as srv:
        yield srv


@pytest.fixture
def clients(server: AppServer) -> Iterator[Clients]:
    with Clients(server) as c:
        yield c


def app_of(server: AppServer) -> TwostepAPI:
    assert isinstance(server.app, TwostepAPI)
    return server.app


class Statements:
    """The statements about sessions that SQLAlchemy executes on the app's engine while the block runs: the
    session lookup (sessions joined with accounts) and the last-seen write. (The maintenance rounds run
    their own statements on the same engine at any time; they are not counted.)"""

    def __init__(self, server: AppServer) -> None:
        self.engine = app_of(server).state.web.ctx.db.engine
        self.seen: list[str] = []

    def _count(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "sessions JOIN accounts" in statement or statement.lstrip().upper().startswith("UPDATE SESSIONS"):
            self.seen.append(statement)

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._count)


def signed_in(clients: Clients) -> tuple[str, Any]:
    client = clients.new()
    username = signup(client)
    assert login(client, username) == {"status": "signed_in"}
    return username, client


def test_the_fast_answer_is_the_answer_of_the_whole_application(server: AppServer, clients: Clients) -> None:
    username, client = signed_in(clients)
    fast = client.get(f"{API}/forward-auth", headers=ORIGINAL)
    app = app_of(server)
    saved, app.fast_path = app.fast_path, None
    try:
        whole = client.get(f"{API}/forward-auth", headers=ORIGINAL)
    finally:
        app.fast_path = saved
    assert fast.status_code == whole.status_code == 200
    assert fast.headers["remote-user"] == username
    assert fast.content == whole.content == b""

    def comparable(headers: Any) -> dict[str, str]:
        return {k: v for k, v in headers.items() if k not in ("x-request-id", "content-type")}

    assert comparable(fast.headers) == comparable(whole.headers)
    assert fast.headers["x-request-id"] != whole.headers["x-request-id"]


def test_an_allowed_request_runs_no_sqlalchemy_statement(server: AppServer, clients: Clients) -> None:
    """The hot path's one read goes to the driver itself; the whole application is not asked."""
    _, client = signed_in(clients)
    with Statements(server) as statements:
        for _ in range(3):
            assert client.get(f"{API}/forward-auth", headers=ORIGINAL).status_code == 200
    assert statements.seen == []


def test_the_last_seen_write_owed_once_a_minute_still_happens(server: AppServer, clients: Clients) -> None:
    username, client = signed_in(clients)

    def last_seen() -> Any:
        rows = db_rows(
            server,
            "SELECT s.last_seen_at FROM sessions s JOIN accounts a ON a.id = s.account_id "
            "WHERE a.username = :u AND s.kind = 'active'",
            u=username,
        )
        assert len(rows) == 1
        return rows[0][0]

    before = last_seen()
    server.set_clock(61)
    try:
        with Statements(server) as statements:
            assert client.get(f"{API}/forward-auth", headers=ORIGINAL).status_code == 200
        assert any(s.lstrip().upper().startswith("UPDATE SESSIONS") for s in statements.seen), statements.seen
        assert last_seen() != before
        with Statements(server) as statements:  # written: the next one is a read again
            assert client.get(f"{API}/forward-auth", headers=ORIGINAL).status_code == 200
        assert statements.seen == []
    finally:
        server.set_clock(0)


def test_an_ended_session_is_refused_by_the_whole_application(server: AppServer, clients: Clients) -> None:
    _, client = signed_in(clients)
    assert client.post(f"{API}/logout", json={}).status_code in (200, 204)
    r = client.get(f"{API}/forward-auth", headers=ORIGINAL)
    assert r.status_code == 401 and r.json()["error"] == "not_signed_in"
    assert r.headers["location"].startswith(f"{server.url}/login?next=")


def test_allowed_answers_are_logged_at_debug_and_refusals_at_info(
    server: AppServer, clients: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    _, client = signed_in(clients)
    anonymous = clients.new()
    with caplog.at_level(logging.DEBUG, logger="twostep.access"):
        assert client.get(f"{API}/forward-auth", headers=ORIGINAL).status_code == 200
        assert anonymous.get(f"{API}/forward-auth", headers=ORIGINAL).status_code == 401
    lines = [
        (r.levelno, getattr(r, "status", None))
        for r in caplog.records
        if r.name == "twostep.access" and getattr(r, "route", None) == f"{API}/forward-auth"
    ]
    assert (logging.DEBUG, 200) in lines and (logging.INFO, 401) in lines, lines
    assert (logging.INFO, 200) not in lines


def test_the_fast_path_answers_the_allowed_request_and_declines_the_rest(
    server: AppServer, clients: Clients
) -> None:
    _, client = signed_in(clients)
    app = app_of(server)
    real = app.fast_path
    assert real is not None
    answered: list[bool] = []

    async def spy(scope: Any, send: Any) -> bool:
        done = await real(scope, send)
        answered.append(done)
        return done

    app.fast_path = spy
    try:
        assert client.get(f"{API}/forward-auth", headers=ORIGINAL).status_code == 200
        assert clients.new().get(f"{API}/forward-auth", headers=ORIGINAL).status_code == 401
        denied = {"X-Original-URL": "https://app.example.test/x", "Content-Length": "0"}
        assert client.get(f"{API}/forward-auth", headers=denied).status_code == 200
    finally:
        app.fast_path = real
    assert answered == [True, False, False]
