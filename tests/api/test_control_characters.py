"""H10: control characters in any text input answer 422, in a path id 404 — never a 500 — on SQLite and on
PostgreSQL (which refuses NUL in text, where SQLite stores it), through the JSON API and the pages.

Names, usernames, codes, e-mail addresses, ids and credential JSON refuse every control character (Unicode
category Cc: C0, DEL, C1) and lone surrogates; passwords, which are only ever hashed, refuse NUL and lone
surrogates and accept the other characters (docs/api.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.api import API, Clients, begin_totp, new_2fa_user, new_user, start_login
from tests.support.database import db_rows
from tests.support.inprocess import AppServer

pytestmark = pytest.mark.api

# C0 (NUL, SOH, BS, TAB, LF, VT, CR, ESC, US), DEL, C1 (NEL, CSI, APC).
CONTROLS = ["\x00", "\x01", "\x08", "\t", "\n", "\x0b", "\r", "\x1b", "\x1f", "\x7f", "\x85", "\x9b", "\x9f"]
# What no password may contain either (JSON may carry a lone surrogate as "\ud800").
NEVER_IN_A_PASSWORD = ["\x00", "\ud800"]
# Percent-encoded control characters in a path segment: NUL, SOH, LF, DEL, C1 NEL.
PATH_CONTROLS = ["%00", "a%01b", "%0A", "x%7F", "%C2%85"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    data_dir: Path = tmp_path_factory.mktemp(f"controls-{request.param}")
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    with AppServer(data_dir, database_url=url) as srv:
        yield srv


@pytest.fixture(scope="module")
def clients(server: AppServer) -> Iterator[Clients]:
    with Clients(server) as made:
        yield made


def send(client: httpx.Client, method: str, path: str, body: dict[str, Any]) -> httpx.Response:
    # json.dumps escapes control characters ("\u0000") and keeps a lone surrogate as "\ud800".
    return client.request(
        method, path, content=json.dumps(body), headers={"Content-Type": "application/json"}
    )


def assert_refused(r: httpx.Response, status: int, error: str) -> None:
    where = f"{r.request.method} {r.request.url.raw_path!r}: {r.status_code} {r.text[:200]}"
    assert r.status_code == status, where
    assert r.json()["error"] == error, where


def with_controls(value: str) -> Iterator[str]:
    for c in CONTROLS:
        yield f"{value[:2]}{c}{value[2:]}"


def test_H10_sign_up_and_sign_in_refuse_control_characters(server: AppServer, clients: Clients) -> None:
    client = clients.new()
    name = unique_username("h10")
    for bad in with_controls(name):
        r = send(client, "POST", f"{API}/accounts", {"username": bad, "password": STRONG_PASSWORD})
        assert_refused(r, 422, "invalid_request")
        body = {"username": name, "password": STRONG_PASSWORD, "email": bad + "@example.org"}
        assert_refused(send(client, "POST", f"{API}/accounts", body), 422, "invalid_request")
        r = send(client, "POST", f"{API}/login", {"username": bad, "password": STRONG_PASSWORD})
        assert_refused(r, 422, "invalid_request")
    for bad in NEVER_IN_A_PASSWORD:
        body = {"username": name, "password": STRONG_PASSWORD + bad}
        assert_refused(send(client, "POST", f"{API}/accounts", body), 422, "invalid_request")
        assert_refused(send(client, "POST", f"{API}/login", body), 422, "invalid_request")
    # Nothing was half-written: the name is still free.
    assert db_rows(server, "SELECT id FROM accounts WHERE username = :u", u=name) == []
    assert (
        send(client, "POST", f"{API}/accounts", {"username": name, "password": STRONG_PASSWORD}).status_code
        == 201
    )


def test_H10_second_steps_refuse_control_characters_in_codes(server: AppServer, clients: Clients) -> None:
    user = new_2fa_user(server, clients)
    pending = start_login(clients, user.username)
    for bad in with_controls("123456"):
        for path in ("/login/totp", "/login/recovery-code"):
            assert_refused(send(pending, "POST", API + path, {"code": bad}), 422, "invalid_request")
        for path in ("/verify-access/totp", "/verify-access/recovery-code"):
            assert_refused(send(user.client, "POST", API + path, {"code": bad}), 422, "invalid_request")
    for bad in NEVER_IN_A_PASSWORD:
        r = send(user.client, "POST", f"{API}/verify-access", {"password": STRONG_PASSWORD + bad})
        assert_refused(r, 422, "invalid_request")
        body = {"current_password": STRONG_PASSWORD, "new_password": STRONG_PASSWORD + "!" + bad}
        assert_refused(send(user.client, "POST", f"{API}/password", body), 422, "invalid_request")
        body = {"current_password": STRONG_PASSWORD + bad, "new_password": STRONG_PASSWORD + "!"}
        assert_refused(send(user.client, "POST", f"{API}/password", body), 422, "invalid_request")


def test_H10_factor_names_and_credentials_refuse_control_characters(
    server: AppServer, clients: Clients
) -> None:
    user = new_2fa_user(server, clients)
    factor_id = user.factors[0].factor_id
    enrollment = begin_totp(user.client)
    confirm = f"{API}/factors/totp/{enrollment.enrollment_id}/confirm"
    for bad in with_controls("Phone 2"):
        assert_refused(
            send(user.client, "PATCH", f"{API}/factors/{factor_id}", {"name": bad}), 422, "invalid_request"
        )
        assert_refused(
            send(user.client, "POST", confirm, {"name": bad, "code": "123456"}), 422, "invalid_request"
        )
        assert_refused(
            send(user.client, "POST", confirm, {"name": "Tablet", "code": bad}), 422, "invalid_request"
        )
        credential = {"id": "abc", "rawId": "abc", "type": "public-key", "response": {"clientDataJSON": bad}}
        for path, body in (
            ("/factors/passkey", {"name": bad, "credential": {"id": "abc"}}),
            ("/factors/passkey", {"name": "Key", "credential": credential}),
            ("/factors/passkey", {"name": "Key", "credential": bad}),
            ("/login/passkey", {"credential": credential}),
            ("/login/passkey", {"credential": {bad: "key with a control character"}}),
            ("/verify-access/passkey", {"credential": credential}),
        ):
            assert_refused(send(user.client, "POST", API + path, body), 422, "invalid_request")
    names = db_rows(server, "SELECT name FROM factors WHERE id = :f", f=factor_id)
    assert names == [("Phone",)]


def test_H10_control_characters_in_a_path_id_answer_404(server: AppServer, clients: Clients) -> None:
    user = new_2fa_user(server, clients)
    for bad in PATH_CONTROLS:
        for method, path, body in (
            ("PATCH", f"/factors/{bad}", {"name": "x"}),
            ("DELETE", f"/factors/{bad}", None),
            ("POST", f"/factors/totp/{bad}/confirm", {"name": "x", "code": "123456"}),
            ("DELETE", f"/sessions/{bad}", None),
        ):
            # httpx would re-encode a raw path: send the percent-encoded bytes as they are.
            request = user.client.build_request(method, server.url, json=body)
            request.url = request.url.copy_with(raw_path=f"{API}{path}".encode())
            assert_refused(user.client.send(request), 404, "not_found")
    assert len(user.client.get(f"{API}/factors").json()["factors"]) == 1


def test_H10_a_password_may_hold_a_tab_as_it_is_only_hashed(server: AppServer, clients: Clients) -> None:
    """The decision of docs/api.md: a password is only hashed, so characters other than NUL are kept."""
    client = clients.new()
    name = unique_username("h10tab")
    password = "correct\thorse battery staple"
    assert (
        send(client, "POST", f"{API}/accounts", {"username": name, "password": password}).status_code == 201
    )
    r = send(client, "POST", f"{API}/login", {"username": name, "password": password})
    assert r.json() == {"status": "signed_in"}
    r = send(client, "POST", f"{API}/login", {"username": name, "password": password.replace("\t", " ")})
    assert_refused(r, 401, "invalid_credentials")


def form_token(page: httpx.Response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text[:500]
    return match.group(1)


def test_H10_the_sign_up_and_sign_in_pages_refuse_control_characters(
    server: AppServer, clients: Clients
) -> None:
    browser = clients.new(headers={"Origin": server.url})
    token = form_token(browser.get("/signup"))
    name = unique_username("h10page")
    for bad in with_controls(name):
        for form in (
            {"username": bad, "password": STRONG_PASSWORD},
            {"username": name, "password": STRONG_PASSWORD, "email": bad + "@example.org"},
            {"username": name, "password": STRONG_PASSWORD + "\x00"},
        ):
            r = browser.post("/signup", data={**form, "csrf": token})
            assert r.status_code == 422, r.text[:300]
            assert "cannot be used" in r.text
        r = browser.post("/login", data={"username": bad, "password": STRONG_PASSWORD, "csrf": token})
        assert r.status_code == 422, r.text[:300]
    assert db_rows(server, "SELECT id FROM accounts WHERE username = :u", u=name) == []
    assert browser.get(f"{API}/session").status_code == 401
    user = new_user(server, clients)
    assert user.client.get(f"{API}/session").status_code == 200
