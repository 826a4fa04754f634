"""H14: the sign-in and sign-up forms carry a CSRF token before any session exists, bound to a random
pre-session cookie; a post without it, or with the token of another browser, is refused with the 403 page
(which leads back to the form), and signs nobody in and creates nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.api import API
from tests.support.database import db_rows
from tests.support.inprocess import AppServer

pytestmark = pytest.mark.api

PRESESSION = "twostep_presession"
SESSION = "twostep_session"
FORM_TOKEN = re.compile(
    r'<form method="post" action="/(?:login|signup)"[^>]*>\s*<input type="hidden" name="csrf" value="([^"]*)"'
)


@pytest.fixture
def browsers(server: AppServer) -> Iterator[list[httpx.Client]]:
    """Three browser-like clients with their own cookie jars (no redirects followed)."""
    made = [server.client() for _ in range(3)]
    yield made
    for client in made:
        client.close()


def account(server: AppServer) -> str:
    name = unique_username("h14")
    body = {"username": name, "password": STRONG_PASSWORD}
    with server.client() as client:
        assert client.post(f"{API}/accounts", json=body).status_code == 201
    return name


def form_token(page: httpx.Response) -> str:
    match = FORM_TOKEN.search(page.text)
    assert match, page.text[:800]
    return match.group(1)


def sessions_of(server: AppServer, name: str) -> int:
    rows = db_rows(
        server,
        "SELECT count(*) FROM sessions s JOIN accounts a ON a.id = s.account_id WHERE a.username = :u",
        u=name,
    )
    return int(rows[0][0])


def assert_forbidden(r: httpx.Response, back: str) -> None:
    assert r.status_code == 403, r.text[:300]
    assert "This form has expired" in r.text
    assert f'href="{back}"' in r.text  # a way back to the form
    assert SESSION not in r.headers.get("set-cookie", "")


def test_H14_the_sign_in_form_carries_a_token_bound_to_a_pre_session_cookie(
    server: AppServer, browsers: list[httpx.Client]
) -> None:
    page = browsers[0].get("/login")
    assert page.status_code == 200
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(f"{PRESESSION}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert len(form_token(page)) == 64
    # The same browser keeps its cookie and its token; another browser gets others.
    assert form_token(browsers[0].get("/signup")) == form_token(page)
    assert form_token(browsers[1].get("/login")) != form_token(page)


def test_H14_a_sign_in_post_without_the_token_is_refused(
    server: AppServer, browsers: list[httpx.Client]
) -> None:
    name = account(server)
    form = {"username": name, "password": STRONG_PASSWORD}
    fresh, with_cookie, _ = browsers
    assert_forbidden(fresh.post("/login", data=form), "/login")  # no cookie, no token: the attack
    with_cookie.get("/login")
    assert_forbidden(with_cookie.post("/login", data=form), "/login")
    assert_forbidden(with_cookie.post("/login", data={**form, "csrf": ""}), "/login")
    assert_forbidden(with_cookie.post("/login", data={**form, "csrf": "0" * 64}), "/login")
    assert_forbidden(fresh.post("/login/passkey", data={"credential": "{}"}), "/login")
    assert sessions_of(server, name) == 0
    assert fresh.get(f"{API}/session").status_code == 401
    assert with_cookie.get(f"{API}/session").status_code == 401


def test_H14_a_sign_up_post_without_the_token_creates_no_account(
    server: AppServer, browsers: list[httpx.Client]
) -> None:
    name = unique_username("h14new")
    form = {"username": name, "password": STRONG_PASSWORD}
    assert_forbidden(browsers[0].post("/signup", data=form), "/signup")
    browsers[1].get("/signup")
    assert_forbidden(browsers[1].post("/signup", data=form), "/signup")
    assert db_rows(server, "SELECT id FROM accounts WHERE username = :u", u=name) == []


def test_H14_the_token_of_another_browser_is_refused(server: AppServer, browsers: list[httpx.Client]) -> None:
    attacker, victim, fresh = browsers
    stolen = form_token(attacker.get("/login"))
    victim.get("/login")  # the victim has a pre-session cookie of its own
    name = account(server)
    form = {"username": name, "password": STRONG_PASSWORD, "csrf": stolen}
    assert_forbidden(victim.post("/login", data=form), "/login")
    assert_forbidden(fresh.post("/login", data=form), "/login")
    new_name = unique_username("h14new")
    assert_forbidden(victim.post("/signup", data={**form, "username": new_name}), "/signup")
    assert sessions_of(server, name) == 0
    assert db_rows(server, "SELECT id FROM accounts WHERE username = :u", u=new_name) == []
    # The attacker's own browser still signs in with its own token.
    r = attacker.post("/login", data=form)
    assert r.status_code == 303 and r.headers["location"] == "/settings/two-step"
    assert attacker.get(f"{API}/session").json()["username"] == name


def test_H14_a_browser_that_shows_the_forms_first_signs_up_and_in(
    server: AppServer, browsers: list[httpx.Client]
) -> None:
    browser = browsers[0]
    name = unique_username("h14ok")
    token = form_token(browser.get("/signup"))
    r = browser.post("/signup", data={"username": name, "password": STRONG_PASSWORD, "csrf": token})
    assert r.status_code == 303, r.text[:300]
    assert browser.get(f"{API}/session").json()["username"] == name
    browser.cookies.delete(SESSION)
    token = form_token(browser.get("/login?next=/settings/sessions"))
    form = {"username": name, "password": STRONG_PASSWORD, "next": "/settings/sessions", "csrf": token}
    r = browser.post("/login", data=form)
    assert r.status_code == 303 and r.headers["location"] == "/settings/sessions"
    assert browser.get(f"{API}/session").json()["username"] == name
    # The 403 page itself hands out a fresh token: reloading the form after a refusal works.
    other = browsers[1]
    refused = other.post("/login", data={"username": name, "password": STRONG_PASSWORD})
    assert refused.status_code == 403
    r = other.post(
        "/login",
        data={"username": name, "password": STRONG_PASSWORD, "csrf": form_token(other.get("/login"))},
    )
    assert r.status_code == 303
