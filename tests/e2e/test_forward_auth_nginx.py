"""Forward authentication through a real Debian nginx (`auth_request`) protecting a small application.

The nginx configuration is the one docs/deployment.md shows (there with TLS): twostep's API and sign-in pages
on the same origin as the application, `/api/v1/forward-auth` as the sub-request, `Remote-User` handed on,
401 turned into a redirect to `/login?next=...`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support import STRONG_PASSWORD, require_or_skip, unique_username
from tests.support.nginx import EchoUpstream, Nginx, find_nginx, forward_auth_config
from tests.support.server import Server, free_port

pytestmark = pytest.mark.e2e

# The browser's address as nginx sees it: not the proxy's (127.0.0.1), so that X-Forwarded-For shows.
BROWSER_ADDRESS = "127.0.0.2"


@dataclass
class Stack:
    nginx: Nginx
    twostep: Server
    app: EchoUpstream

    def browser(self) -> httpx.Client:
        """A cookie jar that speaks only to nginx, from BROWSER_ADDRESS, never following redirects."""
        return httpx.Client(
            base_url=self.nginx.origin,
            transport=httpx.HTTPTransport(local_address=BROWSER_ADDRESS),
            follow_redirects=False,
            timeout=30,
        )


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    binary = find_nginx()
    if binary is None:
        require_or_skip("nginx (Debian package nginx-light)")
        raise AssertionError("unreachable")
    nginx_port = free_port()
    app = EchoUpstream().start()
    twostep = Server(
        tmp_path / "twostep",
        env={
            "TWOSTEP_ORIGIN": f"http://localhost:{nginx_port}",
            "TWOSTEP_TRUSTED_PROXIES": "127.0.0.1",
        },
    )
    twostep.start()
    config = forward_auth_config(
        prefix=tmp_path / "nginx", port=nginx_port, twostep_port=twostep.port, app_port=app.port
    )
    nginx = Nginx(binary, tmp_path / "nginx", config, nginx_port)
    try:
        nginx.start()
        yield Stack(nginx, twostep, app)
    finally:
        nginx.stop()
        twostep.stop()
        app.stop()


def totp_code(secret: str, offset_seconds: float = 0) -> str:
    """The code an authenticator app shows, from oathtool (independent of twostep's TOTP code)."""
    at = datetime.now(UTC) + timedelta(seconds=offset_seconds)
    out = subprocess.run(
        ["oathtool", "--totp", "-b", "--now", at.strftime("%Y-%m-%d %H:%M:%S UTC"), secret],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def sign_up_with_totp(client: httpx.Client, username: str) -> str:
    """Sign up, verify access, enrol an authenticator app, sign out; returns the TOTP secret."""
    assert (
        client.post("/api/v1/accounts", json={"username": username, "password": STRONG_PASSWORD}).status_code
        == 201
    )
    r = client.post("/api/v1/login", json={"username": username, "password": STRONG_PASSWORD})
    assert r.json() == {"status": "signed_in"}
    r = client.post("/api/v1/verify-access", json={"password": STRONG_PASSWORD})
    assert r.json()["status"] == "verified"
    enrolment = client.post("/api/v1/factors/totp", json={}).json()
    r = client.post(
        f"/api/v1/factors/totp/{enrolment['enrollment_id']}/confirm",
        json={"name": "phone", "code": totp_code(enrolment["secret"])},
    )
    assert r.status_code == 201, r.text
    assert client.post("/api/v1/logout", json={}).status_code == 204
    return str(enrolment["secret"])


def assert_sent_to_sign_in(response: httpx.Response, path: str) -> None:
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    assert location.path == "/login"
    assert location.query == f"next={path}"


def test_signed_out_is_redirected_to_sign_in_with_next(stack: Stack) -> None:
    with stack.browser() as browser:
        assert_sent_to_sign_in(browser.get("/reports/2024?page=3"), "/reports/2024?page=3")
        # A Remote-User header of the browser's own does not get it in.
        r = browser.get("/reports", headers={"Remote-User": "admin"})
        assert_sent_to_sign_in(r, "/reports")


def test_sign_in_with_password_and_totp_reaches_the_application_as_remote_user(stack: Stack) -> None:
    username = unique_username("nginx")
    with stack.browser() as browser:
        secret = sign_up_with_totp(browser, username)

        # Password accepted, second factor owed: still refused.
        r = browser.post("/api/v1/login", json={"username": username, "password": STRONG_PASSWORD})
        assert r.json()["status"] == "second_factor_required"
        assert_sent_to_sign_in(browser.get("/dashboard"), "/dashboard")

        # A later time step than the enrolment's code (replay protection), without waiting for it.
        stack.twostep.set_clock(60)
        r = browser.post("/api/v1/login/totp", json={"code": totp_code(secret, 60)})
        assert r.json() == {"status": "signed_in"}, r.text

        r = browser.get("/dashboard?tab=1", headers={"Remote-User": "admin"})
        assert r.status_code == 200, r.text
        seen = r.json()
        assert seen["path"] == "/dashboard?tab=1"
        assert seen["headers"]["remote-user"] == username
        # A form post reaches the application with its body (the sub-request carries none).
        r = browser.post("/dashboard/save", data={"title": "q3"})
        assert r.status_code == 200, r.text
        assert r.json()["method"] == "POST"
        assert r.json()["body"] == "title=q3"
        assert r.json()["headers"]["remote-user"] == username

        # nginx passed the browser's address on, and twostep believed it from its trusted proxy.
        events = browser.get("/api/v1/security-events").json()["events"]
        assert events[0]["type"] == "signed_in"
        assert events[0]["ip"] == BROWSER_ADDRESS

        cookie = dict(browser.cookies)
        assert browser.post("/api/v1/logout", json={}).status_code == 204
        assert_sent_to_sign_in(browser.get("/dashboard"), "/dashboard")
        assert_sent_to_sign_in(browser.post("/dashboard/save", data={"title": "q4"}), "/dashboard/save")

    # The session is gone server-side: the old cookie, replayed, is refused too.
    with stack.browser() as replay:
        replay.cookies.update(cookie)
        assert_sent_to_sign_in(replay.get("/dashboard"), "/dashboard")


def test_account_without_second_factor_is_let_through_after_password(stack: Stack) -> None:
    username = unique_username("nginxpw")
    with stack.browser() as browser:
        assert (
            browser.post(
                "/api/v1/accounts", json={"username": username, "password": STRONG_PASSWORD}
            ).status_code
            == 201
        )
        assert_sent_to_sign_in(browser.get("/"), "/")
        r = browser.post("/api/v1/login", json={"username": username, "password": STRONG_PASSWORD})
        assert r.json() == {"status": "signed_in"}
        r = browser.get("/")
        assert r.status_code == 200
        assert r.json()["headers"]["remote-user"] == username
