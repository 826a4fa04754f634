"""Forward authentication with access rules, in process: every row of docs/api.md "The answers", the original
request from X-Original-URL (nginx) and X-Forwarded-* (Caddy, Traefik), the Remote-* headers, and requests
that carry odd headers (never a 500, never a cookie)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.support.api import (
    API,
    Clients,
    code_now,
    expect,
    fresh_step,
    login,
    new_2fa_user,
    new_user,
    signed_in_with_totp,
    signup,
    start_login,
)
from tests.support.database import account_id, database_url
from tests.support.inprocess import AppServer

pytestmark = pytest.mark.api

ADMIN_USER = f"ops{secrets.token_hex(4)}"
RULES: dict[str, Any] = {
    "default_policy": "deny",
    "rules": [
        {"domain": ["public.example.test"], "policy": "bypass"},
        {"domain": ["app.example.test"], "resources": ["^/api/health$"], "policy": "bypass"},
        {"domain": ["app.example.test"], "policy": "one_factor"},
        {"domain": ["*.secure.example.test", "secure.example.test"], "policy": "two_factor"},
        {
            "domain": ["admin.example.test"],
            "groups": ["admins"],
            "users": [ADMIN_USER],
            "policy": "one_factor",
        },
        {"domain": ["admin.example.test"], "policy": "deny"},
        {"domain": ["closed.example.test"], "policy": "deny"},
    ],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    with AppServer(tmp_path_factory.mktemp("rules"), settings={"access": RULES}) as srv:
        yield srv


@pytest.fixture
def clients(server: AppServer) -> Iterator[Clients]:
    with Clients(server) as c:
        yield c


def write(server: AppServer, sql: str, **params: Any) -> None:
    engine = create_engine(database_url(server))
    try:
        with engine.begin() as conn:
            conn.execute(text(sql), params)
    finally:
        engine.dispose()


def put_in_groups(server: AppServer, username: str, *names: str) -> None:
    for name in names:
        write(
            server,
            "INSERT INTO account_groups (account_id, name, added_at) VALUES (:a, :n, :t)",
            a=account_id(server, username),
            n=name,
            t=datetime.now(UTC),
        )


def ask(
    client: httpx.Client,
    url: str,
    *,
    redirect: bool = False,
    method: str | None = None,
    accept: str | None = None,
    forwarded: bool = False,
) -> httpx.Response:
    """forward-auth for the original request ``url``: nginx's X-Original-URL, or (``forwarded``) Caddy's and
    Traefik's X-Forwarded-*."""
    headers: dict[str, str] = {}
    if forwarded:
        scheme, rest = url.split("://", 1)
        host, _, uri = rest.partition("/")
        headers |= {"X-Forwarded-Proto": scheme, "X-Forwarded-Host": host, "X-Forwarded-Uri": "/" + uri}
        if method:
            headers["X-Forwarded-Method"] = method
    else:
        headers["X-Original-URL"] = url
        if method:
            headers["X-Original-Method"] = method
    if accept:
        headers["Accept"] = accept
    path = f"{API}/forward-auth" + ("?redirect=1" if redirect else "")
    response = client.get(path, headers=headers)
    assert "set-cookie" not in response.headers, "forward-auth never sets a cookie"
    return response


def login_url(server: AppServer, original: str) -> str:
    return f"{server.url}/login?next={quote(original, safe='')}"


def two_step_url(server: AppServer, original: str) -> str:
    return f"{server.url}/two-step-required?next={quote(original, safe='')}"


HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


# --- not signed in -----------------------------------------------------------------------------------------


def test_not_signed_in_gets_401_with_the_login_url_carrying_the_whole_original_url(
    server: AppServer, clients: Clients
) -> None:
    original = "https://app.example.test/reports?from=2024&to=2025&q=a%20b#x"
    r = ask(clients.new(), original)
    expect(r, 401, "not_signed_in")
    assert r.headers["location"] == login_url(server, original)
    # The query, & included, comes back whole as one `next`.
    assert unquote(r.headers["location"].split("next=", 1)[1]) == original


@pytest.mark.parametrize("forwarded", [False, True], ids=["x-original-url", "x-forwarded"])
def test_redirect_1_answers_302_only_to_a_page_load(
    server: AppServer, clients: Clients, forwarded: bool
) -> None:
    original = "https://app.example.test/a/b?x=1&y=2"
    client = clients.new()
    r = ask(client, original, redirect=True, method="GET", accept=HTML, forwarded=forwarded)
    assert r.status_code == 302 and r.headers["location"] == login_url(server, original)
    r = ask(client, original, redirect=True, method="HEAD", accept=HTML, forwarded=forwarded)
    assert r.status_code == 302
    # Not a page load: a POST, or a fetch that does not accept HTML, gets 401 with the Location.
    for method, accept in (("POST", HTML), ("GET", "application/json"), ("GET", None)):
        r = ask(client, original, redirect=True, method=method, accept=accept, forwarded=forwarded)
        expect(r, 401, "not_signed_in")
        assert r.headers["location"] == login_url(server, original)
    # Without ?redirect=1, never a redirect.
    r = ask(client, original, method="GET", accept=HTML, forwarded=forwarded)
    expect(r, 401, "not_signed_in")


def test_a_bypass_rule_admits_without_a_session_and_sends_no_remote_user(clients: Clients) -> None:
    client = clients.new()
    r = ask(client, "https://public.example.test/anything?x=1")
    assert r.status_code == 200 and "remote-user" not in r.headers
    assert ask(client, "https://app.example.test/api/health").status_code == 200
    # The resource is matched on the cleaned path: /api/health/../../admin is /admin, not the bypass.
    expect(ask(client, "https://app.example.test/api/health/../../admin"), 401, "not_signed_in")
    expect(ask(client, "https://app.example.test/api/health?x=1"), 401, "not_signed_in")


def test_a_rule_that_names_groups_asks_an_anonymous_request_to_sign_in(
    server: AppServer, clients: Clients
) -> None:
    original = "https://admin.example.test/"
    r = ask(clients.new(), original)
    expect(r, 401, "not_signed_in")
    assert r.headers["location"] == login_url(server, original)


def test_a_pending_sign_in_is_not_signed_in(server: AppServer, clients: Clients) -> None:
    user = new_2fa_user(server, clients)
    pending = start_login(clients, user.username)
    expect(ask(pending, "https://app.example.test/"), 401, "not_signed_in")


# --- signed in ---------------------------------------------------------------------------------------------


def test_allowed_answers_200_with_remote_user_groups_and_a_verified_email(
    server: AppServer, clients: Clients
) -> None:
    client = clients.new()
    username = signup(client, ADMIN_USER, email=f"{ADMIN_USER}@example.test")
    put_in_groups(server, username, "staff", "admins")
    assert login(client, username) == {"status": "signed_in"}
    r = ask(client, "https://admin.example.test/dashboard")
    assert r.status_code == 200, r.text
    assert r.headers["remote-user"] == ADMIN_USER
    assert r.headers["remote-groups"] == "admins,staff"
    assert r.headers["remote-email"] == ""  # not verified yet: empty (always sent, for Caddy 2.6)
    write(
        server,
        "UPDATE accounts SET email_verified_at = :t WHERE id = :a",
        t=datetime.now(UTC),
        a=account_id(server, username),
    )
    r = ask(client, "https://admin.example.test/dashboard")
    assert r.headers["remote-email"] == f"{ADMIN_USER}@example.test"


def test_a_user_outside_the_rules_group_gets_403(server: AppServer, clients: Clients) -> None:
    user = new_2fa_user(server, clients)
    put_in_groups(server, user.username, "staff")
    r = ask(user.client, "https://admin.example.test/", redirect=True, method="GET", accept=HTML)
    expect(r, 403, "access_denied")
    assert "location" not in r.headers
    # A member of the group named in the first rule is let in; groups are sent comma-separated.
    put_in_groups(server, user.username, "admins")
    r = ask(user.client, "https://admin.example.test/")
    assert r.status_code == 200 and r.headers["remote-groups"] == "admins,staff"
    assert r.headers["remote-user"] == user.username


def test_deny_rules_and_the_default_policy_answer_403(clients: Clients, server: AppServer) -> None:
    user = new_user(server, clients)
    expect(ask(user.client, "https://closed.example.test/"), 403, "access_denied")
    expect(ask(user.client, "https://unknown.example.org/"), 403, "access_denied")  # default_policy deny
    # Without X-Original-URL or X-Forwarded-Host: the origin's host (localhost), which no rule names.
    expect(user.client.get(f"{API}/forward-auth"), 403, "access_denied")


def test_one_factor_admits_a_password_only_account_and_two_factor_sends_it_to_set_one_up(
    server: AppServer, clients: Clients
) -> None:
    user = new_user(server, clients)
    r = ask(user.client, "https://app.example.test/")
    assert r.status_code == 200 and r.headers["remote-user"] == user.username
    assert r.headers["remote-groups"] == ""
    original = "https://x.secure.example.test/page?a=1&b=2"
    r = ask(user.client, original)
    expect(r, 403, "two_factor_required")
    assert r.headers["location"] == two_step_url(server, original)
    r = ask(user.client, original, redirect=True, method="GET", accept=HTML, forwarded=True)
    assert r.status_code == 302 and r.headers["location"] == two_step_url(server, original)
    r = ask(user.client, original, redirect=True, method="POST", accept=HTML, forwarded=True)
    expect(r, 403, "two_factor_required")
    assert r.headers["location"] == two_step_url(server, original)


def test_two_factor_admits_a_session_signed_in_with_its_second_factor(
    server: AppServer, clients: Clients
) -> None:
    user = new_2fa_user(server, clients)
    fresh_step(server)
    client = signed_in_with_totp(clients, user, code_now(server, user.secret))
    for url in ("https://secure.example.test/", "https://a.b.secure.example.test/x"):
        r = ask(client, url)
        assert r.status_code == 200 and r.headers["remote-user"] == user.username


# --- odd requests: never a 500, never a cookie -------------------------------------------------------------

ODD_HEADERS: list[dict[str, bytes]] = [
    {"X-Original-URL": b"http://[::1"},
    {"X-Original-URL": b"not a url"},
    {"X-Original-URL": b"https://app.example.test/\xc3\xa9t\xc3\xa9?q=\xff\xfe"},
    {"X-Original-URL": b"https://app.example.test/" + b"a" * 60000},
    {"X-Original-URL": b"https://app.example.test:99999999/"},
    {"X-Original-URL": b"javascript:alert(1)//app.example.test/"},
    {"X-Original-URL": b"https://user:pw@app.example.test/%zz%%/../../.."},
    {"X-Original-URL": "https://\u0430pp.example.test/".encode()},
    {"X-Forwarded-Host": b"app.example.test, evil.example", "X-Forwarded-Uri": b"no-slash"},
    {"X-Forwarded-Host": b"[::1]:443", "X-Forwarded-Proto": b"gopher", "X-Forwarded-Method": b"\xff" * 40},
    {"X-Forwarded-Host": b"\xe2\x98\x83.example.test", "X-Forwarded-Uri": b"/\xe2\x98\x83?&&&=="},
    {"X-Forwarded-Host": b":::::", "X-Forwarded-Uri": b"//" + b"%" * 5000},
    {"X-Forwarded-Host": b"app.example.test", "X-Forwarded-Uri": b"/" + b"\xf0\x9f\x92\xa9" * 3000},
    {"Accept": b"\xff", "X-Forwarded-Method": b"GET"},
]


@pytest.mark.parametrize("headers", ODD_HEADERS, ids=[str(i) for i in range(len(ODD_HEADERS))])
def test_odd_original_requests_never_answer_500(
    server: AppServer, clients: Clients, headers: dict[str, bytes]
) -> None:
    anonymous = clients.new()
    for redirect in ("", "?redirect=1"):
        r = anonymous.get(
            f"{API}/forward-auth{redirect}", headers=[(k.encode(), v) for k, v in headers.items()]
        )
        assert r.status_code in (200, 302, 401, 403), (r.status_code, r.text)
        assert "set-cookie" not in r.headers
        location = r.headers.get("location", "")
        assert location.isascii() and all(32 < ord(c) < 127 for c in location), location
        if location:
            assert location.startswith(f"{server.url}/")
