"""The operators' part in Chromium: the "done when" walk (sign-up by invitation only; `twostep invite --group
admins`; the printed link makes an account in admins), an invitation's fixed fields, the locked-account page,
and the e-mail verification link followed from the outbox."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import PASSWORD
from tests.support.mail import read_outbox, wait_until
from tests.support.operators import invite_url, twostep
from tests.support.pages import check_a11y, sign_in, username
from tests.support.server import Server

pytestmark = pytest.mark.browser

CONTACT = "the help desk (help@example.com)"


@pytest.fixture(scope="module")
def invite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"TWOSTEP_SIGNUP": "invite", "TWOSTEP_OPERATOR_CONTACT": CONTACT}
    with Server(tmp_path_factory.mktemp("web-invite"), env=env) as srv:
        yield srv


def create_account(page: Any, url: str, name: str | None, password: str = PASSWORD) -> None:
    page.goto(url)
    if name is not None:
        page.get_by_label("Username").fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(re.compile(r"/settings/two-step"))


def test_done_when_an_invitation_link_creates_an_account_in_admins(page: Any, invite_server: Server) -> None:
    page.goto(invite_server.url + "/login")
    assert page.get_by_role("link", name="Create an account").count() == 0, "no sign-up offered"
    assert page.get_by_role("link", name="Sign up").count() == 0
    page.goto(invite_server.url + "/")
    assert page.get_by_role("link", name="Create an account").count() == 0
    page.goto(invite_server.url + "/signup")
    assert "needs an invitation" in page.locator("main").inner_text()
    assert CONTACT in page.locator("main").inner_text()
    check_a11y(page, label="sign-up needs an invitation")

    url = invite_url(invite_server, "--group", "admins")
    name = username("admin")
    create_account(page, url, name)
    assert "admins" in page.get_by_test_id("account-groups").inner_text()
    session = page.request.get(invite_server.url + "/api/v1/session").json()
    assert session["username"] == name and session["groups"] == ["admins"]
    check_a11y(page, label="account page with groups")

    # The link works once.
    other = page.context.browser.new_context()
    try:
        again = other.new_page()
        again.goto(url)
        assert "This invitation cannot be used" in again.locator("main").inner_text()
        assert again.locator("form[action='/signup']").count() == 0
    finally:
        other.close()


def test_an_invitations_username_and_address_are_filled_in_and_read_only(
    page: Any, invite_server: Server
) -> None:
    name = username("fixed")
    url = invite_url(invite_server, "--username", name, "--email", f"{name}@example.com")
    page.goto(url)
    assert page.locator("#f-username").input_value() == name
    assert page.locator("#f-username").get_attribute("readonly") is not None
    assert page.locator("#f-email").input_value() == f"{name}@example.com"
    assert page.locator("#f-email").get_attribute("readonly") is not None
    check_a11y(page, label="sign-up by invitation")
    create_account(page, url, None)
    assert f"{name}@example.com" in page.get_by_test_id("account-email").inner_text()
    assert "Not verified" in page.get_by_test_id("account-email").inner_text()


def test_the_locked_account_page_says_whom_to_ask(page: Any, invite_server: Server) -> None:
    name = username("locked")
    create_account(page, invite_url(invite_server), name)
    done = twostep(invite_server, "user", "lock", name)
    assert done.returncode == 0, done.stderr
    page.reload()
    page.wait_for_url(re.compile(r"/login"))  # the session ended at once
    sign_in(page, invite_server.url, name)
    main = page.locator("main").inner_text()
    assert "Your account is locked" in main
    assert CONTACT in main
    check_a11y(page, label="locked account")
    # A wrong password says nothing of the lock.
    sign_in(page, invite_server.url, name, password="not the password at all")
    assert "locked" not in page.locator("main").inner_text()
    assert twostep(invite_server, "user", "unlock", name).returncode == 0
    sign_in(page, invite_server.url, name)
    page.wait_for_url(re.compile(r"/settings/two-step"))


def test_the_e_mail_link_from_the_outbox_verifies_the_address(page: Any, invite_server: Server) -> None:
    name = username("mail")
    address = f"{name}@example.com"
    create_account(page, invite_url(invite_server, "--email", address), name)

    def link() -> str | None:
        for message in read_outbox(invite_server.data_dir / "outbox"):
            if address in message.rcpt_tos and "Confirm your e-mail address" in message.text:
                found = re.search(r"http://\S+/verify-email\?token=\S+", message.text)
                return found.group(0) if found else None
        return None

    assert wait_until(lambda: link() is not None, timeout=20)
    url = link()
    assert url is not None
    page.goto(url)
    assert page.get_by_role("button", name="Confirm my address").is_visible()
    check_a11y(page, label="confirm e-mail")
    page.get_by_role("button", name="Confirm my address").click()
    assert "Your e-mail address is confirmed" in page.locator("main").inner_text()
    page.goto(invite_server.url + "/settings/two-step")
    assert "Verified" in page.get_by_test_id("account-email").inner_text()
    page.goto(url)
    page.get_by_role("button", name="Confirm my address").click()
    assert "cannot be used" in page.locator("main").inner_text()

    # A new address: verify access first, then it is unverified until its own link is followed.
    page.goto(invite_server.url + "/settings/two-step")
    page.get_by_role("link", name="Change").click()
    page.wait_for_url(re.compile(r"/verify-access"))
    page.get_by_label("Your password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(r"/settings/email"))
    check_a11y(page, label="change e-mail")
    page.get_by_label("New e-mail address").fill("not an address")
    page.get_by_role("button", name="Change address").click()
    assert "does not look right" in page.locator("main").inner_text()
    page.get_by_label("New e-mail address").fill(f"new-{address}")
    page.get_by_role("button", name="Change address").click()
    assert "Your address was changed" in page.locator("main").inner_text()
    page.goto(invite_server.url + "/settings/two-step")
    shown = page.get_by_test_id("account-email").inner_text()
    assert f"new-{address}" in shown and "Not verified" in shown
    assert wait_until(
        lambda: any(
            address in m.rcpt_tos and "was changed" in m.text
            for m in read_outbox(invite_server.data_dir / "outbox")
        ),
        timeout=20,
    ), "the former address is told"
