"""Passkey-first sign-in in Chromium (issue 17): autofill (conditional mediation) with the CDP virtual
authenticator, the page's handling of it against a recording stub of navigator.credentials, the Signal API
calls, and "Don't ask again on this browser" with the trusted-browser list. axe-core on every changed page."""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

import httpx
import pytest

from tests.support import PASSWORD
from tests.support.browser import VirtualAuthenticator
from tests.support.pages import (
    TotpClock,
    add_app,
    check_a11y,
    read_codes,
    screenshot,
    sign_in,
    sign_out,
    sign_up,
    username,
    verify_with_password,
)
from tests.support.server import Server

pytestmark = pytest.mark.browser

# Records each navigator.credentials.get call in localStorage (it outlives the page's navigations) and never
# answers it; an abort of its signal is recorded and rejects it, as a browser does.
RECORDING_GET = """
(() => {
  if (!window.PublicKeyCredential) { return; }
  const KEY = "twostep-test-get-calls";
  const read = () => JSON.parse(localStorage.getItem(KEY) || "[]");
  PublicKeyCredential.isConditionalMediationAvailable = () => Promise.resolve(true);
  navigator.credentials.get = (options) => {
    const calls = read();
    const index = calls.length;
    calls.push({
      mediation: options.mediation || null,
      signal: !!options.signal,
      challenge: !!(options.publicKey && options.publicKey.challenge),
      aborted: false,
    });
    localStorage.setItem(KEY, JSON.stringify(calls));
    return new Promise((resolve, reject) => {
      if (!options.signal) { return; }
      options.signal.addEventListener("abort", () => {
        const now = read();
        now[index].aborted = true;
        localStorage.setItem(KEY, JSON.stringify(now));
        reject(new DOMException("The operation was aborted.", "AbortError"));
      });
    });
  };
})();
"""

# Records the Signal API calls in localStorage; no autofill (the virtual authenticator would answer it).
RECORDING_SIGNALS = """
(() => {
  if (!window.PublicKeyCredential) { return; }
  const KEY = "twostep-test-signals";
  const record = (name) => (arg) => {
    const calls = JSON.parse(localStorage.getItem(KEY) || "[]");
    calls.push({name, arg});
    localStorage.setItem(KEY, JSON.stringify(calls));
    return Promise.resolve();
  };
  PublicKeyCredential.isConditionalMediationAvailable = () => Promise.resolve(false);
  PublicKeyCredential.signalUnknownCredential = record("signalUnknownCredential");
  PublicKeyCredential.signalAllAcceptedCredentials = record("signalAllAcceptedCredentials");
})();
"""


def b64url(standard: str) -> str:
    return base64.urlsafe_b64encode(base64.b64decode(standard)).rstrip(b"=").decode()


def api_signup(server: Server, name: str) -> None:
    with httpx.Client(base_url=server.url) as http:
        r = http.post("/api/v1/accounts", json={"username": name, "password": PASSWORD})
        assert r.status_code == 201, r.text


def api_get(page: Any, url: str) -> Any:
    """A GET of the JSON API with the page's cookies."""
    r = page.request.get(url)
    assert r.ok, r.text()
    return r.json()


def add_first_passkey(page: Any, url: str) -> None:
    """From the two-step page: add a passkey (verify access with the password), save the codes."""
    page.goto(url + "/settings/two-step")
    page.get_by_role("link", name="Add passkey").click()
    verify_with_password(page)
    page.wait_for_url(re.compile(r"/settings/two-step/passkey$"))
    page.get_by_role("button", name="Use passkey").click()
    page.wait_for_selector("#recovery-codes")
    assert len(read_codes(page)) == 10
    page.get_by_role("link", name="I have saved my codes").click()
    page.wait_for_url(re.compile(r"/settings/two-step"))


def test_autofill_signs_in_with_a_passkey_chosen_in_the_username_field(
    autofill_page: Any, web_server: Server
) -> None:
    """Chromium offers conditional mediation with a virtual authenticator and answers the request with its
    passkey: the sign-in page's conditional request signs in without a password, through the same checks as
    "Sign in with a passkey" (user verification required, a passwordless sign-in in the security log)."""
    page, url = autofill_page, web_server.url
    authenticator = VirtualAuthenticator.attach(page)
    name = username("auto")
    sign_up(page, url, name)
    add_first_passkey(page, url)
    assert len(authenticator.credentials()) == 1
    page.context.clear_cookies()

    page.goto(url + "/login")
    page.wait_for_url(re.compile(r"/settings/two-step$"))
    assert name in page.locator(".who").inner_text()
    session = api_get(page, url + "/api/v1/session")
    assert session["second_factor"] == "passkey"
    events = api_get(page, url + "/api/v1/security-events")["events"]
    assert events[0]["type"] == "signed_in" and events[0]["detail"]["method"] == "passkey_passwordless"

    # Without user verification the browser's conditional request fails, and the page stays usable.
    page.context.clear_cookies()
    authenticator.set_user_verified(False)
    page.goto(url + "/login")
    page.wait_for_timeout(1500)
    assert re.search(r"/login$", page.url)
    check_a11y(page, label="sign in, autofill refused")
    sign_in(page, url, name)
    page.wait_for_url(re.compile(r"/login/second-step"))


def test_the_sign_in_page_asks_for_autofill_and_the_password_form_aborts_it(
    autofill_page: Any, web_server: Server
) -> None:
    page, url = autofill_page, web_server.url
    page.context.add_init_script(RECORDING_GET)
    name = username("abort")
    api_signup(web_server, name)
    page.goto(url + "/login")
    page.wait_for_function(
        "() => JSON.parse(localStorage.getItem('twostep-test-get-calls') || '[]').length === 1"
    )
    calls = page.evaluate("JSON.parse(localStorage.getItem('twostep-test-get-calls'))")
    assert calls == [{"mediation": "conditional", "signal": True, "challenge": True, "aborted": False}]
    assert page.locator("#f-username").get_attribute("autocomplete") == "username webauthn"
    check_a11y(page, label="sign in with autofill pending")
    screenshot(page, "sign-in-autofill")

    page.get_by_label("Username").fill(name)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(re.compile(r"/settings/two-step$"))
    calls = page.evaluate("JSON.parse(localStorage.getItem('twostep-test-get-calls'))")
    assert calls[0]["aborted"] is True, calls
    # The two-step page starts no passkey request of its own.
    assert len(calls) == 1, calls


def test_the_button_aborts_the_pending_autofill_before_its_own_request(
    autofill_page: Any, web_server: Server
) -> None:
    page, url = autofill_page, web_server.url
    page.context.add_init_script(RECORDING_GET)
    page.goto(url + "/login")
    page.wait_for_function(
        "() => JSON.parse(localStorage.getItem('twostep-test-get-calls') || '[]').length === 1"
    )
    page.get_by_role("button", name="Sign in with a passkey").click()
    page.wait_for_function(
        "() => JSON.parse(localStorage.getItem('twostep-test-get-calls') || '[]').length === 2"
    )
    calls = page.evaluate("JSON.parse(localStorage.getItem('twostep-test-get-calls'))")
    assert calls[0]["mediation"] == "conditional" and calls[0]["aborted"] is True
    assert calls[1]["mediation"] is None  # the button's request is modal


def signals(page: Any) -> list[dict[str, Any]]:
    raw = page.evaluate("localStorage.getItem('twostep-test-signals') || '[]'")
    calls: list[dict[str, Any]] = json.loads(raw)
    return calls


def test_signals_tell_the_password_manager_the_accepted_and_unknown_passkeys(
    autofill_page: Any, web_server: Server
) -> None:
    page, url = autofill_page, web_server.url
    page.context.add_init_script(RECORDING_SIGNALS)
    authenticator = VirtualAuthenticator.attach(page)
    name = username("signal")
    sign_up(page, url, name)
    add_first_passkey(page, url)
    credential_id = b64url(authenticator.credentials()[0]["credentialId"])
    accepted = [c["arg"] for c in signals(page) if c["name"] == "signalAllAcceptedCredentials"]
    assert accepted, signals(page)
    assert accepted[-1]["rpId"] == "localhost"
    assert accepted[-1]["allAcceptedCredentialIds"] == [credential_id]
    user_id = accepted[-1]["userId"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{86}", user_id)  # the 64-byte user handle, base64url

    # After removing the passkey the password manager learns that none is accepted any more.
    page.get_by_role("link", name=re.compile(r"^Remove ")).click()
    page.get_by_role("button", name=re.compile(r"^Remove")).click()
    page.wait_for_url(re.compile(r"done=removed_last"))
    accepted = [c["arg"] for c in signals(page) if c["name"] == "signalAllAcceptedCredentials"]
    assert accepted[-1] == {"rpId": "localhost", "userId": user_id, "allAcceptedCredentialIds": []}
    check_a11y(page, label="two-step after removing the passkey")

    # The browser still offers it: the server refuses it as unknown, and the page signals so.
    page.context.clear_cookies()
    page.goto(url + "/login")
    page.get_by_role("button", name="Sign in with a passkey").click()
    page.wait_for_selector(".alert-error, .field-error")
    unknown = [c["arg"] for c in signals(page) if c["name"] == "signalUnknownCredential"]
    assert unknown == [{"rpId": "localhost", "credentialId": credential_id}]
    check_a11y(page, label="sign in after an unknown passkey")


def test_trust_this_browser_skips_the_second_step_and_is_listed_and_forgotten(
    page: Any, web_server: Server
) -> None:
    url = web_server.url
    clock = TotpClock(web_server)
    name = username("trust")
    sign_up(page, url, name)
    page.get_by_role("link", name="Add authentication app").click()
    verify_with_password(page)
    key = add_app(page, url, clock)
    sign_out(page)

    sign_in(page, url, name)
    page.wait_for_url(re.compile(r"/login/second-step"))
    box = page.get_by_label("Don't ask again on this browser for 30 days")
    assert not box.is_checked()
    check_a11y(page, label="second step with the trust checkbox")
    page.get_by_label("Six-digit code").fill(clock.code(key))
    box.check()
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(r"/settings/two-step$"))
    sign_out(page)

    # The password alone now, in this browser; the session says it skipped the second step.
    sign_in(page, url, name)
    page.wait_for_url(re.compile(r"/settings/two-step$"))
    assert api_get(page, url + "/api/v1/session")["trusted_browser"] is True
    page.goto(url + "/settings/security-log")
    assert "trusted browser" in page.locator("main").inner_text()

    page.goto(url + "/settings/sessions")
    trusted = page.locator("section[aria-labelledby=trusted-title] .session")
    assert trusted.count() == 1
    assert "This browser" in trusted.inner_text()
    assert "127.0.0.1" in trusted.inner_text()
    check_a11y(page, label="sessions with a trusted browser")
    screenshot(page, "trusted-browsers")
    trusted.get_by_role("button", name=re.compile(r"^Forget")).click()
    page.wait_for_url(re.compile(r"done=browser_forgotten"))
    assert "will ask for the second step again" in page.locator("main").inner_text()
    assert page.locator("section[aria-labelledby=trusted-title] .session").count() == 0
    check_a11y(page, label="sessions, no trusted browser")
    sign_out(page)
    sign_in(page, url, name)
    page.wait_for_url(re.compile(r"/login/second-step"))
    web_server.set_clock(0)


# The browser can create conditionally (as Chromium says it can); the conditional create is recorded and
# handed to the virtual authenticator as a modal one (which it answers), since no password manager here saves
# a passkey by itself.
CONDITIONAL_CREATE = """
(() => {
  if (!window.PublicKeyCredential) { return; }
  PublicKeyCredential.isConditionalMediationAvailable = () => Promise.resolve(false);
  PublicKeyCredential.getClientCapabilities = () => Promise.resolve({conditionalCreate: %s});
  const create = navigator.credentials.create.bind(navigator.credentials);
  navigator.credentials.create = (options) => {
    const calls = JSON.parse(localStorage.getItem("twostep-test-create-calls") || "[]");
    calls.push({mediation: options.mediation || null,
                userVerification: options.publicKey.authenticatorSelection.userVerification});
    localStorage.setItem("twostep-test-create-calls", JSON.stringify(calls));
    return create({publicKey: options.publicKey});
  };
})();
"""


def _app_account_signed_in_with_code(page: Any, url: str, server: Server) -> str:
    clock = TotpClock(server)
    name = username("upgrade")
    sign_up(page, url, name)
    page.get_by_role("link", name="Add authentication app").click()
    verify_with_password(page)
    key = add_app(page, url, clock)
    page.context.clear_cookies()
    sign_in(page, url, name)
    page.wait_for_url(re.compile(r"/login/second-step"))
    page.get_by_label("Six-digit code").fill(clock.code(key))
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(re.compile(r"/settings/two-step"))
    return name


def test_automatic_passkey_upgrade_after_a_password_sign_in(autofill_page: Any, web_server: Server) -> None:
    page, url = autofill_page, web_server.url
    page.context.add_init_script(CONDITIONAL_CREATE % "true")
    authenticator = VirtualAuthenticator.attach(page)
    _app_account_signed_in_with_code(page, url, web_server)
    page.wait_for_url(re.compile(r"done=passkey_added_automatically"))
    calls = page.evaluate("JSON.parse(localStorage.getItem('twostep-test-create-calls') || '[]')")
    assert calls == [{"mediation": "conditional", "userVerification": "discouraged"}]
    assert len(authenticator.credentials()) == 1
    assert "password manager saved a passkey" in page.locator("main").inner_text()
    assert page.locator(".factor").filter(has_text="Passkey").count() == 1
    assert page.locator("[data-passkey-prompt]").count() == 0
    check_a11y(page, label="two-step after the automatic upgrade")
    page.goto(url + "/settings/security-log")
    assert "Passkey added by your password manager" in page.locator("main").inner_text()
    web_server.set_clock(0)


def test_without_conditional_create_a_dismissible_prompt_offers_a_passkey(
    autofill_page: Any, web_server: Server
) -> None:
    page, url = autofill_page, web_server.url
    page.context.add_init_script(CONDITIONAL_CREATE % "false")
    _app_account_signed_in_with_code(page, url, web_server)
    prompt = page.locator("[data-passkey-prompt]")
    assert prompt.is_visible()
    assert page.evaluate("localStorage.getItem('twostep-test-create-calls')") is None
    check_a11y(page, label="two-step with the passkey prompt")
    assert (
        prompt.get_by_role("link", name="Add a passkey").get_attribute("href") == "/settings/two-step/passkey"
    )
    prompt.get_by_role("button", name="Not now").click()
    page.wait_for_url(re.compile(r"/settings/two-step$"))
    assert page.locator("[data-passkey-prompt]").count() == 0
    cookie = next(c for c in page.context.cookies() if c["name"] == "twostep_passkey_prompt")
    assert cookie["httpOnly"] and 29 * 86400 < cookie["expires"] - time.time() <= 30 * 86400
    page.reload()
    assert page.locator("[data-passkey-prompt]").count() == 0
    web_server.set_clock(0)


def test_the_add_passkey_page_offers_the_supported_places_and_sends_the_hint(
    page: Any, web_server: Server
) -> None:
    """Headless Chromium reports no hybrid transport: "A phone or tablet" is not offered; the chosen place
    becomes the options' hints (a recording stub wraps navigator.credentials.create)."""
    url = web_server.url
    page.context.add_init_script(
        """
        (() => {
          const create = navigator.credentials.create.bind(navigator.credentials);
          navigator.credentials.create = (options) => {
            localStorage.setItem("twostep-test-hints", JSON.stringify(options.publicKey.hints || null));
            return create(options);
          };
        })();
        """
    )
    authenticator = VirtualAuthenticator.attach(page)
    sign_up(page, url, username("hint"))
    page.goto(url + "/settings/two-step/passkey")
    verify_with_password(page)
    page.wait_for_url(re.compile(r"/settings/two-step/passkey$"))
    caps = page.evaluate("() => PublicKeyCredential.getClientCapabilities()")
    assert caps["hybridTransport"] is False and caps["passkeyPlatformAuthenticator"] is True
    page.get_by_label("This device").wait_for()
    assert page.get_by_label("A security key").is_visible()
    assert not page.get_by_label("A phone or tablet").is_visible()
    check_a11y(page, label="add a passkey, with places")
    page.get_by_label("This device").check()
    page.get_by_role("button", name="Use passkey").click()
    page.wait_for_selector("#recovery-codes")
    assert json.loads(page.evaluate("localStorage.getItem('twostep-test-hints')")) == ["client-device"]
    assert len(authenticator.credentials()) == 1
