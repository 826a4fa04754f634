"""Every page in every language, in Chromium (issue 19).

One walk through the pages (signed out, signing up, the settings, an authenticator app, recovery codes,
signing in with a second step, verifying access) runs with a check at each page:

- in the pseudo-language ``qps``, which wraps every message in ⟦…⟧: no English left unwrapped (a sentence
  the catalogue does not know stays bare and fails the test);
- in German at 360 px wide: no text wider than its box, no page wider than the screen; and axe-core;
- in Slovenian: axe-core, and `lang="sl"` on the page.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.support import PASSWORD
from tests.support.pages import TotpClock, check_a11y, screenshot, username
from tests.support.server import Server

pytestmark = pytest.mark.browser

Check = Callable[[Any, str], None]

# Text that is data, not a message: months and day periods of Babel's English dates (the pseudo-language
# formats times as English does), the service's name, and the language names of the menu (kept in
# their own language on purpose).
ALLOWED_WORDS = {
    "twostep", "UTC", "AM", "PM",
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
}  # fmt: skip

_VISIBLE_TEXT = """() => {
  const skip = (el) => el.closest('script, style, template, option, code, .key, .ua, noscript');
  const parts = [document.title];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (node.parentElement && !skip(node.parentElement)) { parts.push(node.textContent); }
  }
  for (const el of document.querySelectorAll('[aria-label], [placeholder], [title], [alt]')) {
    for (const name of ['aria-label', 'placeholder', 'title', 'alt']) {
      const value = el.getAttribute(name);
      if (value) { parts.push(' ' + value + ' '); }
    }
  }
  return parts.join('');
}"""

_OVERFLOWING = """() => {
  const found = [];
  const wide = document.documentElement.scrollWidth;
  if (wide > window.innerWidth) { found.push('the page is ' + wide + ' px wide'); }
  const boxes = 'h1, h2, h3, p, li, label, button, a.button, .badge, .alert, .hint, summary, td, th, '
    + '.brand, select';
  for (const el of document.querySelectorAll(boxes)) {
    if (el.closest('.table-wrap, .visually-hidden') || el.offsetParent === null) { continue; }
    if (el.scrollWidth > el.clientWidth + 1) {
      const text = el.textContent.trim().slice(0, 60);
      found.push(el.tagName.toLowerCase() + '.' + el.className + ': "' + text + '"');
    }
  }
  return found;
}"""


def unwrapped_english(page: Any, known: set[str]) -> list[str]:
    """The words of a page left when every ⟦…⟧ is taken out (innermost first: messages nest)."""
    text: str = page.evaluate(_VISIBLE_TEXT)
    for value in sorted(known, key=len, reverse=True):
        text = text.replace(value, " ")
    while True:
        stripped = re.sub(r"⟦[^⟦⟧]*⟧", " ", text)
        if stripped == text:
            break
        text = stripped
    words = re.findall(r"[A-Za-z][A-Za-z'\u2019-]+", text)
    return [w for w in words if w not in ALLOWED_WORDS]


def _submit(page: Any, action: str, **fields: str) -> None:
    form = page.locator(f'form[action="{action}"]').first
    for name, value in fields.items():
        form.locator(f'[name="{name}"]').fill(value)
    form.locator('button[type="submit"]').first.click()
    page.wait_for_load_state()


def walk(page: Any, server: Server, check: Check) -> None:
    """Every page of the service, calling ``check(page, name)`` on each; only selectors, never words."""
    url = server.url
    clock = TotpClock(server)
    name = username("lang")
    for path in ("/", "/signup", "/login"):
        page.goto(url + path)
        check(page, path)
    _submit(page, "/login", username=name, password="not the password at all")
    check(page, "login refused")
    page.goto(url + "/signup")
    _submit(page, "/signup", username=name, password="short")
    check(page, "signup refused")
    page.goto(url + "/login")
    page.evaluate("document.querySelector('form[action=\"/login\"] input[name=csrf]').value = 'x'")
    _submit(page, "/login", username=name, password=PASSWORD)
    check(page, "form expired (403)")

    page.goto(url + "/signup")
    _submit(page, "/signup", username=name, password=PASSWORD)
    page.wait_for_url(re.compile(r"/settings/two-step"))
    check(page, "two-step, welcome")
    for path in ("/settings/sessions", "/settings/security-log"):
        page.goto(url + path)
        check(page, path)
    page.goto(url + "/verify-email?token=not-a-link")
    check(page, "confirm an e-mail address")
    page.locator('form[action="/verify-email"] button[type="submit"]').click()
    page.wait_for_load_state()
    check(page, "confirm an e-mail address: a link that cannot be used")
    page.goto(url + "/two-step-required")
    check(page, "two-step required")
    page.goto(url + "/settings/password")
    page.wait_for_url(re.compile(r"/verify-access"))
    check(page, "verify access")
    _submit(page, "/verify-access", password=PASSWORD)
    page.wait_for_url(re.compile(r"/settings/password"))
    check(page, "password")
    _submit(page, "/settings/password", current_password="wrong wrong wrong wrong", new_password="x")
    check(page, "password refused")
    page.goto(url + "/settings/email")
    check(page, "e-mail address")

    page.goto(url + "/settings/two-step/app")
    check(page, "app: name")
    _submit(page, "/settings/two-step/app", name="Phone")
    check(page, "app: QR code")
    key = "".join(page.locator("#totp-key").inner_text().split())
    _submit(page, "/settings/two-step/app/confirm", code="000000")
    check(page, "app: wrong code")
    _submit(page, "/settings/two-step/app/confirm", code=clock.code(key))
    check(page, "recovery codes, first")
    codes: list[str] = page.locator("#recovery-codes code").all_inner_texts()
    page.goto(url + "/settings/two-step")
    check(page, "two-step, on")
    factor_links = page.locator('a[href*="/factors/"][href$="/rename"]')
    rename = factor_links.first.get_attribute("href")
    assert rename
    for path in (
        rename,
        rename.replace("/rename", "/remove"),
        "/settings/two-step/turn-off",
        "/settings/two-step/recovery-codes",
        "/settings/two-step/passkey",
        "/settings/sessions",
    ):
        page.goto(url + path)
        check(page, path)

    page.locator('form[action="/logout"] button').click()
    page.wait_for_url(re.compile(r"/login"))
    check(page, "signed out")
    _submit(page, "/login", username=name, password=PASSWORD)
    page.wait_for_url(re.compile(r"/login/second-step"))
    check(page, "second step")
    _submit(page, "/login/second-step", code="000000")
    check(page, "second step, wrong code")
    page.goto(page.url.replace("/login/second-step", "/login/recovery-code"))
    check(page, "recovery code")
    _submit(page, "/login/recovery-code", code=codes[0])
    page.wait_for_url(re.compile(r"/settings/two-step"))
    check(page, "two-step, signed in with a recovery code")

    clock.offset += 11 * 60  # access verified at sign-in (10 minutes) has lapsed; the session has not
    server.set_clock(clock.offset)
    page.goto(url + "/verify-access?next=/settings/password")
    _submit(page, "/verify-access", password=PASSWORD)
    page.wait_for_url(re.compile(r"/verify-access/second-step"))
    check(page, "verify access, second step")
    page.goto(page.url.replace("/verify-access/second-step", "/verify-access/recovery-code"))
    check(page, "verify access, recovery code")


def test_pseudo_language_leaves_no_english_unwrapped(browser: Any, web_server: Server) -> None:
    context = browser.new_context(extra_http_headers={"Accept-Language": "qps"}, user_agent="UA/1.0")
    context.set_default_timeout(10_000)
    page = context.new_page()
    seen: dict[str, list[str]] = {}

    def check(page: Any, name: str) -> None:
        assert page.locator("html").get_attribute("lang") == "en"
        # What the user typed or chose is data: their name, the factor's name, the browser.
        known = {"Phone", "UA"} | set(re.findall(r"lang\d+[0-9a-f]+", page.content()))
        left = unwrapped_english(page, known)
        if left:
            seen[f"{name} ({page.url})"] = left

    try:
        walk(page, web_server, check)
    finally:
        context.close()
    assert seen == {}, "English left untranslated:\n" + "\n".join(f"{k}: {v}" for k, v in seen.items())


def test_german_fits_at_360_px_and_is_accessible(browser: Any, web_server: Server) -> None:
    context = browser.new_context(
        locale="de-DE", viewport={"width": 360, "height": 740}, extra_http_headers={"Accept-Language": "de"}
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    overflowing: dict[str, list[str]] = {}

    def check(page: Any, name: str) -> None:
        assert page.locator("html").get_attribute("lang") == "de"
        assert page.locator("html").get_attribute("dir") == "ltr"
        found = page.evaluate(_OVERFLOWING)
        if found:
            overflowing[name] = found
        check_a11y(page, label=f"de: {name}")

    try:
        walk(page, web_server, check)
    finally:
        context.close()
    assert overflowing == {}, "text wider than its box at 360 px:\n" + "\n".join(
        f"{k}: {v}" for k, v in overflowing.items()
    )


def test_slovenian_is_accessible_and_named(browser: Any, web_server: Server) -> None:
    context = browser.new_context(locale="sl-SI", extra_http_headers={"Accept-Language": "sl"})
    context.set_default_timeout(10_000)
    page = context.new_page()
    shots = {"/login": "sl-sign-in", "second step": "sl-second-step"}

    def check(page: Any, name: str) -> None:
        assert page.locator("html").get_attribute("lang") == "sl"
        check_a11y(page, label=f"sl: {name}")
        if name in shots:
            screenshot(page, shots[name])  # docs/screenshots with TWOSTEP_SCREENSHOTS=docs (README)

    try:
        walk(page, web_server, check)
    finally:
        context.close()
