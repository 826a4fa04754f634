"""Passkeys through the pages with the CDP virtual authenticator: add, second step, passwordless, verify."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support.browser import VirtualAuthenticator
from tests.support.pages import (
    TotpClock,
    check_a11y,
    read_codes,
    read_key,
    screenshot,
    sign_in,
    sign_out,
    sign_up,
    username,
    verify_with_password,
)
from tests.support.server import Server

pytestmark = pytest.mark.browser

SYNCED = {"defaultBackupEligibility": True, "defaultBackupState": True}

# Holds the browser's passkey dialog open for a moment, so that the page's feedback can be seen.
SLOW_DIALOG = """
(() => {
  const get = navigator.credentials.get.bind(navigator.credentials);
  navigator.credentials.get = (options) =>
    new Promise((resolve) => setTimeout(resolve, 1500)).then(() => get(options));
})();
"""


def add_passkey(page: Any, url: str, name: str = "") -> None:
    page.goto(f"{url}/settings/two-step/passkey")
    if name:
        page.get_by_label("Name (optional)").fill(name)
    page.get_by_role("button", name="Use passkey").click()


def test_add_a_passkey_then_sign_in_with_it_and_without_a_password(page: Any, web_server: Server) -> None:
    url = web_server.url
    authenticator = VirtualAuthenticator.attach(page, SYNCED)
    name = username("pk")
    sign_up(page, url, name)
    page.get_by_role("link", name="Add passkey").click()
    verify_with_password(page)
    page.wait_for_url(re.compile(r"/settings/two-step/passkey$"))
    check_a11y(page, label="add passkey")
    page.get_by_label("Name (optional)").fill("Laptop")
    page.get_by_role("button", name="Use passkey").click()
    page.wait_for_selector("#recovery-codes")
    assert len(read_codes(page)) == 10  # the first factor turned two-step verification on
    assert len(authenticator.credentials()) == 1
    page.get_by_role("link", name="I have saved my codes").click()
    factor = page.locator(".factor").filter(has_text="Laptop")
    assert "Passkey" in factor.inner_text()
    assert factor.locator(".badge-synced").inner_text() == "Synced"

    check_a11y(page, label="two-step with a passkey")

    # The same authenticator again: the browser refuses (excludeCredentials) and the page says why.
    add_passkey(page, url)
    alert = page.locator(".passkey-error[role=alert]")
    alert.wait_for()
    assert "already registered" in alert.inner_text()
    page.goto(url + "/settings/two-step")
    screenshot(page, "two-step-settings")

    # Second step with a passkey: no code field on an account without an app.
    sign_out(page)
    sign_in(page, url, name, next="/settings/security-log")
    page.wait_for_url(re.compile(r"/login/second-step"))
    assert page.locator("input[name=code]").count() == 0
    check_a11y(page, label="second step, passkey")
    page.get_by_role("button", name="Use a passkey").click()
    page.wait_for_url(re.compile(r"/settings/security-log$"))

    # Passwordless: "Sign in with a passkey" on the sign-in page.
    sign_out(page)
    page.get_by_role("button", name="Sign in with a passkey").click()
    page.wait_for_url(re.compile(r"/settings/two-step$"))
    assert name in page.locator(".who").inner_text()

    # Verify access with the passkey alone, returning to the action.
    page.get_by_role("link", name="Add authentication app").click()
    page.wait_for_url(re.compile(r"/verify-access\?"))
    page.get_by_role("button", name="Use a passkey").click()
    page.wait_for_url(re.compile(r"/settings/two-step/app$"))
    page.get_by_label("Name").fill("Phone")
    page.get_by_role("button", name="Continue").click()
    key = read_key(page)
    page.get_by_label("Six-digit code").fill(TotpClock(web_server).code(key))
    page.get_by_role("button", name="Turn on").click()
    page.wait_for_url(re.compile(r"done=app_added"))
    web_server.set_clock(0)
    assert page.locator(".factor").count() == 2
    check_a11y(page, label="two-step with a passkey and an app")
    screenshot(page, "two-step-settings")
    screenshot(page, "two-step-settings-phone", phone=True)


def test_feedback_while_the_dialog_is_open_and_a_clear_message_on_cancel(
    page: Any, web_server: Server
) -> None:
    url = web_server.url
    authenticator = VirtualAuthenticator.attach(page)
    name = username("cancel")
    sign_up(page, url, name)
    page.goto(f"{url}/settings/two-step/passkey")
    verify_with_password(page)
    page.get_by_role("button", name="Use passkey").click()
    page.wait_for_selector("#recovery-codes")
    sign_out(page)

    page.add_init_script(SLOW_DIALOG)
    page.reload()
    page.get_by_role("button", name="Sign in with a passkey").click()
    status = page.locator(".passkey-status")
    status.filter(has_text="Waiting for your passkey").wait_for()
    assert page.get_by_role("button", name="Sign in with a passkey").is_disabled()
    page.wait_for_url(re.compile(r"/settings/two-step$"))
    sign_out(page)

    # The user cancels the dialog (here: user verification refused) → NotAllowedError, said in words.
    authenticator.set_user_verified(False)
    page.get_by_role("button", name="Sign in with a passkey").click()
    alert = page.locator(".passkey-error[role=alert]")
    alert.wait_for()
    assert "closed or timed out" in alert.inner_text()
    assert page.get_by_role("button", name="Sign in with a passkey").is_enabled()
    check_a11y(page, label="passkey cancelled")
    assert page.url.rstrip("/").endswith("/login?signed_out=1")
