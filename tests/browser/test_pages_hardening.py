"""H04 on the pages: turning two-step verification on says that the password-only sessions were signed out."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.pages import (
    TotpClock,
    add_app,
    read_codes,
    sign_in,
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


def test_H04_the_codes_page_says_the_password_only_sessions_were_signed_out(
    page: Any, browser: Any, web_server: Server, clock: TotpClock
) -> None:
    """H04: a second browser signed in with the password alone; the first turns two-step verification on.
    The recovery-codes page says one other session was signed out, and the second browser is at the sign-in
    page on its next request."""
    url = web_server.url
    name = username("h04")
    sign_up(page, url, name)
    other = browser.new_context()
    other.set_default_timeout(10_000)
    try:
        second = other.new_page()
        sign_in(second, url, name)
        second.goto(f"{url}/settings/two-step")
        assert "/settings/two-step" in second.url

        page.goto(f"{url}/settings/two-step/app")
        verify_with_password(page)
        add_app(page, url, clock)
        assert len(read_codes(page)) == 10
        notice = page.locator("#two-step-on")
        text = " ".join(notice.inner_text().split())
        assert "Two-step verification is on." in text
        assert "1 other session signed in with your password alone was signed out" in text

        second.goto(f"{url}/settings/two-step")
        second.wait_for_url(re.compile(r"/login"))
    finally:
        other.close()
