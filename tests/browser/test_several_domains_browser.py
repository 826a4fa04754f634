"""Several domains in Debian Chromium (issue 13): a form-post sign-in on auth.example.test that ends on
app1.example.test, through a real nginx. Chromium applies the CSP `form-action` directive to the redirect that
follows a form post, so this walk fails unless the pages list the other subdomains there; an HTTP client would
not notice.

Chromium is started here with `--host-resolver-rules="MAP *.example.test 127.0.0.1"` and a self-signed
certificate accepted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.support import STRONG_PASSWORD, unique_username
from tests.support.api import begin_totp, confirm_totp, expect, login, signup, verify_password
from tests.support.browser import LAUNCH_ARGS, chromium_path
from tests.support.proxies import Stack, browser, protected_stack
from tests.support.totp import totp_code

pytestmark = pytest.mark.browser

ACCESS = """
cookie_domain = "example.test"
trusted_proxies = "127.0.0.1"

[access]
default_policy = "deny"

[[access.rules]]
domain = ["*.example.test"]
policy = "one_factor"
"""


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with protected_stack("nginx", tmp_path, ACCESS) as running:
        yield running


@pytest.fixture
def chromium(browser: Any) -> Iterator[Any]:
    """A second Chromium from the session's Playwright (tests/browser/conftest.py), with the host mapping."""
    path = chromium_path()
    assert path is not None  # the browser fixture skipped (or failed under CI) otherwise
    args = [*LAUNCH_ARGS, "--host-resolver-rules=MAP *.example.test 127.0.0.1", "--ignore-certificate-errors"]
    b = browser.browser_type.launch(executable_path=path, args=args, headless=True)
    yield b
    b.close()


def account_with_app(stack: Stack) -> tuple[str, str]:
    with browser() as client:
        client.base_url = httpx.URL(stack.auth)
        username = signup(client, unique_username("c"))
        assert login(client, username) == {"status": "signed_in"}
        assert verify_password(client)["status"] == "verified"
        enrollment = begin_totp(client)
        code = totp_code(enrollment.secret, time.time())
        expect(confirm_totp(client, enrollment.enrollment_id, name="Phone", code=code), 201)
    return username, enrollment.secret


def test_a_form_post_sign_in_on_auth_ends_on_the_application_subdomain(stack: Stack, chromium: Any) -> None:
    username, secret = account_with_app(stack)
    original = stack.url("app1", "/reports?from=2024&to=2025&tag=a%26b")
    context = chromium.new_context(ignore_https_errors=True)
    context.set_default_timeout(15_000)
    blocked: list[str] = []
    page = context.new_page()
    page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    try:
        page.goto(original)
        assert page.url == f"{stack.auth}/login?next={quote(original, safe='')}"
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password", exact=True).fill(STRONG_PASSWORD)
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.wait_for_url(f"{stack.auth}/login/second-step*")
        page.get_by_label("Six-digit code from your app").fill(totp_code(secret, time.time() + 30))
        page.get_by_role("button", name="Continue", exact=True).click()
        page.wait_for_url(original)
        seen = json.loads(page.locator("body").inner_text())
        assert seen["path"] == "/reports?from=2024&to=2025&tag=a%26b"
        assert seen["headers"]["remote-user"] == username
        assert blocked == []
        # The cookie is the cookie domain's: app2 is open at once, without signing in again.
        page.goto(stack.url("app2", "/x?y=1&z=2"))
        assert json.loads(page.locator("body").inner_text())["headers"]["remote-user"] == username
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["__Secure-twostep_session"]["domain"] in (".example.test", "example.test")
    finally:
        context.close()
