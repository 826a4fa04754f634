"""WA-A16 under concurrency: parallel valid assertions on one challenge, exactly one succeeds.

Against `twostep serve --workers 4` on SQLite and on PostgreSQL (security.md §3: a single-threaded client or
server would serialise the requests and let a racy implementation pass). Each round releases the requests
together with a barrier over connections opened beforehand, and is repeated 10 times; the database state
(the account's signed-in sessions) is checked as well as the answers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.passkeys import API, Account, Api, close_all, pending_login, with_passkey
from tests.support.server import Server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROUNDS = 10
COOKIE = "twostep_session"
CEREMONY = "twostep_ceremony"


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    close_all()


def _race(
    server: Server, cookies: dict[str, str], path: str, credentials: list[dict[str, Any]]
) -> list[httpx.Response]:
    """POST each credential from its own connection carrying ``cookies``, all released at once."""
    header = "; ".join(f"{k}={v}" for k, v in cookies.items())
    clients = [httpx.Client(base_url=server.url, timeout=30, headers={"Cookie": header}) for _ in credentials]
    try:
        for client in clients:  # open every connection before the start
            assert client.get(API + "/_test/clock").status_code == 200
        barrier = threading.Barrier(len(clients))

        def post(i: int) -> httpx.Response:
            barrier.wait(timeout=20)
            return clients[i].post(API + path, json={"credential": credentials[i]})

        with ThreadPoolExecutor(len(clients)) as pool:
            return list(pool.map(post, range(len(clients))))
    finally:
        for client in clients:
            client.close()


def _exactly_one_winner(responses: list[httpx.Response], loser_statuses: set[int]) -> httpx.Response:
    assert all(r.status_code < 500 for r in responses), [(r.status_code, r.text) for r in responses]
    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) == 1, [(r.status_code, r.text) for r in responses]
    for r in responses:
        if r.status_code != 200:
            assert r.status_code in loser_statuses, (r.status_code, r.text)
    return winners[0]


def _signed_in_as(server: Server, token: str | None) -> str:
    assert token
    with httpx.Client(base_url=server.url, timeout=30, headers={"Cookie": f"{COOKIE}={token}"}) as client:
        r = client.get(API + "/session")
    assert r.status_code == 200, r.text
    assert r.json()["second_factor"] == "passkey"
    username: str = r.json()["username"]
    return username


def _session_count(manager: Api) -> int:
    r = manager.get("/sessions")
    assert r.status_code == 200, r.text
    return len(r.json()["sessions"])


def _account(server: Server, synced: bool) -> tuple[Account, Api]:
    if synced:  # every assertion carries counter 0: only the single-use challenge stops a second success
        return with_passkey(server, "race", sign_count_step=0, backup_eligible=True, backup_state=True)
    return with_passkey(server, "race")


@pytest.mark.parametrize(
    ("parallel", "synced"),
    [(2, False), (10, True)],
    ids=["2-counting", "10-synced-zero-counter"],
)
def test_wa_a16_parallel_second_step_assertions_one_wins(
    multi_server: Server, parallel: int, synced: bool
) -> None:
    """WA-A16: `parallel` valid assertions on one challenge of one pending sign-in → exactly one 200, one new
    signed-in session; the rest 401 passkey_rejected (or no_pending_login), never a 5xx. Ten rounds."""
    account, manager = _account(multi_server, synced)
    sessions = _session_count(manager)
    for _ in range(ROUNDS):
        client = pending_login(multi_server, account)
        options = client.options("/login/passkey/options")
        credentials = [account.auth.get(options) for _ in range(parallel)]
        cookie = client.http.cookies.get(COOKIE)
        assert cookie
        responses = _race(multi_server, {COOKIE: cookie}, "/login/passkey", credentials)
        winner = _exactly_one_winner(responses, {401})
        assert _signed_in_as(multi_server, winner.cookies.get(COOKIE)) == account.username
        sessions += 1
        assert _session_count(manager) == sessions


@pytest.mark.parametrize("parallel", [2])
def test_wa_a16_parallel_passwordless_assertions_one_wins(multi_server: Server, parallel: int) -> None:
    """WA-A16 for passwordless sign-in: one ceremony cookie, one challenge, `parallel` valid assertions."""
    account, manager = _account(multi_server, synced=True)
    sessions = _session_count(manager)
    for _ in range(ROUNDS):
        client = Api(multi_server)
        options = client.options("/login/passkey/options")
        ceremony = client.http.cookies.get(CEREMONY)
        assert ceremony
        credentials = [account.auth.get(options) for _ in range(parallel)]
        responses = _race(multi_server, {CEREMONY: ceremony}, "/login/passkey", credentials)
        winner = _exactly_one_winner(responses, {401})
        assert _signed_in_as(multi_server, winner.cookies.get(COOKIE)) == account.username
        sessions += 1
        assert _session_count(manager) == sessions


def test_wa_a16_parallel_verify_access_assertions_one_wins(multi_server: Server) -> None:
    """WA-A16 for verify access: one session, one challenge, two valid assertions → one grant; the other is
    refused (its session id is rotated away, or its challenge is gone)."""
    account, _ = _account(multi_server, synced=True)
    for _ in range(ROUNDS):
        client = Api(multi_server)
        assert client.login(account.username)["status"] == "second_factor_required"
        options = client.options("/login/passkey/options")
        assert client.post("/login/passkey", {"credential": account.auth.get(options)}).status_code == 200
        options = client.options("/verify-access/passkey/options")
        cookie = client.http.cookies.get(COOKIE)
        assert cookie
        credentials = [account.auth.get(options) for _ in range(2)]
        responses = _race(multi_server, {COOKIE: cookie}, "/verify-access/passkey", credentials)
        winner = _exactly_one_winner(responses, {401})
        assert winner.json()["status"] == "verified"
