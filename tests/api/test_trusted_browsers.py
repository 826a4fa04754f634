"""Trusted browsers (docs/api.md "Trusted browsers", issue 17): "Don't ask again on this browser" at the
second step, over real HTTP with the test clock. A trusted browser skips the second step after a correct
password only; the cookie alone signs nothing in; expiry, revocation by each listed change, the listing,
the sweep."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.api import (
    API,
    Clients,
    User,
    advance,
    clients_for,
    code_now,
    expect,
    fresh_step,
    login,
    new_2fa_user,
    verify_password,
    verify_totp,
)
from tests.support.database import account_id, db_rows
from tests.support.inprocess import AppServer

pytestmark = pytest.mark.api

COOKIE = "twostep_trusted"  # http://localhost: no __Host- prefix
DAY = 24 * 3600


@pytest.fixture
def clients(server: AppServer) -> Iterator[Clients]:
    with clients_for(server) as c:
        yield c


def cookie_attributes(response: httpx.Response, name: str) -> dict[str, str | bool] | None:
    for raw in response.headers.get_list("set-cookie"):
        first, *attrs = [part.strip() for part in raw.split(";")]
        if first.split("=", 1)[0] == name:
            out: dict[str, str | bool] = {"value": first.split("=", 1)[1]}
            for attr in attrs:
                key, _, value = attr.partition("=")
                out[key.lower()] = value or True
            return out
    return None


def second_step_trusting(server: AppServer, user: User, client: httpx.Client, **extra: Any) -> httpx.Response:
    """The password, then a fresh TOTP code with ``trust_browser`` (and ``extra``)."""
    fresh_step(server)
    assert login(client, user.username)["status"] == "second_factor_required"
    body = {"code": code_now(server, user.secret), "trust_browser": True, **extra}
    return client.post(f"{API}/login/totp", json=body)


def trusted_client(server: AppServer, user: User, clients: Clients) -> httpx.Client:
    """A new client that has signed in with password and code, trusting the browser, then signed out."""
    client = clients.new()
    r = second_step_trusting(server, user, client)
    assert expect(r, 200) == {"status": "signed_in"}
    assert cookie_attributes(r, COOKIE) is not None
    expect(client.post(f"{API}/logout", json={}), 204)
    return client


def signs_in_without_second_step(client: httpx.Client, user: User) -> bool:
    body = login(client, user.username)
    if body["status"] == "signed_in":
        expect(client.post(f"{API}/logout", json={}), 204)
        return True
    assert body["status"] == "second_factor_required", body
    return False


def test_SEC_trusted_browser_skips_the_second_step_after_the_password_only(
    server: AppServer, clients: Clients
) -> None:
    user = new_2fa_user(server, clients)
    client = clients.new()
    r = second_step_trusting(server, user, client)
    assert expect(r, 200) == {"status": "signed_in"}
    attrs = cookie_attributes(r, COOKIE)
    assert attrs is not None
    assert attrs["httponly"] is True and attrs["samesite"] == "lax" and attrs["path"] == "/"
    assert attrs["max-age"] == str(30 * DAY)
    assert len(str(attrs["value"])) >= 43  # 256 random bits
    # The token itself is not stored: only its SHA-256.
    stored = db_rows(
        server,
        "SELECT token_hash FROM trusted_browsers WHERE account_id = :a",
        a=account_id(server, user.username),
    )
    assert len(stored) == 1 and stored[0][0] != attrs["value"] and len(stored[0][0]) == 64
    expect(client.post(f"{API}/logout", json={}), 204)

    # The password again in this browser: signed in at once, and the session says it was one factor.
    assert login(client, user.username) == {"status": "signed_in"}
    session = expect(client.get(f"{API}/session"), 200)
    assert session["second_factor"] is None and session["trusted_browser"] is True
    # A full session otherwise (H04 does not end it) ...
    expect(client.get(f"{API}/factors"), 200)
    assert client.get(f"{API}/forward-auth").status_code == 200
    # ... that does not skip verify access: the password alone asks for the second factor again.
    assert verify_password(client)["status"] == "second_factor_required"
    assert client.post(f"{API}/factors/totp", json={}).status_code == 403

    events = expect(client.get(f"{API}/security-events"), 200)["events"]
    signed_in = [e for e in events if e["type"] == "signed_in"]
    assert signed_in[0]["detail"]["method"] == "trusted_browser"
    assert signed_in[0]["detail"]["trusted_browser"]
    assert any(e["type"] == "browser_trusted" and e["detail"]["days"] == 30 for e in events)

    # A wrong password in the trusted browser is still a wrong password.
    r = client.post(f"{API}/login", json={"username": user.username, "password": "not the password at all"})
    expect(r, 401, "invalid_credentials")


def test_SEC_a_copied_trust_cookie_without_the_password_gets_nothing(
    server: AppServer, clients: Clients
) -> None:
    user = new_2fa_user(server, clients)
    client = trusted_client(server, user, clients)
    value = client.cookies.get(COOKIE)
    assert value
    thief = clients.new()
    thief.cookies.set(COOKIE, value)
    expect(thief.get(f"{API}/session"), 401, "not_signed_in")
    assert thief.get(f"{API}/forward-auth").status_code == 401
    expect(thief.get(f"{API}/trusted-browsers"), 401, "not_signed_in")
    expect(
        thief.post(f"{API}/login/totp", json={"code": "123456", "trust_browser": True}),
        401,
        "no_pending_login",
    )
    # With another account's password, the cookie is not that account's trust: the second step is owed.
    other = new_2fa_user(server, clients)
    assert login(thief, other.username)["status"] == "second_factor_required"
    # With the right password it works (the cookie is a second factor's stand-in, never a first).
    assert signs_in_without_second_step(thief, user)


def test_SEC_trust_is_opt_in_and_lasts_the_configured_days(server: AppServer, clients: Clients) -> None:
    user = new_2fa_user(server, clients)
    plain = clients.new()
    fresh_step(server)
    login(plain, user.username)
    r = plain.post(f"{API}/login/totp", json={"code": code_now(server, user.secret)})
    expect(r, 200)
    assert cookie_attributes(r, COOKIE) is None
    expect(plain.post(f"{API}/logout", json={}), 204)
    assert not signs_in_without_second_step(plain, user)
    # A non-boolean trust_browser is refused like any bad input.
    fresh_step(server)
    r = plain.post(f"{API}/login/totp", json={"code": code_now(server, user.secret), "trust_browser": "yes"})
    expect(r, 422, "invalid_request")

    client = trusted_client(server, user, clients)
    advance(server, 29 * DAY)
    assert signs_in_without_second_step(client, user)
    advance(server, DAY + 1)
    assert not signs_in_without_second_step(client, user)
    # The sweep deletes the expired row.
    aid = account_id(server, user.username)
    deadline = time.monotonic() + 10
    while db_rows(server, "SELECT id FROM trusted_browsers WHERE account_id = :a", a=aid):
        assert time.monotonic() < deadline, "the sweep never deleted the expired trust"
        time.sleep(0.2)


def test_trusted_browsers_are_listed_and_revocable(server: AppServer, clients: Clients) -> None:
    user = new_2fa_user(server, clients)
    client = trusted_client(server, user, clients)
    second = trusted_client(server, user, clients)
    assert login(client, user.username) == {"status": "signed_in"}
    listed = expect(client.get(f"{API}/trusted-browsers"), 200)["trusted_browsers"]
    assert len(listed) == 2
    mine = [b for b in listed if b["current"]]
    assert len(mine) == 1
    assert set(mine[0]) == {"id", "current", "created_at", "expires_at", "last_used_at", "ip", "user_agent"}
    assert mine[0]["ip"] == "127.0.0.1" and mine[0]["last_used_at"] is not None
    other = next(b for b in listed if not b["current"])
    expect(client.delete(f"{API}/trusted-browsers/{other['id']}"), 204)
    expect(client.delete(f"{API}/trusted-browsers/{other['id']}"), 404, "not_found")
    expect(client.delete(f"{API}/trusted-browsers/nosuchid"), 404, "not_found")
    assert not signs_in_without_second_step(second, user)
    # Another account cannot see or revoke it.
    stranger = new_2fa_user(server, clients)
    assert expect(stranger.client.get(f"{API}/trusted-browsers"), 200) == {"trusted_browsers": []}
    expect(stranger.client.delete(f"{API}/trusted-browsers/{mine[0]['id']}"), 404, "not_found")
    # Revoke them all.
    expect(client.delete(f"{API}/trusted-browsers"), 204)
    assert expect(client.get(f"{API}/trusted-browsers"), 200) == {"trusted_browsers": []}
    events = expect(client.get(f"{API}/security-events"), 200)["events"]
    assert [e["type"] for e in events[:2]] == ["trusted_browsers_revoked", "trusted_browsers_revoked"]
    expect(client.post(f"{API}/logout", json={}), 204)
    assert not signs_in_without_second_step(client, user)


def _revoked_by(server: AppServer, user: User, change: str) -> list[str]:
    """Make ``change`` in the user's verified session; return the reasons of trusted_browsers_revoked."""
    c = user.client
    if change == "factor added":
        user.add_totp("Tablet", at=fresh_step(server))
    elif change == "factor removed":
        expect(c.delete(f"{API}/factors/{user.factors[1].factor_id}"), 204)
    elif change == "password changed":
        body = {"current_password": user.password, "new_password": user.password + " and more"}
        expect(c.post(f"{API}/password", json=body), 204)
        user.password += " and more"
    elif change == "two-step verification turned off":
        expect(c.delete(f"{API}/two-factor"), 204)
    events = expect(c.get(f"{API}/security-events"), 200)["events"]
    return [e["detail"]["reason"] for e in events if e["type"] == "trusted_browsers_revoked"]


@pytest.mark.parametrize(
    "change", ["factor added", "factor removed", "password changed", "two-step verification turned off"]
)
def test_SEC_every_trust_is_revoked_by_a_change_of_factors_password_or_two_step(
    server: AppServer, clients: Clients, change: str
) -> None:
    user = new_2fa_user(server, clients)
    if change == "factor removed":
        user.add_totp("Tablet", at=fresh_step(server))
    browsers = [trusted_client(server, user, clients) for _ in range(2)]
    # The user's own session verifies access again (the trust logins took time on the clock).
    fresh_step(server)
    assert verify_password(user.client)["status"] == "second_factor_required"
    expect(verify_totp(user.client, code_now(server, user.secret)), 200)
    assert _revoked_by(server, user, change) == [change]
    aid = account_id(server, user.username)
    assert (
        db_rows(server, "SELECT id FROM trusted_browsers WHERE account_id = :a AND revoked_at IS NULL", a=aid)
        == []
    )
    if change != "two-step verification turned off":
        for browser in browsers:
            body = login(browser, user.username, user.password)
            assert body["status"] == "second_factor_required", body


def test_a_trusted_sign_in_with_a_passkey_or_recovery_code(server: AppServer, clients: Clients) -> None:
    user = new_2fa_user(server, clients)
    client = clients.new()
    login(client, user.username)
    r = client.post(
        f"{API}/login/recovery-code", json={"code": user.recovery_codes[0], "trust_browser": True}
    )
    assert expect(r, 200)["status"] == "signed_in"
    assert cookie_attributes(r, COOKIE) is not None
    expect(client.post(f"{API}/logout", json={}), 204)
    assert signs_in_without_second_step(client, user)


def test_trusted_browser_days_zero_turns_the_feature_off(tmp_path: Path) -> None:
    with (
        AppServer(tmp_path / "off", env={"TWOSTEP_TRUSTED_BROWSER_DAYS": "0"}) as off,
        clients_for(off) as clients,
    ):
        user = new_2fa_user(off, clients)
        client = clients.new()
        r = second_step_trusting(off, user, client)
        expect(r, 200)
        assert cookie_attributes(r, COOKIE) is None
        assert db_rows(off, "SELECT id FROM trusted_browsers") == []


def test_signing_in_again_from_a_trusted_session_asks_for_the_second_step(
    server: AppServer, clients: Clients
) -> None:
    """A `two_factor` application sends a trusted browser's one-factor session back to the sign-in; signing in
    again from that session must ask for the second factor, or the trust would lead back to itself forever.
    A fresh sign-in (signed out) still uses the trust."""
    user = new_2fa_user(server, clients, at=fresh_step(server))
    client = trusted_client(server, user, clients)
    assert login(client, user.username)["status"] == "signed_in"  # the trust skips the second step
    session = expect(client.get(f"{API}/session"), 200)
    assert session["trusted_browser"] is True and session["second_factor"] is None
    assert login(client, user.username)["status"] == "second_factor_required"  # again, from that session
    fresh_step(server)
    r = client.post(f"{API}/login/totp", json={"code": code_now(server, user.secret)})
    assert expect(r, 200)["status"] == "signed_in"
    session = expect(client.get(f"{API}/session"), 200)
    assert session["trusted_browser"] is False and session["second_factor"] == "totp"
    expect(client.post(f"{API}/logout", json={}), 204)
    assert signs_in_without_second_step(client, user)
