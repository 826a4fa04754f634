"""Verify access (re-authentication) end to end over HTTP: required, full strength, 10 minutes, bound to the
session; removing factors and turning two-step verification off."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.support.api import (
    API,
    Clients,
    User,
    advance,
    begin_totp,
    call,
    code_now,
    expect,
    factors_of,
    fresh_step,
    login,
    login_recovery,
    login_totp,
    new_2fa_user,
    server_time,
    session_of,
    start_login,
    verify_password,
    verify_recovery,
    verify_totp,
)
from tests.support.database import account_id, account_snapshot, db_rows
from tests.support.inprocess import AppServer
from tests.support.totp import PERIOD, totp_code

pytestmark = pytest.mark.api


@pytest.fixture
def clients(server: AppServer) -> Iterator[Clients]:
    with Clients(server) as c:
        yield c


def signed_in_unverified(server: AppServer, clients: Clients, user: User) -> tuple[httpx.Client, float]:
    """A second session of ``user`` signed in with a TOTP (access not verified); returns it and its time."""
    at = fresh_step(server)
    client = start_login(clients, user.username)
    expect(login_totp(client, totp_code(user.secret, at)), 200)
    assert expect(session_of(client), 200)["access_verified_until"] is None
    return client, at


def verify_with_totp(client: httpx.Client, secret: str, at: float) -> dict[str, Any]:
    assert verify_password(client)["status"] == "second_factor_required"
    body = expect(verify_totp(client, totp_code(secret, at)), 200)
    assert body["status"] == "verified"
    return body


def fill(value: object, values: dict[str, str]) -> object:
    return value.format(**values) if isinstance(value, str) else value


# Each sensitive endpoint: (method, path template, body, success status once access is verified).
SENSITIVE = [
    ("POST", "/factors/totp", {}, 201),
    ("POST", "/factors/totp/{enrollment}/confirm", {"name": "New app", "code": "{enrollment_code}"}, 201),
    ("POST", "/factors/passkey/options", {}, 200),
    ("POST", "/factors/passkey", {"name": "Key", "credential": {}}, 400),
    ("DELETE", "/factors/{factor}", None, 204),
    ("POST", "/recovery-codes", {}, 201),
    ("DELETE", "/two-factor", None, 204),
    (
        "POST",
        "/password",
        {"current_password": "{password}", "new_password": "a different long passphrase"},
        204,
    ),
    ("DELETE", "/sessions/{other_session}", None, 204),
    ("DELETE", "/sessions", None, 204),
]


@pytest.mark.slow  # a new account with a first factor and ten argon2id recovery codes for each endpoint
@pytest.mark.parametrize(
    ("method", "template", "body", "ok"), SENSITIVE, ids=[f"{m} {p}" for m, p, _, _ in SENSITIVE]
)
def test_sensitive_endpoints_need_verified_access_sec43(
    server: AppServer,
    clients: Clients,
    method: str,
    template: str,
    body: dict[str, object] | None,
    ok: int,
) -> None:
    """SEC-43: without verified access each sensitive endpoint answers 403 verify_access_required and the
    account's rows are unchanged; after verifying access in the same session the same call goes through."""
    user = new_2fa_user(server, clients)
    enrollment = begin_totp(user.client)  # started while verified, in the set-up session
    client, at = signed_in_unverified(server, clients, user)
    sessions = expect(client.get(f"{API}/sessions"), 200)["sessions"]
    other = next(s["id"] for s in sessions if not s["current"])
    values = {
        "enrollment": enrollment.enrollment_id,
        "enrollment_code": totp_code(enrollment.secret, at),
        "factor": user.factors[0].factor_id,
        "other_session": other,
        "password": user.password,
    }
    path = API + template.format(**values)
    payload = None if body is None else {k: fill(v, values) for k, v in body.items()}

    before = account_snapshot(server, user.username)
    overview = factors_of(client)
    r = call(client, method, path, payload)
    expect(r, 403, "verify_access_required")
    assert account_snapshot(server, user.username) == before
    assert factors_of(client) == overview
    expect(session_of(user.client), 200)  # the other session was not ended

    verify_with_totp(client, user.secret, at + PERIOD)
    r = call(client, method, path, payload)
    assert r.status_code == ok, f"{method} {path}: {r.status_code} {r.text}"


def test_password_alone_does_not_verify_access_with_2fa_sec44(server: AppServer, clients: Clients) -> None:
    """SEC-44: with 2FA the password step is not enough; the TOTP used to sign in is refused; password plus a
    fresh TOTP verifies; the TOTP step alone (no password first) is refused."""
    user = new_2fa_user(server, clients)
    client, at = signed_in_unverified(server, clients, user)
    expect(verify_totp(client, totp_code(user.secret, at + PERIOD)), 403, "verify_access_required")
    body = verify_password(client)
    assert body == {"status": "second_factor_required", "methods": ["totp", "recovery_code"]}
    assert expect(session_of(client), 200)["access_verified_until"] is None
    expect(client.post(f"{API}/recovery-codes", json={}), 403, "verify_access_required")
    expect(verify_totp(client, totp_code(user.secret, at)), 401, "invalid_code")  # used at sign-in
    body = expect(verify_totp(client, totp_code(user.secret, at + PERIOD)), 200)
    assert body["status"] == "verified"
    until = datetime.fromisoformat(body["verified_until"]).timestamp()
    assert abs(until - (server_time(server) + 600)) < 10
    assert expect(session_of(client), 200)["access_verified_until"] is not None
    expect(client.post(f"{API}/recovery-codes", json={}), 201)


def test_password_step_of_verify_access_lasts_5_minutes_sec44(server: AppServer, clients: Clients) -> None:
    """SEC-44 with §0.8: verify access re-runs sign-in with its rules: the password step, like a pending
    sign-in, lasts 5 minutes; after that a valid TOTP does not verify access."""
    user = new_2fa_user(server, clients)
    client, _ = signed_in_unverified(server, clients, user)
    verify_password(client)
    advance(server, 5 * 60 + 1)
    expect(verify_totp(client, code_now(server, user.secret)), 403, "verify_access_required")
    verify_password(client)
    assert expect(verify_totp(client, code_now(server, user.secret)), 200)["status"] == "verified"


def test_verify_access_with_a_recovery_code_sec44(server: AppServer, clients: Clients) -> None:
    """SEC-44: password plus a recovery code verifies access and uses the code up."""
    user = new_2fa_user(server, clients)
    client, _ = signed_in_unverified(server, clients, user)
    verify_password(client)
    body = expect(verify_recovery(client, user.recovery_codes[0]), 200)
    assert body["status"] == "verified" and body["recovery_codes_remaining"] == 9
    expect(client.post(f"{API}/factors/totp", json={}), 201)
    verify_password(client)
    expect(verify_recovery(client, user.recovery_codes[0]), 401, "invalid_code")


def test_verified_access_lasts_10_minutes_and_stays_in_its_session_sec45(
    server: AppServer, clients: Clients
) -> None:
    """SEC-45: 10 minutes, then 403; a second session of the same account is not verified; the grant
    rotates the session id (the old cookie is dead); after logout and a new sign-in there is no grant."""
    user = new_2fa_user(server, clients)
    client, at = signed_in_unverified(server, clients, user)
    old_cookie = client.cookies.get("twostep_session")
    body = verify_with_totp(client, user.secret, at + PERIOD)
    assert client.cookies.get("twostep_session") != old_cookie
    r = clients.new().get(f"{API}/session", headers={"Cookie": f"twostep_session={old_cookie}"})
    expect(r, 401, "not_signed_in")

    # Another session of the same account, signed in after the grant: not verified.
    nxt = fresh_step(server)
    second = start_login(clients, user.username)
    expect(login_totp(second, totp_code(user.secret, nxt + PERIOD)), 200)
    assert expect(session_of(second), 200)["access_verified_until"] is None
    expect(second.post(f"{API}/factors/totp", json={}), 403, "verify_access_required")

    until = datetime.fromisoformat(body["verified_until"]).timestamp()
    advance(server, until - server_time(server) - 5)
    expect(client.post(f"{API}/factors/totp", json={}), 201)  # 9:55 after verifying
    advance(server, 6)
    expect(client.post(f"{API}/factors/totp", json={}), 403, "verify_access_required")  # 10:01
    assert expect(session_of(client), 200)["second_factor"] == "totp"

    # Log out and sign in again: no grant.
    fresh = fresh_step(server)
    expect(client.post(f"{API}/logout", json={}), 204)
    assert login(client, user.username)["status"] == "second_factor_required"
    expect(login_totp(client, totp_code(user.secret, fresh)), 200)
    expect(client.post(f"{API}/recovery-codes", json={}), 403, "verify_access_required")


def test_removing_a_factor_takes_effect_at_once_sec46(server: AppServer, clients: Clients) -> None:
    """SEC-46: a removed app's codes are refused at once, even by a pending sign-in started before."""
    user = new_2fa_user(server, clients)
    removed = user.add_totp("Old phone")
    at = fresh_step(server, 2)
    pending = start_login(clients, user.username)
    expect(user.client.delete(f"{API}/factors/{removed.factor_id}"), 204)
    for k in (-1, 0, 1):
        expect(login_totp(pending, totp_code(removed.secret, at + k * PERIOD)), 401, "invalid_code")
    expect(session_of(pending), 401, "not_signed_in")
    expect(login_totp(pending, totp_code(user.secret, at)), 200)
    assert [f["name"] for f in factors_of(pending)["factors"]] == ["Phone"]
    # At verify access too.
    verify_password(pending)
    expect(verify_totp(pending, totp_code(removed.secret, at + PERIOD)), 401, "invalid_code")
    expect(user.client.delete(f"{API}/factors/{removed.factor_id}"), 404, "not_found")


def test_removing_the_last_factor_turns_2fa_off_sec46(server: AppServer, clients: Clients) -> None:
    """SEC-46: removing the last factor turns two-step verification off and deletes the recovery codes."""
    user = new_2fa_user(server, clients)
    expect(user.client.delete(f"{API}/factors/{user.factors[0].factor_id}"), 204)
    assert factors_of(user.client) == {
        "two_factor_enabled": False,
        "factors": [],
        "recovery_codes_remaining": 0,
    }
    aid = account_id(server, user.username)
    assert db_rows(server, "SELECT COUNT(*) FROM recovery_codes WHERE account_id = :a", a=aid) == [(0,)]
    assert db_rows(server, "SELECT COUNT(*) FROM factors WHERE account_id = :a", a=aid) == [(0,)]
    client = clients.new()
    assert login(client, user.username) == {"status": "signed_in"}
    expect(login_recovery(client, user.recovery_codes[0]), 401, "no_pending_login")
    events = [e["type"] for e in expect(user.client.get(f"{API}/security-events"), 200)["events"]]
    assert "factor_removed" in events and "two_factor_disabled" in events


def outbox_messages(server: AppServer, recipient: str, subject: str) -> list[str]:
    found = []
    for path in sorted((server.data_dir / "outbox").glob("*.eml")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if recipient in text and subject in text:
            found.append(text)
    return found


def test_disabling_2fa_deletes_every_secret_sec47(server: AppServer, clients: Clients) -> None:
    """SEC-47: DELETE /two-factor removes the apps, the recovery codes and pending enrolments, records the
    event and notifies once; after 2FA is turned on again, the old TOTP and old recovery codes are refused
    at verify access."""
    email = f"{time.time_ns()}@example.org"
    user = new_2fa_user(server, clients, email=email)
    old_secret, old_codes = user.secret, list(user.recovery_codes)
    begin_totp(user.client)
    expect(clients.new().delete(f"{API}/two-factor"), 401, "not_signed_in")
    expect(user.client.delete(f"{API}/two-factor"), 204)
    aid = account_id(server, user.username)
    for table in ("factors", "recovery_codes", "totp_enrollments"):
        assert db_rows(server, f"SELECT COUNT(*) FROM {table} WHERE account_id = :a", a=aid) == [(0,)], table
    assert factors_of(user.client)["two_factor_enabled"] is False
    expect(user.client.delete(f"{API}/two-factor"), 409, "two_factor_not_enabled")
    events = [e["type"] for e in expect(user.client.get(f"{API}/security-events"), 200)["events"]]
    assert events.count("two_factor_disabled") == 1

    # Turned on again with a new app (the set-up session is still verified).
    user.factors.clear()
    new_factor = user.add_totp("New phone")
    assert len(user.recovery_codes) == 10 and not set(user.recovery_codes) & set(old_codes)
    at = fresh_step(server)
    client = start_login(clients, user.username)
    expect(login_totp(client, totp_code(old_secret, at)), 401, "invalid_code")
    expect(login_recovery(client, old_codes[1]), 401, "invalid_code")
    expect(login_totp(client, totp_code(new_factor.secret, at)), 200)
    verify_password(client)
    expect(verify_totp(client, totp_code(old_secret, at + PERIOD)), 401, "invalid_code")
    expect(verify_recovery(client, old_codes[0]), 401, "invalid_code")
    assert expect(verify_totp(client, code_now(server, new_factor.secret, 1)), 200)["status"] == "verified"

    # Exactly one "turned off" message reached the outbox.
    deadline = time.monotonic() + 15
    subject = "Two-step verification was turned off"
    while time.monotonic() < deadline and not outbox_messages(server, email, subject):
        time.sleep(0.25)
    time.sleep(1.5)
    messages = outbox_messages(server, email, subject)
    assert len(messages) == 1
    for code in old_codes:
        assert code not in messages[0] and code.replace("-", "") not in messages[0]
    assert old_secret not in messages[0]
