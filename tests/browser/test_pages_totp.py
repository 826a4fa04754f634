"""Authenticator apps and recovery codes through the pages, with codes computed by `oathtool`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import PASSWORD
from tests.support.pages import (
    TotpClock,
    add_app,
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


@pytest.fixture(scope="module")
def clock(web_server: Server) -> Iterator[TotpClock]:
    c = TotpClock(web_server)
    yield c
    web_server.set_clock(0)


def second_step(page: Any) -> None:
    page.wait_for_url(re.compile(r"/login/second-step"))


def test_add_an_app_save_codes_and_sign_in_with_a_code_and_a_recovery_code(
    page: Any, web_server: Server, clock: TotpClock, tmp_path: Path
) -> None:
    url = web_server.url
    name = username("app")
    sign_up(page, url, name)

    # Add authentication app: verify access (password only while 2FA is off), then back to the action.
    page.get_by_role("link", name="Add authentication app").click()
    page.wait_for_url(re.compile(r"/verify-access\?next=%2Fsettings%2Ftwo-step%2Fapp"))
    check_a11y(page, label="verify access")
    verify_with_password(page)
    page.wait_for_url(re.compile(r"/settings/two-step/app$"))
    check_a11y(page, label="name the app")
    page.get_by_label("Name").fill("Phone")
    page.get_by_role("button", name="Continue").click()

    # The QR code as an image and the key in groups of four.
    qr = page.locator("img.qr")
    assert (qr.get_attribute("src") or "").startswith("data:image/svg+xml;base64,")
    assert qr.evaluate("img => img.naturalWidth") > 0
    groups = page.locator("#totp-key .key-group").all_inner_texts()
    assert len(groups) == 8 and all(len(g) == 4 for g in groups)
    key = read_key(page)
    assert len(key) == 32
    code = page.locator("input[name=code]")
    assert code.get_attribute("autocomplete") == "one-time-code"
    assert code.get_attribute("inputmode") == "numeric"
    check_a11y(page, label="QR page")
    screenshot(page, "add-app-qr")

    # A code from a device whose clock is 3 minutes behind: the page says so, in words.
    code.fill(clock.code(key, skew=-180))
    page.get_by_role("button", name="Turn on").click()
    error = page.locator("#f-code-error")
    assert error.get_attribute("role") == "alert"
    assert "your device's clock seems about 3 minutes behind" in error.inner_text().lower()
    # The setup is still pending: the same QR code and key are shown again with the error.
    assert read_key(page) == key
    assert page.locator("img.qr").count() == 1
    check_a11y(page, label="wrong code")
    page.get_by_label("Six-digit code").fill(clock.code(key))
    page.get_by_role("button", name="Turn on").click()

    # The recovery codes, once, with download and print.
    page.wait_for_selector("#recovery-codes")
    codes = read_codes(page)
    assert len(codes) == 10 and len(set(codes)) == 10
    main = page.locator("main").inner_text()
    assert "Support cannot restore access" in main
    assert "Two-step verification is on" in main
    assert page.locator("link[rel=stylesheet][media=print]").count() == 1
    assert page.get_by_role("button", name="Print").is_visible()
    assert page.get_by_role("button", name="Copy").is_visible()
    with page.expect_download() as info:
        page.get_by_role("link", name="Download").click()
    download = info.value
    assert download.suggested_filename == "twostep-recovery-codes.txt"
    saved = tmp_path / "codes.txt"
    download.save_as(saved)
    text = saved.read_text()
    assert all(c in text for c in codes)
    check_a11y(page, label="recovery codes")
    screenshot(page, "recovery-codes")
    page.get_by_role("link", name="I have saved my codes").click()
    page.wait_for_url(re.compile(r"/settings/two-step$"))
    assert "On" in page.locator(".status-card").inner_text()
    assert "Phone" in page.locator(".factor-list").inner_text()
    assert "10 of 10" in page.locator("main").inner_text()

    # Sign out and in again: the second step asks for a code (no passkey on this account).
    sign_out(page)
    sign_in(page, url, name, next="/settings/sessions")
    second_step(page)
    assert page.get_by_role("link", name="Use a recovery code").is_visible()
    assert page.get_by_role("button", name="Use a passkey").count() == 0
    field = page.locator("input[name=code]")
    assert field.get_attribute("autocomplete") == "one-time-code"
    assert field.get_attribute("inputmode") == "numeric"
    check_a11y(page, label="second step")
    screenshot(page, "second-step")
    field.fill("000000")
    page.get_by_role("button", name="Continue").click()
    assert page.locator("#f-code-error[role=alert]").inner_text().startswith("That code is not right")
    page.get_by_label("Six-digit code from your app").fill(clock.code(key))
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(r"/settings/sessions$"))  # ?next= carried through the second step

    # A recovery code signs in and opens the two-step page with the banner.
    sign_out(page)
    sign_in(page, url, name)
    second_step(page)
    page.get_by_role("link", name="Use a recovery code").click()
    page.wait_for_url(re.compile(r"/login/recovery-code"))
    check_a11y(page, label="recovery code sign-in")
    page.get_by_label("Recovery code").fill(codes[0])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/settings/two-step$"))
    banner = page.locator(".banner")
    assert "You signed in with a recovery code" in banner.inner_text()
    assert "9 recovery codes remain" in banner.inner_text()
    for choice in ("Add an authentication app", "Make new recovery codes", "Turn off two-step verification"):
        assert banner.get_by_role("link", name=choice).is_visible()
    check_a11y(page, label="banner")

    # The banner's "make new codes" works at once: a recovery sign-in counts as verified access.
    banner.get_by_role("link", name="Make new recovery codes").click()
    page.wait_for_url(re.compile(r"/settings/two-step/recovery-codes$"))
    assert "Every old code stops working" in page.locator("main").inner_text()
    check_a11y(page, label="new codes confirmation")
    page.get_by_role("button", name="Make new codes").click()
    new_codes = read_codes(page)
    assert len(new_codes) == 10 and not set(new_codes) & set(codes)
    assert "Your old codes no longer work" in page.locator("main").inner_text()

    # A used code does not work twice, and the old set is gone.
    sign_out(page)
    sign_in(page, url, name)
    second_step(page)
    page.get_by_role("link", name="Use a recovery code").click()
    page.get_by_label("Recovery code").fill(codes[1])
    page.get_by_role("button", name="Sign in").click()
    assert "not right" in page.locator("#f-code-error[role=alert]").inner_text()
    page.get_by_label("Recovery code").fill(new_codes[0].lower().replace("-", " "))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/settings/two-step$"))
    assert "9 recovery codes remain" in page.locator(".banner").inner_text()


def test_verify_access_with_a_code_returns_to_the_action_then_rename_remove_and_turn_off(
    page: Any, web_server: Server, clock: TotpClock
) -> None:
    url = web_server.url
    name = username("manage")
    sign_up(page, url, name)
    page.get_by_role("link", name="Add authentication app").click()
    verify_with_password(page)
    key = add_app(page, url, clock, name="Phone")
    page.get_by_role("link", name="I have saved my codes").click()

    # A fresh sign-in has not verified access: adding a second app asks for the password and a code first.
    sign_out(page)
    sign_in(page, url, name)
    second_step(page)
    page.get_by_label("Six-digit code from your app").fill(clock.code(key))
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(r"/settings/two-step$"))
    check_a11y(page, label="two-step, on")
    page.get_by_role("link", name="Add authentication app").click()
    verify_with_password(page)
    page.wait_for_url(re.compile(r"/verify-access/second-step"))
    check_a11y(page, label="verify access, second step")
    assert page.get_by_role("link", name="Use a recovery code").is_visible()
    page.get_by_label("Six-digit code from your app").fill(clock.code(key))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(re.compile(r"/settings/two-step/app$"))  # back to the action
    page.get_by_label("Name").fill("Tablet")
    page.get_by_role("button", name="Continue").click()
    tablet_key = read_key(page)
    page.get_by_label("Six-digit code").fill(clock.code(tablet_key))
    page.get_by_role("button", name="Turn on").click()
    page.wait_for_url(re.compile(r"/settings/two-step\?done=app_added"))
    assert "The authentication app was added." in page.locator("main").inner_text()

    # Rename.
    page.get_by_role("link", name="Rename Phone").click()
    check_a11y(page, label="rename")
    page.get_by_label("New name").fill("Tablet")
    page.get_by_role("button", name="Save").click()
    assert "already have a second factor with that name" in page.locator("[role=alert]").inner_text()
    page.get_by_label("New name").fill("Old phone")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(re.compile(r"done=renamed"))
    assert "Old phone" in page.locator(".factor-list").inner_text()

    # Remove one of two: no warning; then the last one: the confirmation says 2FA goes off.
    page.get_by_role("link", name="Remove Tablet").click()
    page.wait_for_url(re.compile(r"/remove$"))
    assert "turns two-step verification off" not in page.locator("main").inner_text()
    check_a11y(page, label="remove")
    page.get_by_role("button", name="Remove").click()
    page.wait_for_url(re.compile(r"done=removed$"))
    assert page.get_by_role("button", name="Sign out my other sessions").is_visible()  # SEC-46
    page.get_by_role("link", name="Remove Old phone").click()
    assert "This turns two-step verification off." in page.locator("main").inner_text()
    page.get_by_role("button", name="Remove and turn off two-step verification").click()
    page.wait_for_url(re.compile(r"done=removed_last"))
    assert "Two-step verification is now off" in page.locator("main").inner_text()
    assert "Off" in page.locator(".status-card").inner_text()

    # Turn on again, then "Turn off two-step verification".
    add_app(page, url, clock, name="Phone")
    page.get_by_role("link", name="I have saved my codes").click()
    page.get_by_role("link", name="Turn off two-step verification").click()
    page.wait_for_url(re.compile(r"/settings/two-step/turn-off$"))
    check_a11y(page, label="turn off")
    page.get_by_role("button", name="Turn off two-step verification").click()
    page.wait_for_url(re.compile(r"done=turned_off"))
    assert "Off" in page.locator(".status-card").inner_text()
    sign_out(page)
    sign_in(page, url, name)
    page.wait_for_url(re.compile(r"/settings/two-step$"))  # password alone now


def test_too_many_wrong_codes_say_how_long_to_wait(page: Any, web_server: Server, clock: TotpClock) -> None:
    url = web_server.url
    name = username("slow")
    sign_up(page, url, name)
    page.get_by_role("link", name="Add authentication app").click()
    verify_with_password(page)
    add_app(page, url, clock)
    sign_out(page)
    sign_in(page, url, name, password=PASSWORD)
    second_step(page)
    message = ""
    for _ in range(8):
        page.get_by_label("Six-digit code from your app").fill("000000")
        page.get_by_role("button", name="Continue").click()
        message = page.locator("#f-code-error").inner_text()
        if "Too many attempts" in message:
            break
    assert re.search(r"wait (about )?\d+ (seconds|minutes?)", message), message
