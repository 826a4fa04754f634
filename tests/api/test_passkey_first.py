"""Passkey-first sign-in over HTTP (issue 17): the server side of the Signal API, the automatic passkey
upgrade after a password sign-in, registration hints, and backup-eligibility changes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import unique_username
from tests.support.api import (
    API,
    Clients,
    User,
    advance,
    clients_for,
    code_now,
    expect,
    factors_of,
    fresh_step,
    login,
    new_2fa_user,
    signup,
)
from tests.support.database import db_rows
from tests.support.inprocess import AppServer
from tests.support.passkeys import Api, new_authenticator, sign_in, with_passkey
from tests.support.soft_authenticator import SoftAuthenticator

pytestmark = pytest.mark.api


def test_an_unknown_passwordless_credential_is_named_so_the_page_can_signal_it(server: AppServer) -> None:
    """A passwordless assertion of a credential no account has answers passkey_rejected with
    unknown_credential (for signalUnknownCredential); a known credential's failure does not say so."""
    account, api = with_passkey(server)
    client = Api(server)
    options = client.options("/login/passkey/options")
    r = client.post("/login/passkey", {"credential": account.auth.get(options, uv=False)})
    assert r.status_code == 401 and r.json()["error"] == "passkey_rejected"
    assert "unknown_credential" not in r.json()
    expect(api.delete(f"/factors/{account.factor_ids[0]}"), 204)
    options = client.options("/login/passkey/options")
    r = client.post("/login/passkey", {"credential": account.auth.get(options)})
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "passkey_rejected" and r.json()["unknown_credential"] is True


# ----------------------------------------------------------------------- the automatic passkey upgrade


def _two_step_signed_in(server: AppServer, clients: Clients, *, email: str | None = None) -> tuple[User, Any]:
    """An account with an authenticator app, and a new client signed in with its password and a code."""
    user = new_2fa_user(server, clients, email=email)
    client = clients.new()
    fresh_step(server)
    login(client, user.username)
    expect(client.post(f"{API}/login/totp", json={"code": code_now(server, user.secret)}), 200)
    return user, client


def _automatic(client: Any, auth: SoftAuthenticator, **overrides: Any) -> Any:
    options = expect(client.post(f"{API}/factors/passkey/automatic/options", json={}), 200)["publicKey"]
    return client.post(
        f"{API}/factors/passkey/automatic", json={"credential": auth.create(options, **overrides)}
    )


@pytest.fixture
def clients(server: AppServer) -> Iterator[Clients]:
    with clients_for(server) as c:
        yield c


def test_SEC_automatic_upgrade_right_after_a_password_sign_in_once(
    server: AppServer, clients: Clients
) -> None:
    email = f"{unique_username('mail')}@example.com"
    _, client = _two_step_signed_in(server, clients, email=email)
    session = expect(client.get(f"{API}/session"), 200)
    assert session["passkey_upgrade_until"] is not None
    assert session["access_verified_until"] is None  # no verify access, and none needed for this
    options = expect(client.post(f"{API}/factors/passkey/automatic/options", json={}), 200)["publicKey"]
    assert options["authenticatorSelection"]["userVerification"] == "discouraged"
    auth = new_authenticator(server)
    # A conditional create may come without user presence or verification (WebAuthn L3 §7.1).
    r = client.post(
        f"{API}/factors/passkey/automatic", json={"credential": auth.create(options, up=False, uv=False)}
    )
    body = expect(r, 201)
    assert body["factor"]["type"] == "passkey" and "recovery_codes" not in body
    assert [f["type"] for f in factors_of(client)["factors"]] == ["totp", "passkey"]
    events = expect(client.get(f"{API}/security-events"), 200)["events"]
    assert events[0]["type"] == "passkey_added_automatically", events[0]
    subjects = [row[0] for row in db_rows(server, "SELECT subject FROM outbox WHERE recipient = :r", r=email)]
    assert "Your password manager added a passkey to your account" in subjects
    # Once: the grant is used.
    expect(client.post(f"{API}/factors/passkey/automatic/options", json={}), 403, "verify_access_required")
    assert expect(client.get(f"{API}/session"), 200)["passkey_upgrade_until"] is None


def test_SEC_automatic_upgrade_grant_is_single_use_short_lived_and_only_after_a_password(
    server: AppServer, clients: Clients
) -> None:
    # A refused credential spends the grant too.
    _, client = _two_step_signed_in(server, clients)
    auth = new_authenticator(server)
    r = _automatic(client, auth, origin="https://evil.example")
    expect(r, 400, "passkey_rejected")
    expect(client.post(f"{API}/factors/passkey/automatic/options", json={}), 403, "verify_access_required")

    # Five minutes, then gone; the grant is refused even with a challenge fetched in time.
    _, late = _two_step_signed_in(server, clients)
    options = expect(late.post(f"{API}/factors/passkey/automatic/options", json={}), 200)["publicKey"]
    advance(server, 5 * 60 + 1)
    r = late.post(f"{API}/factors/passkey/automatic", json={"credential": auth.create(options)})
    expect(r, 403, "verify_access_required")

    # Never for an account without a second factor (it would be its first, with unseen recovery codes).
    plain = clients.new()
    name = signup(plain)
    assert login(plain, name) == {"status": "signed_in"}
    assert expect(plain.get(f"{API}/session"), 200)["passkey_upgrade_until"] is None
    expect(plain.post(f"{API}/factors/passkey/automatic/options", json={}), 403, "verify_access_required")
    expect(
        plain.post(f"{API}/factors/passkey/automatic", json={"credential": {}}), 403, "verify_access_required"
    )

    # Never after a passkey sign-in (the account has a passkey already).
    account, _ = with_passkey(server)
    api = sign_in(server, account)
    assert api.session().json()["passkey_upgrade_until"] is None
    assert api.post("/factors/passkey/automatic/options").status_code == 403


def test_registration_hints_follow_the_persons_choice(server: AppServer, clients: Clients) -> None:
    user = new_2fa_user(server, clients)
    for hint in ("security-key", "client-device", "hybrid"):
        options = expect(
            user.client.post(f"{API}/factors/passkey/options", json={"authenticator": hint}), 200
        )["publicKey"]
        assert options["hints"] == [hint]
    options = expect(user.client.post(f"{API}/factors/passkey/options", json={}), 200)["publicKey"]
    assert "hints" not in options or options["hints"] == []
    r = user.client.post(f"{API}/factors/passkey/options", json={"authenticator": "carrier-pigeon"})
    expect(r, 422, "invalid_request")
