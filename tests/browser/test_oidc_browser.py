"""An application signs its user in through twostep, in Chromium: the browser starts at the application's
authorization request, signs in on twostep's pages with a password and an authenticator-app code (from
`oathtool`), and lands on the application's callback, served on another port (another origin)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support import PASSWORD
from tests.support.browser import VirtualAuthenticator
from tests.support.oidc import RelyingParty
from tests.support.pages import (
    TotpClock,
    add_app,
    check_a11y,
    sign_out,
    sign_up,
    username,
    verify_with_password,
)
from tests.support.server import Server

pytestmark = pytest.mark.browser


class _Callback(BaseHTTPRequestHandler):
    hits: list[str] = []  # noqa: RUF012 (the test reads what the server got)

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        body = b"<!doctype html><title>RP</title><h1>The application got the answer</h1>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def rp_callback() -> Iterator[str]:
    """The application: a tiny HTTP server on 127.0.0.1 (another origin than twostep's localhost)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Callback)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/callback"
    httpd.shutdown()


@pytest.fixture(scope="module")
def clock(web_server: Server) -> Iterator[TotpClock]:
    c = TotpClock(web_server)
    yield c
    web_server.set_clock(0)


def _add_client(server: Server, redirect_uri: str) -> tuple[str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "twostep", "client", "add", "Browser app", "--redirect-uri", redirect_uri],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    client_id = re.search(r"client_id:\s+(\S+)", done.stdout)
    secret = re.search(r"client_secret:\s+(\S+)", done.stdout)
    assert client_id and secret
    return client_id.group(1), secret.group(1)


def test_sign_in_to_an_application_with_password_and_totp(
    page: Any, web_server: Server, clock: TotpClock, rp_callback: str
) -> None:
    url = web_server.url
    name = username("oidc")
    sign_up(page, url, name)
    page.goto(f"{url}/settings/two-step/app")
    verify_with_password(page)
    key = add_app(page, url, clock)
    page.goto(f"{url}/settings/two-step")
    sign_out(page)

    client_id, secret = _add_client(web_server, rp_callback)
    rp = RelyingParty(web_server, client_id, secret, redirect_uri=rp_callback)
    page.goto(rp.authorize_url(acr_values="mfa"))
    page.wait_for_url(re.compile(r"/login\?next=%2Foidc%2Fcontinue"))
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(re.compile(r"/login/second-step"))
    page.get_by_label("Six-digit code").fill(clock.code(key))
    page.get_by_role("button", name="Continue").click()
    # The form POST ends on /oidc/continue, whose page moves the browser on to the application.
    page.wait_for_url(re.compile(re.escape(rp_callback) + r"\?"))
    assert "The application got the answer" in page.content()
    token = rp.tokens(rp.code_from(page.url))
    claims = rp.verify_id_token(token["id_token"])
    assert claims["preferred_username"] == name
    assert claims["amr"] == ["pwd", "otp", "mfa"] and claims["acr"] == "mfa"

    # Signed in now: the next authorization goes straight through (a redirect from a GET).
    page.goto(rp.authorize_url())
    page.wait_for_url(re.compile(re.escape(rp_callback) + r"\?"))
    rp.tokens(rp.code_from(page.url))


def test_logout_asks_then_signs_out(page: Any, web_server: Server) -> None:
    url = web_server.url
    sign_up(page, url, username("oidcl"))
    page.goto(f"{url}/oidc/logout")
    page.wait_for_selector("#oidc-sign-out")
    check_a11y(page, label="oidc logout")
    page.locator("#oidc-sign-out").click()
    page.wait_for_url(re.compile(r"/login\?signed_out=1"))
    page.goto(f"{url}/settings/two-step")
    page.wait_for_url(re.compile(r"/login"))


def test_sign_in_to_an_application_with_a_passkey(page: Any, web_server: Server, rp_callback: str) -> None:
    """acr_values=phr: a passkey as second step, then a passwordless passkey sign-in; the ID token says
    which passkey (synced: swk) and that the user was verified."""
    url = web_server.url
    VirtualAuthenticator.attach(page, {"defaultBackupEligibility": True, "defaultBackupState": True})
    name = username("oidcpk")
    sign_up(page, url, name)
    page.goto(f"{url}/settings/two-step/passkey")
    verify_with_password(page)
    page.wait_for_url(re.compile(r"/settings/two-step/passkey$"))
    page.get_by_role("button", name="Use passkey").click()
    page.wait_for_selector("#recovery-codes")
    page.goto(f"{url}/settings/two-step")
    sign_out(page)

    client_id, secret = _add_client(web_server, rp_callback)
    rp = RelyingParty(web_server, client_id, secret, redirect_uri=rp_callback)
    page.goto(rp.authorize_url(acr_values="phr"))
    page.wait_for_url(re.compile(r"/login\?next=%2Foidc%2Fcontinue"))
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(re.compile(r"/login/second-step"))
    page.get_by_role("button", name="Use a passkey").click()
    page.wait_for_url(re.compile(re.escape(rp_callback) + r"\?"))
    claims = rp.verify_id_token(rp.tokens(rp.code_from(page.url))["id_token"])
    assert claims["acr"] == "phr"
    assert claims["amr"] == ["pwd", "swk", "user", "mfa"]

    page.goto(f"{url}/settings/two-step")
    sign_out(page)
    page.goto(rp.authorize_url())
    page.wait_for_url(re.compile(r"/login\?next=%2Foidc%2Fcontinue"))
    page.get_by_role("button", name="Sign in with a passkey").click()
    page.wait_for_url(re.compile(re.escape(rp_callback) + r"\?"))
    claims = rp.verify_id_token(rp.tokens(rp.code_from(page.url))["id_token"])
    assert claims["amr"] == ["swk", "user", "mfa"] and claims["acr"] == "phr"
