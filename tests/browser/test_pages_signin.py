"""Sign up, sign in, sign out, `?next=`, CSRF and the password-manager attributes, in Chromium."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.support import PASSWORD
from tests.support.pages import PHONE, check_a11y, screenshot, sign_in, sign_out, sign_up, username
from tests.support.server import Server

pytestmark = pytest.mark.browser
STATIC = Path(__file__).resolve().parents[2] / "src" / "twostep" / "web" / "static"


def test_home_explains_twostep_and_links_to_sign_up_and_sign_in(page: Any, web_server: Server) -> None:
    page.goto(web_server.url + "/")
    body = page.locator("main").inner_text()
    assert "Passkeys resist phishing" in body
    assert "do not" in body  # codes from an app do not resist phishing (SEC-61)
    assert page.locator("html").get_attribute("lang") == "en"
    check_a11y(page, label="home")
    page.get_by_role("link", name="Create an account").click()
    page.wait_for_url(re.compile(r"/signup$"))
    check_a11y(page, label="sign up")


def test_sign_up_says_why_a_password_is_refused_then_signs_in(page: Any, web_server: Server) -> None:
    name = username("alice")
    page.goto(web_server.url + "/signup")
    assert page.locator("#f-password").get_attribute("autocomplete") == "new-password"
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password", exact=True).fill("short")
    page.get_by_role("button", name="Create account").click()
    error = page.locator("#f-password-error")
    assert error.get_attribute("role") == "alert"
    assert "15" in error.inner_text()
    assert "f-password-error" in (page.locator("#f-password").get_attribute("aria-describedby") or "")
    assert page.locator("#f-username").input_value() == name  # what was typed is kept
    check_a11y(page, label="sign up with an error")

    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("E-mail address (optional)").fill("alice@example.com")
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(re.compile(r"/settings/two-step"))
    assert "Off" in page.locator(".status-card").inner_text()
    check_a11y(page, label="two-step, off")

    sign_up_again = page.context.new_page()
    sign_out(page)
    assert "You are signed out" in page.locator("main").inner_text()
    sign_up_again.close()
    sign_in(page, web_server.url, name)
    page.wait_for_url(re.compile(r"/settings/two-step$"))
    assert name in page.locator(".who").inner_text()


def test_wrong_password_is_announced(page: Any, web_server: Server) -> None:
    name = username("bob")
    sign_up(page, web_server.url, name)
    sign_out(page)
    sign_in(page, web_server.url, name, password="not the password at all")
    error = page.locator("#f-password-error")
    assert error.get_attribute("role") == "alert"
    assert "not correct" in error.inner_text()
    assert page.locator("#f-password").get_attribute("aria-invalid") == "true"
    check_a11y(page, label="sign in with an error")


def test_sign_in_fields_are_ready_for_password_managers(page: Any, web_server: Server) -> None:
    """SEC-14: type=password, autocomplete, paste allowed, a show-password toggle."""
    page.goto(web_server.url + "/login")
    html = page.content()
    user = page.locator("input[name=username]")
    password = page.locator("input[name=password]")
    assert (
        user.get_attribute("autocomplete") == "username webauthn"
    )  # passkeys in the autofill too (issue 17)
    assert password.get_attribute("type") == "password"
    assert password.get_attribute("autocomplete") == "current-password"
    assert "onpaste" not in html.lower() and "oncopy" not in html.lower()
    for script in STATIC.glob("*.js"):
        assert "paste" not in script.read_text()
    page.get_by_label("Password", exact=True).fill("secret words here")
    toggle = page.locator("button[data-reveal=f-password]")
    assert toggle.get_attribute("aria-label") == "Show password"
    toggle.click()
    assert password.get_attribute("type") == "text"
    assert toggle.get_attribute("aria-pressed") == "true"
    page.get_by_role("button", name="Hide password").click()
    assert password.get_attribute("type") == "password"
    check_a11y(page, label="sign in")
    page.set_viewport_size(PHONE)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], "the sign-in page scrolls sideways on a phone"
    page.reload()
    screenshot(page, "sign-in")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/x", r"/x$"),
        ("//evil.example", r"/settings/two-step$"),
        ("https://evil.example", r"/settings/two-step$"),
        ("/\\evil.example", r"/settings/two-step$"),
    ],
)
def test_next_is_honoured_only_for_same_origin_paths(
    page: Any, web_server: Server, target: str, expected: str
) -> None:
    name = username("nx")
    sign_up(page, web_server.url, name)
    sign_out(page)
    from urllib.parse import quote

    sign_in(page, web_server.url, name, next=quote(target, safe=""))
    page.wait_for_url(re.compile(r"localhost:\d+" + expected))
    assert page.url.startswith(web_server.url)


def test_a_signed_out_visit_returns_to_the_page_after_sign_in(page: Any, web_server: Server) -> None:
    name = username("back")
    sign_up(page, web_server.url, name)
    sign_out(page)
    page.goto(web_server.url + "/settings/security-log")
    page.wait_for_url(re.compile(r"/login\?next="))
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(re.compile(r"/settings/security-log$"))


def test_a_form_without_this_sessions_token_is_refused(page: Any, browser: Any, web_server: Server) -> None:
    """SEC-52: a missing or foreign synchronizer token → 403 and nothing changes."""
    name = username("csrf")
    sign_up(page, web_server.url, name)
    # No token at all.
    page.evaluate("document.querySelector('header form input[name=csrf]').remove()")
    page.get_by_role("button", name="Sign out", exact=True).click()
    assert page.get_by_role("heading", name="This form has expired").is_visible()
    check_a11y(page, label="403")
    response = page.request.post(web_server.url + "/logout", form={"csrf": ""})
    assert response.status == 403
    # A token from another session of the same account.
    other = browser.new_context()
    try:
        other_page = other.new_page()
        sign_in(other_page, web_server.url, name)
        foreign = other_page.locator("header form input[name=csrf]").input_value()
    finally:
        other.close()
    page.goto(web_server.url + "/settings/two-step")
    mine = page.locator("header form input[name=csrf]").input_value()
    assert foreign and foreign != mine
    response = page.request.post(web_server.url + "/logout", form={"csrf": foreign})
    assert response.status == 403
    page.goto(web_server.url + "/settings/two-step")
    assert page.url.endswith("/settings/two-step")  # still signed in
    response = page.request.post(web_server.url + "/logout", form={"csrf": mine}, max_redirects=0)
    assert response.status == 303
