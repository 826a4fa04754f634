"""H01: passwordless passkey failures are limited per client address and per ceremony, never on the account
whose credential they name; they are security events of that account (without e-mail)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.support.database import mfa_failures
from tests.support.inprocess import AppServer
from tests.support.passkeys import Api, close_all, expect_rejected, sign_in, with_passkey
from tests.support.soft_authenticator import generate_private_key

pytestmark = pytest.mark.api


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """Loopback is a trusted proxy, so each test's clients can come from addresses of their own."""
    with AppServer(tmp_path_factory.mktemp("h01"), env={"TWOSTEP_TRUSTED_PROXIES": "127.0.0.1"}) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    close_all()


def address() -> str:
    return f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"


def client_at(server: AppServer, ip: str) -> Api:
    api = Api(server)
    api.http.headers["X-Forwarded-For"] = ip
    return api


def test_H01_passwordless_failures_naming_a_credential_do_not_lock_its_account(server: AppServer) -> None:
    victim, _ = with_passkey(server, "victim")
    stranger_ip = address()
    stranger = client_at(server, stranger_ip)
    for _ in range(8):
        options = stranger.options("/login/passkey/options")
        # The victim's credential id and user handle (both seen by anyone shown them), another key.
        forged = victim.auth.get(options, signing_key=generate_private_key())
        expect_rejected(stranger.post("/login/passkey", {"credential": forged}), 401)
    assert mfa_failures(server, victim.username) == 0
    # The owner's password and passkey still sign in, not 429.
    owner = sign_in(server, victim)
    failed = [e for e in owner.security_events() if e["type"] == "passkey_sign_in_failed"]
    assert len(failed) == 8
    for event in failed:
        assert event["ip"] == stranger_ip
        assert event["detail"] == {"method": "passkey_passwordless", "factor_id": victim.factor_ids[0]}


def test_H01_passwordless_failures_are_limited_per_address(server: AppServer) -> None:
    victim, _ = with_passkey(server, "victim")
    stranger = client_at(server, address())
    statuses = []
    for _ in range(20):
        options = stranger.options("/login/passkey/options")
        forged = victim.auth.get(options, signing_key=generate_private_key())
        statuses.append(stranger.post("/login/passkey", {"credential": forged}).status_code)
    assert statuses == [401] * 20
    # The 21st from that address waits, whatever it sends (even the owner's real passkey).
    options = stranger.options("/login/passkey/options")
    r = stranger.post("/login/passkey", {"credential": victim.auth.get(options)})
    assert r.status_code == 429, r.text
    assert r.json()["error"] == "too_many_attempts"
    assert int(r.headers["Retry-After"]) == r.json()["retry_after"] >= 1
    # The account is not held back: passwordless from another address, and password + passkey.
    elsewhere = client_at(server, address())
    options = elsewhere.options("/login/passkey/options")
    r = elsewhere.post("/login/passkey", {"credential": victim.auth.get(options)})
    assert r.status_code == 200, r.text
    sign_in(server, victim)
    assert mfa_failures(server, victim.username) == 0


def test_H01_an_unknown_credential_is_refused_and_recorded_nowhere(server: AppServer) -> None:
    victim, owner = with_passkey(server, "victim")
    stranger = client_at(server, address())
    options = stranger.options("/login/passkey/options")
    unknown = victim.auth.get(options, id="bm9uZQ", raw_id="bm9uZQ")
    expect_rejected(stranger.post("/login/passkey", {"credential": unknown}), 401)
    # The challenge was single use: the same ceremony cannot be tried again, even with the right passkey.
    expect_rejected(stranger.post("/login/passkey", {"credential": victim.auth.get(options)}), 401)
    assert [e for e in owner.security_events() if e["type"] == "passkey_sign_in_failed"] == []
