"""Browser fixtures: Debian Chromium (never a downloaded browser) driven by Playwright."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import require_or_skip
from tests.support.browser import LAUNCH_ARGS, chromium_path
from tests.support.server import Server

pytestmark = pytest.mark.browser


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        require_or_skip("Chromium (/usr/bin/chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=LAUNCH_ARGS, headless=True)
        yield b
        b.close()


# Chromium's virtual authenticator answers a conditional (autofill) passkey request at once, as if the person
# had picked the passkey from the username field's autofill the moment the page loaded; a person does not. So
# that the sign-in page behaves as for a person who types a password, `page` has no passkey autofill; the
# tests of autofill use `autofill_page`.
NO_AUTOFILL = """
if (window.PublicKeyCredential) {
  PublicKeyCredential.isConditionalMediationAvailable = () => Promise.resolve(false);
}
"""


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (its own cookies) and page; every action times out rather than hangs."""
    context = browser.new_context()
    context.set_default_timeout(10_000)
    context.add_init_script(NO_AUTOFILL)
    p = context.new_page()
    yield p
    context.close()


@pytest.fixture
def autofill_page(browser: Any) -> Iterator[Any]:
    """Like `page`, with the browser's passkey autofill (conditional mediation) as Chromium offers it."""
    context = browser.new_context()
    context.set_default_timeout(10_000)
    p = context.new_page()
    yield p
    context.close()


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real server for the browser tests, on http://localhost:PORT (WebAuthn refuses IP addresses)."""
    with Server(tmp_path_factory.mktemp("web")) as srv:
        yield srv
