"""H02 over HTTP: every sign-up path (the page and the API) keeps the per-address limit (SEC-62)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.database import db_rows
from tests.support.inprocess import AppServer

pytestmark = pytest.mark.api


def csrf_of(page: httpx.Response) -> str:
    """The form's CSRF field, whatever it holds before a session exists."""
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf" value="([^"]*)"', page.text)
    assert found is not None, page.text
    return found.group(1)


def accounts_named(server: AppServer, username: str) -> int:
    return len(db_rows(server, "SELECT id FROM accounts WHERE username = :u", u=username))


def test_H02_the_sign_up_page_answers_the_address_limit_and_creates_nothing(tmp_path: Path) -> None:
    with AppServer(tmp_path, env={"TWOSTEP_RATE_LIMIT_PER_MINUTE": "3"}) as server, server.client() as client:
        offset = 60 - time.time() % 60 + 1  # one second into a minute: the requests share one window
        server.set_clock(offset)
        csrf = csrf_of(client.get("/signup"))
        for _ in range(3):  # the address's window is used up by sign-in ceremonies
            wrong = {"username": unique_username("ghost"), "password": "x" * 20}
            assert client.post("/api/v1/login", json=wrong).status_code == 401
        name = unique_username("page")
        form = {"username": name, "password": STRONG_PASSWORD, "email": "", "csrf": csrf}
        r = client.post("/signup", data=form)
        assert r.status_code == 429, r.text
        assert "Too many" in r.text
        assert accounts_named(server, name) == 0
        r = client.post("/api/v1/accounts", json={"username": name, "password": STRONG_PASSWORD})
        assert r.status_code == 429, r.text
        assert r.json()["error"] == "too_many_attempts"
        assert int(r.headers["Retry-After"]) == r.json()["retry_after"]
        assert accounts_named(server, name) == 0
        # The next minute opens a new window: the page signs up and signs in.
        server.set_clock(offset + 60)
        r = client.post("/signup", data=form)
        assert r.status_code == 303, r.text
        assert accounts_named(server, name) == 1
        assert client.get("/api/v1/session").json()["username"] == name
