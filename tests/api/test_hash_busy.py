"""H03 over HTTP: with one hash at a time and a queue of one, a burst of password requests gets some
503 busy (with Retry-After), never a 500, and a refused attempt is not counted."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.api import release_together
from tests.support.database import db_rows
from tests.support.inprocess import AppServer

pytestmark = pytest.mark.api

BURST = 16
# Real argon2id at the OWASP floor (about 30 ms a hash here), so that the burst overlaps.
FLOOR_ARGON2 = {
    "TWOSTEP_ARGON2_TIME_COST": "2",
    "TWOSTEP_ARGON2_MEMORY_COST": "19456",
    "TWOSTEP_ARGON2_PARALLELISM": "1",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    env = {**FLOOR_ARGON2, "TWOSTEP_PASSWORD_HASH_CONCURRENCY": "1", "TWOSTEP_PASSWORD_HASH_QUEUE": "1"}
    with AppServer(tmp_path_factory.mktemp("h03"), env=env, cheap_argon2=False) as srv:
        yield srv


def new_accounts(server: AppServer, count: int) -> list[str]:
    """Accounts of their own for each racer: the per-account counters stay out of the way."""
    names = [unique_username("burst") for _ in range(count)]
    with server.client() as client:
        for name in names:
            body = {"username": name, "password": STRONG_PASSWORD}
            assert client.post("/api/v1/accounts", json=body).status_code == 201
    return names


def assert_busy(r: httpx.Response) -> None:
    body = r.json()
    assert body["error"] == "busy", body
    assert body["message"].strip()
    assert isinstance(body["retry_after"], int) and body["retry_after"] >= 1
    assert int(r.headers["Retry-After"]) == body["retry_after"]


def test_H03_a_burst_of_sign_ins_gets_busy_never_a_500(server: AppServer) -> None:
    names = new_accounts(server, BURST)
    clients = [server.client() for _ in range(BURST)]
    try:
        responses = release_together(
            [
                lambda c=c, n=n: c.post(  # type: ignore[misc]
                    "/api/v1/login", json={"username": n, "password": STRONG_PASSWORD}
                )
                for c, n in zip(clients, names, strict=True)
            ]
        )
    finally:
        for c in clients:
            c.close()
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert 200 in statuses and 503 in statuses, statuses
    for r in responses:
        if r.status_code == 503:
            assert_busy(r)
        else:
            assert r.json() == {"status": "signed_in"}


def test_H03_a_busy_attempt_is_not_counted(server: AppServer) -> None:
    """Wrong passwords of unknown users: only the ones that were evaluated (401) count for the address."""
    server.set_clock(25 * 3600)  # past the address counter's memory of earlier tests
    clients = [server.client() for _ in range(BURST)]
    try:
        responses = release_together(
            [
                lambda c=c: c.post(  # type: ignore[misc]
                    "/api/v1/login", json={"username": unique_username("ghost"), "password": "x" * 20}
                )
                for c in clients
            ]
        )
    finally:
        for c in clients:
            c.close()
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {401, 503}, statuses
    assert 503 in statuses, statuses
    rows = db_rows(server, "SELECT failures FROM throttles WHERE key = 'pw-ip:127.0.0.1'")
    assert rows == [(statuses.count(401),)]
    for r in responses:
        if r.status_code == 503:
            assert_busy(r)


def test_H03_pages_show_a_busy_page_with_503(server: AppServer) -> None:
    names = new_accounts(server, BURST)
    clients = [server.client() for _ in range(BURST)]
    try:
        forms = []
        for c, name in zip(clients, names, strict=True):
            page = c.get("/login")
            found = re.search(r'name="csrf" value="([^"]*)"', page.text)
            assert found is not None
            forms.append({"username": name, "password": STRONG_PASSWORD, "csrf": found.group(1)})
        responses = release_together(
            [lambda c=c, f=f: c.post("/login", data=f) for c, f in zip(clients, forms, strict=True)]  # type: ignore[misc]
        )
    finally:
        for c in clients:
            c.close()
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {303, 503}, statuses
    assert 503 in statuses, statuses
    for r in responses:
        if r.status_code == 503:
            assert "Busy right now" in r.text
            assert r.headers["content-type"].startswith("text/html")
            assert int(r.headers["Retry-After"]) >= 1
