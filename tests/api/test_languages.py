"""Languages over HTTP (issue 19): which language a request gets (the account's stored choice, else the
language cookie, else Accept-Language, else default_language), the same error codes with messages in that
language, `lang` and `dir` on the pages, and the e-mails in the account's language."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import STRONG_PASSWORD
from tests.support.api import (
    API,
    Clients,
    code_now,
    expect,
    fresh_step,
    login,
    new_2fa_user,
    new_user,
    signup,
    verify_password,
)
from tests.support.inprocess import AppServer
from tests.support.mail import read_outbox, wait_until
from twostep import i18n
from twostep.core.events import EventType
from twostep.web.pages.account import describe

pytestmark = pytest.mark.api

LANG_ATTRS = re.compile(r'<html lang="([^"]+)" dir="([^"]+)">')
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def clients(server: AppServer) -> Iterator[Clients]:
    with Clients(server) as c:
        yield c


def page_language(client: httpx.Client, path: str = "/login", **headers: str) -> tuple[str, str, str]:
    """(lang, dir, the first <h1>) of a page."""
    r = client.get(path, headers=headers)
    assert r.status_code == 200, r.text
    found = LANG_ATTRS.search(r.text)
    assert found, r.text[:200]
    h1 = re.search(r"<h1[^>]*>(.*?)</h1>", r.text, re.S)
    assert h1
    assert r.headers["content-language"] == found.group(1)
    return found.group(1), found.group(2), h1.group(1).strip()


def choose(client: httpx.Client, language: str, next: str = "/login") -> httpx.Response:
    """The language menu of a page: its form, posted with the page's own token."""
    page = client.get(next)
    token = CSRF.search(page.text)
    assert token
    return client.post("/language", data={"language": language, "next": next, "csrf": token.group(1)})


def test_accept_language_chooses_and_english_is_the_default(server: AppServer, clients: Clients) -> None:
    client = clients.new()
    assert page_language(client) == ("en", "ltr", "Sign in")
    assert page_language(client, **{"Accept-Language": "de-CH,de;q=0.9,en;q=0.5"}) == (
        "de",
        "ltr",
        "Anmelden",
    )
    assert page_language(client, **{"Accept-Language": "fr, sl;q=0.8, de;q=0.2"}) == ("sl", "ltr", "Prijava")
    assert page_language(client, **{"Accept-Language": "fr, it"}) == ("en", "ltr", "Sign in")


def test_the_operators_default_language_when_the_browser_names_none_of_ours(tmp_path: Path) -> None:
    with AppServer(tmp_path, env={"TWOSTEP_DEFAULT_LANGUAGE": "sl"}) as server, server.client() as client:
        assert page_language(client)[0] == "sl"
        assert page_language(client, **{"Accept-Language": "fr"})[0] == "sl"
        assert page_language(client, **{"Accept-Language": "de"})[0] == "de"


def test_the_menus_choice_beats_accept_language(server: AppServer, clients: Clients) -> None:
    client = clients.new(headers={"Accept-Language": "de"})
    assert page_language(client)[0] == "de"
    r = choose(client, "sl")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert page_language(client)[0] == "sl"
    # Not one of ours, or a form without the page's token: nothing changes.
    choose(client, "fr")
    assert page_language(client)[0] == "sl"
    assert client.post("/language", data={"language": "en", "next": "/login", "csrf": "x"}).status_code == 403
    assert page_language(client)[0] == "sl"


def test_a_signed_in_accounts_stored_choice_beats_accept_language_and_the_cookie(
    server: AppServer, clients: Clients
) -> None:
    user = new_user(server, clients)
    choose(user.client, "de", next="/settings/two-step")
    # Another browser of the same account: German, although it asks for Slovenian and has no cookie...
    other = clients.new(headers={"Accept-Language": "sl"})
    assert login(other, user.username) == {"status": "signed_in"}
    assert page_language(other, "/settings/two-step") == ("de", "ltr", "Bestätigung in zwei Schritten")
    # ...and even with a cookie of another language set before signing in.
    other.cookies.set("twostep_lang", "sl")
    assert page_language(other, "/settings/sessions")[0] == "de"
    # Signed out, the browser decides again.
    anonymous = clients.new(headers={"Accept-Language": "sl"})
    assert page_language(anonymous)[0] == "sl"


def test_api_errors_keep_their_code_and_change_only_the_message(server: AppServer, clients: Clients) -> None:
    client = clients.new()
    body = {"username": "nobody-here", "password": "x" * 20}
    english = expect(client.post(f"{API}/login", json=body), 401, "invalid_credentials")
    german = expect(
        client.post(f"{API}/login", json=body, headers={"Accept-Language": "de"}), 401, "invalid_credentials"
    )
    slovenian = expect(
        client.post(f"{API}/login", json=body, headers={"Accept-Language": "sl"}), 401, "invalid_credentials"
    )
    assert english["message"] == "The username or password is not correct."
    assert german["message"] == "Benutzername oder Passwort stimmt nicht."
    assert slovenian["message"] == "Uporabniško ime ali geslo ni pravilno."
    assert set(english) == set(german) == set(slovenian)
    # A request the guard refuses before any route (415), and a validation error with a placeholder.
    refused = client.post(
        f"{API}/login", content=b"x", headers={"Content-Type": "text/plain", "Accept-Language": "de"}
    )
    assert refused.status_code == 415
    assert refused.json() == {
        "error": "unsupported_media_type",
        "message": "Senden Sie JSON mit Content-Type: application/json.",
    }
    missing = expect(
        client.post(f"{API}/login", json={"username": "a"}, headers={"Accept-Language": "de"}),
        422,
        "invalid_request",
    )
    assert missing["message"] == "Das Feld 'password' ist erforderlich."


def test_a_signed_in_api_client_gets_its_accounts_language(server: AppServer, clients: Clients) -> None:
    user = new_user(server, clients)
    choose(user.client, "sl", next="/settings/two-step")
    r = user.client.post(f"{API}/factors/totp/nope/confirm", json={"name": "x", "code": "123456"})
    assert r.json() == {"error": "not_found", "message": "Te nastavitve ni. Začnite znova."}


def _mail_to(server: AppServer, address: str) -> list[EmailMessage]:
    return [m.message for m in read_outbox(server.data_dir / "outbox") if address in str(m.message["To"])]


def test_emails_are_in_the_accounts_language(server: AppServer, clients: Clients) -> None:
    """The e-mail of an event, in the language the account chose, whatever the browser that caused it."""
    address = f"lang{time.time_ns()}@example.org"
    client = clients.new(headers={"Accept-Language": "en"})
    username = signup(client, email=address)
    assert login(client, username) == {"status": "signed_in"}
    choose(client, "de", next="/settings/two-step")
    verify_password(client)
    r = client.post(
        f"{API}/password",
        json={"current_password": STRONG_PASSWORD, "new_password": STRONG_PASSWORD + "-neu"},
    )
    assert r.status_code in (200, 204), r.text

    # Signing up sent the link to confirm the address (in default_language: nothing was chosen then).
    def password_mail() -> list[EmailMessage]:
        return [m for m in _mail_to(server, address) if m["Subject"] != "Confirm your e-mail address"]

    assert wait_until(lambda: len(password_mail()) == 1, 10)
    (message,) = password_mail()
    assert message["Subject"] == "Ihr Passwort wurde geändert"
    text = message.get_content()
    assert text.startswith(f"Hallo {username},")
    assert "Das Passwort Ihres Kontos wurde geändert." in text
    # The time in German's format with the zone named, and the same instant in ISO 8601.
    assert re.search(
        r"Wann: \d{1,2}\. \w+ \d{4}, \d{2}:\d{2}:\d{2} UTC \(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)", text
    )
    assert "Wenn Sie das waren, müssen Sie nichts tun." in text


def _described(language: str, event_type: str, detail: dict[str, Any]) -> str:
    reset = i18n.CURRENT.set(i18n.Chosen(language))
    try:
        return describe(event_type, detail)
    finally:
        i18n.CURRENT.reset(reset)


def test_security_log_details_have_the_plural_forms_of_the_language() -> None:
    """Slovenian has four forms (1, 2, 3-4, the rest: and 101 is like 1), German and English two; the
    catalogue's Plural-Forms decide, not a rule written here."""
    days = (1, 2, 3, 5, 101)
    trusted = {
        language: [_described(language, EventType.BROWSER_TRUSTED, {"days": n}) for n in days]
        for language in ("en", "sl", "de")
    }
    assert trusted["en"] == ["for 1 day", "for 2 days", "for 3 days", "for 5 days", "for 101 days"]
    assert trusted["sl"] == ["za 1 dan", "za 2 dneva", "za 3 dni", "za 5 dni", "za 101 dan"]
    assert trusted["de"] == ["für 1 Tag", "für 2 Tage", "für 3 Tage", "für 5 Tage", "für 101 Tage"]
    application = {"client": "Grafana", "client_id": "x", "acr": "1"}
    assert _described("en", EventType.OIDC_SIGN_IN, application) == "to Grafana"
    assert _described("sl", EventType.OIDC_SIGN_IN, application) == "v aplikacijo Grafana"
    assert _described("de", EventType.OIDC_SIGN_IN, application) == "bei Grafana"


def test_the_security_log_page_says_how_long_a_browser_is_trusted_in_the_readers_language(
    tmp_path: Path,
) -> None:
    with AppServer(tmp_path, env={"TWOSTEP_TRUSTED_BROWSER_DAYS": "2"}) as server, Clients(server) as clients:
        user = new_2fa_user(server, clients)
        browser = clients.new()
        fresh_step(server)
        assert login(browser, user.username)["status"] == "second_factor_required"
        body = {"code": code_now(server, user.secret), "trust_browser": True}
        assert expect(browser.post(f"{API}/login/totp", json=body), 200) == {"status": "signed_in"}

        def log(language: str) -> str:
            r = browser.get("/settings/security-log", headers={"Accept-Language": language})
            assert r.status_code == 200 and r.headers["content-language"] == language, r.text[:200]
            return r.text

        assert "for 2 days" in log("en")
        assert "za 2 dneva" in log("sl") and "for 2 days" not in log("sl")
        assert "für 2 Tage" in log("de")
