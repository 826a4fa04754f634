"""Protecting applications through real proxies (issue 13): Debian's nginx (`auth_request`) and Caddy
(`forward_auth`), each started here with the configuration docs/deployment.md shows (tests/e2e/proxies), in
front of twostep and two applications on app1.example.test and app2.example.test under one cookie domain,
on SQLite and PostgreSQL.

A browser's walk: anonymous → the login page → password and a code from `oathtool` → back to the exact
original URL, query with `&` intact → the application sees Remote-User and Remote-Groups; a user outside the
rule's group gets 403; a user without two-step verification on a two_factor application is led to set it up
and then reaches it.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

import httpx
import pytest

from tests.support import STRONG_PASSWORD, require_or_skip, unique_username
from tests.support.api import begin_totp, confirm_totp, expect, login, signup, verify_password
from tests.support.nginx import EchoUpstream, Nginx, find_nginx
from tests.support.proxies import (
    Caddy,
    Ports,
    Stack,
    browser,
    find_caddy,
    make_certificate,
    nginx_main,
    protected_stack,
    render,
)
from tests.support.server import Server, free_port
from tests.support.totp import totp_code

pytestmark = pytest.mark.e2e

TEAM = "team1"
ACCESS = f"""
cookie_domain = "example.test"
trusted_proxies = "127.0.0.1"

[access]
default_policy = "deny"

[[access.rules]]
domain = ["app1.example.test"]
groups = ["{TEAM}"]
policy = "one_factor"

[[access.rules]]
domain = ["app1.example.test"]
policy = "deny"

[[access.rules]]
domain = ["app2.example.test"]
policy = "two_factor"
"""
HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture(params=["nginx", "caddy"])
def proxy_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def stack(proxy_name: str, database: str | None, tmp_path: Path) -> Iterator[Stack]:
    with protected_stack(proxy_name, tmp_path, ACCESS, database_url=database) as running:
        yield running


def page_get(client: httpx.Client, url: str) -> httpx.Response:
    return client.get(url, headers={"Accept": HTML})


def form_fields(page: httpx.Response, action: str) -> dict[str, str]:
    """The hidden fields of the form posting to ``action``."""
    form = re.search(rf'<form method="post" action="{re.escape(action)}"[^>]*>(.*?)</form>', page.text, re.S)
    assert form is not None, (action, page.text[:3000])
    return {
        m.group(1): html.unescape(m.group(2))
        for m in re.finditer(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(1))
    }


def post_form(client: httpx.Client, page: httpx.Response, action: str, **fields: str) -> httpx.Response:
    data = {**form_fields(page, action), **fields}
    origin = f"{page.url.scheme}://{page.url.netloc.decode()}"
    return client.post(urljoin(str(page.url), action), data=data, headers={"Origin": origin, "Accept": HTML})


def follow(client: httpx.Client, response: httpx.Response) -> httpx.Response:
    assert response.status_code in (302, 303), (response.status_code, response.text[:1000])
    return page_get(client, urljoin(str(response.url), response.headers["location"]))


def with_totp(stack: Stack, *, group: str | None = None) -> tuple[str, str]:
    """An account with an authenticator app (through the proxy, the API), in ``group``; not signed in."""
    with browser() as client:
        client.base_url = httpx.URL(stack.auth)
        username = signup(client, unique_username("p"))
        assert login(client, username) == {"status": "signed_in"}
        assert verify_password(client)["status"] == "verified"
        enrollment = begin_totp(client)
        confirmed = confirm_totp(
            client, enrollment.enrollment_id, name="Phone", code=totp_code(enrollment.secret, time.time())
        )
        expect(confirmed, 201)
    if group:
        stack.add_to_group(username, group)
    return username, enrollment.secret


def sign_in_from(
    client: httpx.Client, stack: Stack, original: str, username: str, secret: str | None
) -> httpx.Response:
    """Open ``original`` signed out and sign in on the login page it leads to; the last redirect's answer."""
    r = page_get(client, original)
    assert r.status_code == 302, (r.status_code, r.text[:500])
    assert r.headers["location"] == f"{stack.auth}/login?next={quote(original, safe='')}"
    page = follow(client, r)
    assert page.status_code == 200 and form_fields(page, "/login")["next"] == original
    r = post_form(client, page, "/login", username=username, password=STRONG_PASSWORD)
    if secret is None:
        return r
    page = follow(client, r)
    # The code of the next time step (accepted: one step of drift either way), so that the code of the
    # enrolment, a moment ago, is never replayed.
    code = totp_code(secret, time.time() + 30)
    r = post_form(client, page, "/login/second-step", code=code)
    return r


def test_sign_in_returns_to_the_exact_url_and_the_application_sees_remote_user_and_groups(
    stack: Stack,
) -> None:
    username, secret = with_totp(stack, group=TEAM)
    stack.add_to_group(username, "staff")
    original = stack.url("app1", "/reports/q?from=2024-01-01&to=2024-12-31&tag=a%20b&x=%C3%A9")
    with browser() as client:
        r = sign_in_from(client, stack, original, username, secret)
        assert r.status_code == 303 and r.headers["location"] == original
        # A Remote-User sent by the browser itself never reaches the application.
        app = client.get(original, headers={"Remote-User": "admin", "Remote-Groups": "admins"})
        assert app.status_code == 200, app.text[:500]
        seen = app.json()
        assert seen["path"] == "/reports/q?from=2024-01-01&to=2024-12-31&tag=a%20b&x=%C3%A9"
        assert seen["headers"]["remote-user"] == username
        assert seen["headers"]["remote-groups"] == f"staff,{TEAM}"
        assert seen["headers"].get("remote-email", "") == ""  # not verified: empty or absent
        # The same session reaches the other application (one cookie for example.test): two_factor, with TOTP.
        other = client.get(stack.url("app2", "/?a=1&b=2"))
        assert other.status_code == 200 and other.json()["headers"]["remote-user"] == username


def test_a_user_outside_the_rules_group_gets_403(stack: Stack) -> None:
    username, secret = with_totp(stack, group="staff")
    original = stack.url("app1", "/")
    with browser() as client:
        r = sign_in_from(client, stack, original, username, secret)
        assert r.status_code == 303 and r.headers["location"] == original
        app = page_get(client, original)
        assert app.status_code == 403
        assert "remote-user" not in app.text


def test_without_two_step_a_two_factor_application_leads_to_setting_it_up_and_then_opens(
    stack: Stack,
) -> None:
    original = stack.url("app2", "/board?view=week&team=a%26b")
    with browser() as client:
        client.base_url = httpx.URL(stack.auth)
        username = signup(client, unique_username("n"))
        client.cookies.clear()
        r = sign_in_from(client, stack, original, username, None)
        assert r.status_code == 303 and r.headers["location"] == original
        r = page_get(client, original)
        required = f"{stack.auth}/two-step-required?next={quote(original, safe='')}"
        assert r.status_code == 302 and r.headers["location"] == required
        page = follow(client, r)
        assert "This application needs two-step verification" in page.text
        add = re.search(r'id="add-app" href="([^"]+)"', page.text)
        assert add is not None
        r = page_get(client, urljoin(str(page.url), html.unescape(add.group(1))))
        verify = follow(client, r)  # verify access first
        r = post_form(client, verify, "/verify-access", password=STRONG_PASSWORD)
        name_page = follow(client, r)
        qr = post_form(client, name_page, "/settings/two-step/app", name="Phone")
        assert qr.status_code == 200, qr.text[:1000]
        key = re.search(r'id="totp-key"[^>]*>(.*?)</p>', qr.text, re.S)
        assert key is not None
        secret = re.sub(r"<[^>]+>|\s", "", key.group(1))
        done = post_form(client, qr, "/settings/two-step/app/confirm", code=totp_code(secret, time.time()))
        assert done.status_code == 200
        back = re.search(r'id="codes-saved" href="([^"]+)"', done.text)
        assert back is not None and html.unescape(back.group(1)) == original
        app = page_get(client, original)
        assert app.status_code == 200, app.text[:500]
        assert app.json()["headers"]["remote-user"] == username
        assert app.json()["path"] == "/board?view=week&team=a%26b"


# --- one domain: twostep's paths and the application on one origin, no rules, no cookie_domain -------------


@pytest.mark.parametrize("proxy_name", ["nginx", "caddy"])
def test_one_domain_configuration_signs_in_and_returns_to_the_exact_url(
    proxy_name: str, tmp_path: Path
) -> None:
    binary = find_nginx() if proxy_name == "nginx" else find_caddy()
    if binary is None:
        require_or_skip(proxy_name)
        raise AssertionError("unreachable")
    app = EchoUpstream().start()
    ports = Ports(proxy=free_port(), twostep=free_port(), app1=app.port, app2=free_port())
    cert, key = make_certificate(tmp_path / "tls")
    twostep = Server(
        tmp_path / "twostep",
        port=ports.twostep,
        test_clock=False,
        env={"TWOSTEP_ORIGIN": f"https://example.test:{ports.proxy}", "TWOSTEP_TRUSTED_PROXIES": "127.0.0.1"},
    )
    proxy: Any
    if proxy_name == "nginx":
        servers = render("nginx-one-domain.conf", ports, cert, key)
        proxy = Nginx(binary, tmp_path / "nginx", nginx_main(tmp_path / "nginx", servers), ports.proxy)
    else:
        proxy = Caddy(
            binary, tmp_path / "caddy", render("Caddyfile-one-domain", ports, cert, key), ports.proxy
        )
    origin = f"https://example.test:{ports.proxy}"
    try:
        twostep.start()
        proxy.start()
        with browser() as client:
            client.base_url = httpx.URL(origin)
            username = signup(client, unique_username("o"))
            client.cookies.clear()
            original = f"{origin}/app/list?a=1&b=2&c=%26"
            r = page_get(client, original)
            assert r.status_code == 302
            assert r.headers["location"] == f"{origin}/login?next={quote(original, safe='')}"
            page = follow(client, r)
            r = post_form(client, page, "/login", username=username, password=STRONG_PASSWORD)
            assert r.status_code == 303 and r.headers["location"] == original
            seen = client.get(original, headers={"Remote-User": "admin"})
            assert seen.status_code == 200
            assert seen.json()["path"] == "/app/list?a=1&b=2&c=%26"
            assert seen.json()["headers"]["remote-user"] == username
    finally:
        proxy.stop()
        twostep.stop()
        app.stop()
