"""Sessions, the security log and changing the password, through the pages."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support import PASSWORD
from tests.support.pages import (
    PHONE,
    check_a11y,
    screenshot,
    sign_in,
    sign_out,
    sign_up,
    username,
    verify_with_password,
)
from tests.support.server import Server

pytestmark = pytest.mark.browser
NEW_PASSWORD = "violet lantern orbit meadow"


def test_end_another_session_after_verifying_access(page: Any, browser: Any, web_server: Server) -> None:
    url = web_server.url
    name = username("sess")
    sign_up(page, url, name)
    other_context = browser.new_context(user_agent="OtherBrowser/1.0 (test)")
    try:
        other = other_context.new_page()
        sign_in(other, url, name)
        other.wait_for_url(re.compile(r"/settings/two-step$"))

        page.get_by_role("link", name="Sessions").click()
        page.wait_for_url(re.compile(r"/settings/sessions$"))
        assert page.locator(".session").count() == 2
        assert "This device" in page.locator(".session").first.inner_text()
        assert page.get_by_role("button", name="End session").count() == 0  # verify access first
        check_a11y(page, label="sessions")
        page.get_by_role("link", name="verify it's you").click()
        verify_with_password(page)
        page.wait_for_url(re.compile(r"/settings/sessions$"))
        row = page.locator(".session").filter(has_text="OtherBrowser/1.0")
        row.get_by_role("button", name="End session").click()
        page.wait_for_url(re.compile(r"done=ended"))
        assert "The session was ended." in page.locator("main").inner_text()
        assert page.locator(".session").count() == 1

        other.goto(url + "/settings/two-step")
        other.wait_for_url(re.compile(r"/login\?next="))  # signed out there
    finally:
        other_context.close()

    page.get_by_role("link", name="Security log").click()
    page.wait_for_url(re.compile(r"/settings/security-log$"))
    rows = page.locator("table.log tbody tr")
    labels = [t.split("\n")[0] for t in page.locator("table.log tbody td:nth-child(2)").all_inner_texts()]
    assert labels[0] == "Session ended"  # newest first
    assert "Access verified" in labels and "Account created" in labels and "Signed in" in labels
    assert labels[-1] == "Account created"
    assert rows.count() >= 4
    check_a11y(page, label="security log")
    screenshot(page, "security-log")


def test_change_password_asks_for_verified_access_and_the_current_password(
    page: Any, web_server: Server
) -> None:
    url = web_server.url
    name = username("pw")
    sign_up(page, url, name)
    page.get_by_role("link", name="Password").click()
    verify_with_password(page)
    page.wait_for_url(re.compile(r"/settings/password$"))
    assert page.locator("#f-current_password").get_attribute("autocomplete") == "current-password"
    assert page.locator("#f-new_password").get_attribute("autocomplete") == "new-password"
    check_a11y(page, label="change password")

    page.get_by_label("Current password").fill("wrong wrong wrong wrong")
    page.get_by_label("New password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    assert "not correct" in page.locator("#f-current_password-error[role=alert]").inner_text()
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password").fill("password")
    page.get_by_role("button", name="Change password").click()
    assert "can't be used" in page.locator("#f-new_password-error[role=alert]").inner_text()
    check_a11y(page, label="change password, errors")
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    page.wait_for_url(re.compile(r"/settings/password\?done=1"))
    assert "Your password was changed" in page.locator("main").inner_text()

    sign_out(page)
    sign_in(page, url, name, password=NEW_PASSWORD)
    page.wait_for_url(re.compile(r"/settings/two-step$"))


def test_pages_are_readable_on_a_phone(page: Any, web_server: Server) -> None:
    page.set_viewport_size(PHONE)
    name = username("phone")
    sign_up(page, url := web_server.url, name)
    for path in ("/settings/two-step", "/settings/sessions", "/settings/security-log", "/"):
        page.goto(url + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{path} scrolls sideways on a 375 px screen"
    sign_out(page)
    page.goto(url + "/signup")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
