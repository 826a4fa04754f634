"""Authenticator apps end to end over HTTP: enrolment, the second sign-in step, replay, window, throttling.

Codes come from Debian's `oathtool`, computed from the secret the API handed out at the server's (test)
clock time. Each test uses fresh accounts; the module shares one app on SQLite.
Throttling policy (security.md §0.7): 5 free failures per account, then 30 s waits doubling, shared by
every second-factor kind and verify access.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from datetime import datetime
from email.utils import formatdate
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support.api import (
    API,
    Clients,
    advance,
    begin_totp,
    call,
    code_now,
    confirm_totp,
    decode_qr_svg,
    error_of,
    expect,
    factors_of,
    fresh_step,
    login,
    login_recovery,
    login_totp,
    new_2fa_user,
    new_user,
    openapi_operations,
    server_time,
    session_of,
    signup,
    start_login,
    verify_password,
    verify_totp,
)
from tests.support.database import account_snapshot, mfa_failures
from tests.support.inprocess import AppServer
from tests.support.totp import PERIOD, secret_bytes, step_of, totp_code, totp_codes, wrong_code

pytestmark = pytest.mark.api


@pytest.fixture
def clients(server: AppServer) -> Iterator[Clients]:
    with Clients(server) as c:
        yield c


def assert_too_many(r: httpx.Response) -> int:
    """429 too_many_attempts with a Retry-After header equal to the body's retry_after (seconds)."""
    body = expect(r, 429, "too_many_attempts")
    assert "retry-after" in r.headers, r.headers
    retry_after = int(r.headers["retry-after"])
    assert body["retry_after"] == retry_after
    assert 1 <= retry_after <= 3600
    return retry_after


# --- enrolment ---------------------------------------------------------------------------------------------


def test_enrolment_needs_verified_access_sec17_sec43(server: AppServer, clients: Clients) -> None:
    """SEC-17 (d), SEC-43: POST /factors/totp without verified access → 403 and the database is unchanged."""
    # A signed-in account without two-step verification, access not verified.
    client = clients.new()
    username = signup(client)
    assert login(client, username) == {"status": "signed_in"}
    before = account_snapshot(server, username)
    expect(client.post(f"{API}/factors/totp", json={}), 403, "verify_access_required")
    assert account_snapshot(server, username) == before
    assert before["totp_enrollments"] == []

    # While an authenticator app is active: a session signed in with it has not verified access either.
    fresh_step(server)
    user = new_2fa_user(server, clients)
    other = start_login(clients, user.username)
    expect(login_totp(other, code_now(server, user.secret, 1)), 200)
    before = account_snapshot(server, user.username)
    expect(other.post(f"{API}/factors/totp", json={}), 403, "verify_access_required")
    assert account_snapshot(server, user.username) == before
    assert factors_of(other)["factors"] == factors_of(user.client)["factors"]


def test_enrolment_response_secret_and_otpauth_uri_sec16(server: AppServer, clients: Clients) -> None:
    """SEC-16: a 20-byte base32 secret (no padding) and the otpauth URI exactly as docs/api.md gives it."""
    user = new_user(server, clients)
    r = user.client.post(f"{API}/factors/totp", json={})
    body = expect(r, 201)
    assert set(body) >= {"enrollment_id", "secret", "otpauth_uri", "qr_svg", "expires_at"}
    assert r.headers["cache-control"] == "no-store"
    secret = body["secret"]
    assert re.fullmatch(r"[A-Z2-7]{32}", secret), secret  # base32, no "=" padding
    assert len(secret_bytes(secret)) == 20
    assert body["otpauth_uri"] == (
        f"otpauth://totp/twostep:{user.username}?secret={secret}"
        "&issuer=twostep&algorithm=SHA1&digits=6&period=30"
    )
    parts = urlsplit(body["otpauth_uri"])
    assert (parts.scheme, parts.netloc, parts.path) == ("otpauth", "totp", f"/twostep:{user.username}")
    query = parse_qs(parts.query, strict_parsing=True)
    assert query == {
        "secret": [secret],
        "issuer": ["twostep"],
        "algorithm": ["SHA1"],
        "digits": ["6"],
        "period": ["30"],
    }
    # The enrolment lasts 15 minutes.
    expires = datetime.fromisoformat(body["expires_at"]).timestamp()
    assert abs(expires - (server_time(server) + 15 * 60)) < 10
    # Every enrolment gets its own secret.
    secrets_seen = {secret} | {begin_totp(user.client).secret for _ in range(5)}
    assert len(secrets_seen) == 6


def test_qr_svg_decodes_to_the_otpauth_uri_sec16(server: AppServer, clients: Clients) -> None:
    """SEC-16: qr_svg rendered by rsvg-convert and read by zbarimg gives exactly otpauth_uri."""
    user = new_user(server, clients)
    enrollment = begin_totp(user.client)
    assert enrollment.qr_svg.lstrip().startswith(("<svg", "<?xml"))
    assert decode_qr_svg(enrollment.qr_svg) == enrollment.otpauth_uri


def test_confirm_with_oathtool_code_first_and_second_app_sec30(server: AppServer, clients: Clients) -> None:
    """SEC-30: the first app turns 2FA on and returns 10 recovery codes; a second app returns none."""
    user = new_user(server, clients)
    first = begin_totp(user.client)
    r = confirm_totp(user.client, first.enrollment_id, name="Phone", code=code_now(server, first.secret))
    body = expect(r, 201)
    assert r.headers["cache-control"] == "no-store"
    factor = body["factor"]
    assert factor["type"] == "totp" and factor["name"] == "Phone"
    assert set(factor) >= {"id", "type", "name", "created_at", "last_used_at"}
    assert "secret" not in factor
    codes = body["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10

    second = begin_totp(user.client)
    body2 = expect(
        confirm_totp(user.client, second.enrollment_id, name="Tablet", code=code_now(server, second.secret)),
        201,
    )
    assert "recovery_codes" not in body2 or body2["recovery_codes"] is None
    assert body2["factor"]["id"] != factor["id"]

    overview = factors_of(user.client)
    assert overview["two_factor_enabled"] is True
    assert [f["name"] for f in overview["factors"]] == ["Phone", "Tablet"]
    assert overview["recovery_codes_remaining"] == 10  # the second app did not replace the set
    pending = clients.new()
    assert login(pending, user.username) == {
        "status": "second_factor_required",
        "methods": ["totp", "recovery_code"],
    }


def test_factor_names_unique_per_account_and_1_to_64_chars(server: AppServer, clients: Clients) -> None:
    """Factor names: 1 to 64 characters, unique per account (409), at confirm and at rename."""
    user = new_user(server, clients)
    user.add_totp("Phone")
    enrollment = begin_totp(user.client)
    code = code_now(server, enrollment.secret)
    for bad in ["", "   ", "x" * 65]:
        expect(
            confirm_totp(user.client, enrollment.enrollment_id, name=bad, code=code), 422, "invalid_request"
        )
    r = confirm_totp(user.client, enrollment.enrollment_id, name="Phone", code=code)
    assert r.status_code == 409, r.text
    assert error_of(r)
    # The refused confirmation left the enrolment usable: the same code with a free 64-character name works.
    body = expect(confirm_totp(user.client, enrollment.enrollment_id, name="n" * 64, code=code), 201)
    assert body["factor"]["name"] == "n" * 64
    one = user.add_totp("x")
    assert one.name == "x"

    # Rename: the same rules.
    fid = body["factor"]["id"]
    expect(user.client.patch(f"{API}/factors/{fid}", json={"name": "Phone"}), 409)
    for bad in ["", "x" * 65]:
        expect(user.client.patch(f"{API}/factors/{fid}", json={"name": bad}), 422, "invalid_request")
    renamed = expect(user.client.patch(f"{API}/factors/{fid}", json={"name": "Laptop"}), 200)
    assert renamed["factor"]["name"] == "Laptop"
    assert sorted(f["name"] for f in factors_of(user.client)["factors"]) == ["Laptop", "Phone", "x"]

    # Unique per account, not globally.
    other = new_user(server, clients)
    other.add_totp("Phone")


def test_wrong_code_at_confirm_is_400_and_keeps_the_enrolment_sec17(
    server: AppServer, clients: Clients
) -> None:
    """SEC-17 (c): a wrong code → 400 invalid_code; nothing activated; the same pending secret still works."""
    user = new_user(server, clients)
    enrollment = begin_totp(user.client)
    now = server_time(server)
    r = confirm_totp(
        user.client, enrollment.enrollment_id, name="Phone", code=wrong_code(enrollment.secret, now)
    )
    body = expect(r, 400, "invalid_code")
    assert "clock_skew_seconds" not in body
    assert factors_of(user.client) == {
        "two_factor_enabled": False,
        "factors": [],
        "recovery_codes_remaining": 0,
    }
    expect(
        confirm_totp(
            user.client, enrollment.enrollment_id, name="Phone", code=code_now(server, enrollment.secret)
        ),
        201,
    )


@pytest.mark.parametrize(
    ("device_ahead", "expected"),
    [(180, 180), (-180, -180), (60, 60), (-60, -60), (600, 600), (-600, -600), (660, None), (-690, None)],
)
def test_confirm_reports_clock_skew(
    server: AppServer, clients: Clients, device_ahead: int, expected: int | None
) -> None:
    """A code from a device whose clock is off by more than one step: 400 with clock_skew_seconds
    (positive when the device is ahead, a multiple of 30) within ±10 minutes, without it beyond."""
    at = fresh_step(server)
    user = new_user(server, clients)
    enrollment = begin_totp(user.client)
    r = confirm_totp(
        user.client,
        enrollment.enrollment_id,
        name="Phone",
        code=totp_code(enrollment.secret, at + device_ahead),
    )
    body = expect(r, 400, "invalid_code")
    assert body.get("clock_skew_seconds") == expected
    assert factors_of(user.client)["factors"] == []


def test_enrolment_expires_after_15_minutes(server: AppServer, clients: Clients) -> None:
    """A pending enrolment lasts 15 minutes: confirmed at 14:30 it works, at 15:10 it is 410
    enrollment_expired (the margin before the limit leaves room for a slow machine's real seconds)."""
    user = new_user(server, clients)
    early = begin_totp(user.client)
    late = begin_totp(user.client)
    advance(server, 14 * 60 + 30)
    verify_password(user.client)  # verified access lasts only 10 minutes
    expect(confirm_totp(user.client, early.enrollment_id, name="A", code=code_now(server, early.secret)), 201)
    advance(server, 40)
    expect(
        confirm_totp(user.client, late.enrollment_id, name="B", code=code_now(server, late.secret)),
        410,
        "enrollment_expired",
    )
    assert [f["name"] for f in factors_of(user.client)["factors"]] == ["A"]


def test_pending_enrolment_is_not_a_factor_sec17(server: AppServer, clients: Clients) -> None:
    """SEC-17 (a, b): an unconfirmed enrolment leaves the factor set unchanged; its secret is useless at
    login."""
    # (a) No factor yet: an unconfirmed enrolment does not turn two-step verification on.
    user = new_user(server, clients)
    begin_totp(user.client)
    later = clients.new()
    assert login(later, user.username) == {"status": "signed_in"}
    assert factors_of(later) == {"two_factor_enabled": False, "factors": [], "recovery_codes_remaining": 0}

    # (b) With an app: a second, unconfirmed enrolment's codes are refused at the sign-in step.
    at = fresh_step(server)
    user2 = new_2fa_user(server, clients, at=at)
    pending_secret = begin_totp(user2.client).secret
    assert [f["name"] for f in factors_of(user2.client)["factors"]] == ["Phone"]
    client = start_login(clients, user2.username)
    for k in (-1, 0, 1):
        expect(login_totp(client, totp_code(pending_secret, at + k * PERIOD)), 401, "invalid_code")
    expect(session_of(client), 401, "not_signed_in")
    expect(login_totp(client, totp_code(user2.secret, at + PERIOD)), 200)
    assert [f["name"] for f in factors_of(client)["factors"]] == ["Phone"]


def test_confirm_code_cannot_sign_in_sec18d(server: AppServer, clients: Clients) -> None:
    """SEC-18 (d): the code that confirmed the enrolment is used up; the next sign-in needs a later one."""
    at = fresh_step(server)
    user = new_2fa_user(server, clients, at=at)
    client = start_login(clients, user.username)
    expect(login_totp(client, totp_code(user.secret, at)), 401, "invalid_code")
    expect(login_totp(client, totp_code(user.secret, at - PERIOD)), 401, "invalid_code")
    expect(login_totp(client, totp_code(user.secret, at + PERIOD)), 200)


# --- the sign-in gate --------------------------------------------------------------------------------------

ALLOWED_WHILE_PENDING = {f"{API}/accounts", f"{API}/logout"}


def allowed_while_pending(path: str) -> bool:
    return path in ALLOWED_WHILE_PENDING or path == f"{API}/login" or path.startswith(f"{API}/login/")


def test_pending_sign_in_reaches_no_other_route_sec01(server: AppServer, clients: Clients) -> None:
    """SEC-01: after the password step of a 2FA user, every route of the OpenAPI document other than
    /login*, /accounts and /logout answers 401 not_signed_in; the pending sign-in survives and then works."""
    at = fresh_step(server)
    user = new_2fa_user(server, clients, at=at)
    pending = start_login(clients, user.username)
    no_cookie = clients.new()
    body = {
        "code": "123456",
        "password": user.password,
        "name": "x",
        "current_password": user.password,
        "new_password": "an entirely different passphrase",
        "credential": {},
    }
    operations = openapi_operations(server)
    assert len(operations) >= 25
    checked = []
    for method, path in operations:
        if allowed_while_pending(path):
            continue
        for client in (pending, no_cookie):
            r = call(client, method, path, body)
            assert r.status_code == 401, f"{method} {path}: {r.status_code} {r.text}"
            assert error_of(r) == "not_signed_in", f"{method} {path}: {r.text}"
            assert "remote-user" not in r.headers
        checked.append((method, path))
    assert len(checked) >= 18
    assert ("GET", f"{API}/session") in checked and ("DELETE", f"{API}/two-factor") in checked
    # Nothing above changed the account or used up the pending sign-in: it finishes normally.
    assert factors_of(user.client)["recovery_codes_remaining"] == 10
    expect(login_totp(pending, totp_code(user.secret, at + PERIOD)), 200)

    # Logout (cancel) from a pending sign-in ends it server-side.
    again = start_login(clients, user.username)
    cookie = again.cookies.get("twostep_session")
    assert cookie
    expect(again.post(f"{API}/logout", json={}), 204)
    replay = clients.new()
    expect(
        replay.post(
            f"{API}/login/totp",
            json={"code": totp_code(user.secret, at + 2 * PERIOD)},
            headers={"Cookie": f"twostep_session={cookie}"},
        ),
        401,
        "no_pending_login",
    )


def test_password_alone_issues_no_session_sec02(server: AppServer, clients: Clients) -> None:
    """SEC-02: for a 2FA account every path needs the second factor: the password step gives no usable
    session, no token in a body, no forward-auth pass, and no way around it through verify access."""
    user = new_2fa_user(server, clients)
    client = clients.new()
    r = client.post(f"{API}/login", json={"username": user.username, "password": user.password})
    body = expect(r, 200)
    assert body == {"status": "second_factor_required", "methods": ["totp", "recovery_code"]}
    cookie = client.cookies.get("twostep_session")
    assert cookie and cookie not in r.text
    expect(session_of(client), 401, "not_signed_in")
    fa = client.get(f"{API}/forward-auth")
    assert fa.status_code == 401 and "remote-user" not in fa.headers
    expect(client.post(f"{API}/verify-access", json={"password": user.password}), 401, "not_signed_in")
    # Repeating the password step does not sign in either.
    assert login(client, user.username)["status"] == "second_factor_required"
    expect(session_of(client), 401, "not_signed_in")
    # The passkey path with a junk assertion does not finish it.
    r = client.post(f"{API}/login/passkey", json={"credential": {}})
    assert r.status_code == 401, r.text
    expect(session_of(client), 401, "not_signed_in")
    assert client.get(f"{API}/forward-auth").status_code == 401


def test_pending_sign_in_expires_after_5_minutes_sec03a(server: AppServer, clients: Clients) -> None:
    """SEC-03 (a): after 5 minutes a valid code no longer finishes the pending sign-in (and is not used
    up)."""
    fresh_step(server)
    user = new_2fa_user(server, clients)
    client = start_login(clients, user.username)
    advance(server, 5 * 60 + 1)
    code = code_now(server, user.secret)
    valid = login_totp(client, code)
    wrong = login_totp(client, wrong_code(user.secret, server_time(server)))
    expect(valid, 401, "no_pending_login")
    assert (wrong.status_code, wrong.json()) == (valid.status_code, valid.json())
    expect(session_of(client), 401, "not_signed_in")
    # The refused code was not consumed: a new sign-in within 5 minutes takes it.
    expect(login_totp(start_login(clients, user.username), code), 200)


def test_pending_sign_in_is_single_use_sec03b(server: AppServer, clients: Clients) -> None:
    """SEC-03 (b): after success, neither the same client nor the old pending cookie can complete again."""
    user = new_2fa_user(server, clients)
    at = fresh_step(server, 2)
    client = start_login(clients, user.username)
    pending_cookie = client.cookies.get("twostep_session")
    expect(login_totp(client, totp_code(user.secret, at)), 200)
    assert client.cookies.get("twostep_session") != pending_cookie
    next_code = totp_code(user.secret, at + PERIOD)
    expect(login_totp(client, next_code), 401, "no_pending_login")
    replay = clients.new()
    r = replay.post(
        f"{API}/login/totp", json={"code": next_code}, headers={"Cookie": f"twostep_session={pending_cookie}"}
    )
    expect(r, 401, "no_pending_login")
    r = replay.get(f"{API}/session", headers={"Cookie": f"twostep_session={pending_cookie}"})
    expect(r, 401, "not_signed_in")
    # next_code was valid all along (never evaluated above).
    expect(login_totp(start_login(clients, user.username), next_code), 200)


def test_pending_sign_in_cannot_be_paired_with_another_account_sec03c(
    server: AppServer, clients: Clients
) -> None:
    """SEC-03 (c): Alice's pending sign-in with Bob's valid TOTP or recovery code is refused."""
    alice = new_2fa_user(server, clients)
    bob = new_2fa_user(server, clients)
    at = fresh_step(server, 2)
    client = start_login(clients, alice.username)
    bob_code = totp_code(bob.secret, at)
    expect(login_totp(client, bob_code), 401, "invalid_code")
    r = client.post(f"{API}/login/totp", json={"code": bob_code, "username": bob.username})
    expect(r, 401, "invalid_code")
    expect(login_recovery(client, bob.recovery_codes[0]), 401, "invalid_code")
    expect(session_of(client), 401, "not_signed_in")
    # Bob's code and recovery code are still his and still unused.
    expect(login_totp(start_login(clients, bob.username), bob_code), 200)
    assert factors_of(bob.client)["recovery_codes_remaining"] == 10


def test_extra_json_fields_have_no_effect_sec03d(server: AppServer, clients: Clients) -> None:
    """SEC-03 (d): fields such as skip_2fa, mfa_verified, trusted, remember change nothing."""
    user = new_2fa_user(server, clients)
    extra = {
        "skip_2fa": True,
        "mfa_verified": True,
        "trusted": True,
        "remember": True,
        "second_factor": "totp",
    }
    client = clients.new()
    r = client.post(f"{API}/login", json={"username": user.username, "password": user.password, **extra})
    assert expect(r, 200)["status"] == "second_factor_required"
    expect(session_of(client), 401, "not_signed_in")
    wrong = wrong_code(user.secret, server_time(server))
    expect(client.post(f"{API}/login/totp", json={"code": wrong, **extra}), 401, "invalid_code")
    expect(session_of(client), 401, "not_signed_in")
    assert client.get(f"{API}/forward-auth").status_code == 401


def test_second_step_failures_are_indistinguishable_sec06(server: AppServer, clients: Clients) -> None:
    """SEC-06: a wrong, a replayed and a removed factor's TOTP, a wrong and a used recovery code: one
    status and one body. An expired pending sign-in answers the same whatever the code (it is not
    evaluated)."""
    user = new_2fa_user(server, clients)
    removed = user.add_totp("Old phone")
    at = fresh_step(server, 2)
    used_code = totp_code(user.secret, at)
    expect(login_totp(start_login(clients, user.username), used_code), 200)
    expect(login_recovery(start_login(clients, user.username), user.recovery_codes[0]), 200)
    expect(user.client.delete(f"{API}/factors/{removed.factor_id}"), 204)

    client = start_login(clients, user.username)
    responses = {
        "wrong totp": login_totp(client, wrong_code(user.secret, at)),
        "replayed totp": login_totp(client, used_code),
        "removed factor": login_totp(client, totp_code(removed.secret, at + PERIOD)),
        "wrong recovery code": login_recovery(client, "ABCD-EFGH-JKMN-PQRS"),
        "used recovery code": login_recovery(client, user.recovery_codes[0]),
    }
    reference = responses["wrong totp"]
    assert reference.status_code == 401 and reference.json()["error"] == "invalid_code"
    for name, r in responses.items():
        assert (r.status_code, r.content) == (reference.status_code, reference.content), name

    # Expired pending: the same answer for a valid and a wrong code (the api.md error no_pending_login).
    expired = start_login(clients, user.username)
    advance(server, 5 * 60 + 1)
    now = server_time(server)
    valid = login_totp(expired, totp_code(user.secret, now))
    wrong = login_totp(expired, wrong_code(user.secret, now))
    assert valid.status_code == wrong.status_code == reference.status_code == 401
    assert valid.content == wrong.content
    assert valid.json()["error"] == "no_pending_login"


def test_totp_used_once_sec18abe(server: AppServer, clients: Clients) -> None:
    """SEC-18 (a) the same code twice in one step: once; (b) after T, the code of T-1 is refused;
    (e) after T, the code of T+1 is accepted."""
    user = new_2fa_user(server, clients)
    at = fresh_step(server, 3)
    code_t = totp_code(user.secret, at)
    expect(login_totp(start_login(clients, user.username), code_t), 200)
    second = start_login(clients, user.username)
    expect(login_totp(second, code_t), 401, "invalid_code")  # (a)
    expect(login_totp(second, totp_code(user.secret, at - PERIOD)), 401, "invalid_code")  # (b)
    expect(session_of(second), 401, "not_signed_in")
    expect(login_totp(second, totp_code(user.secret, at + PERIOD)), 200)  # (e)
    expect(session_of(second), 200)


def test_replayed_code_is_a_security_event_sec25(server: AppServer, clients: Clients) -> None:
    """SEC-25: a replayed TOTP is recorded as a `totp_replay` event with the client address, without the
    code."""
    user = new_2fa_user(server, clients)
    at = fresh_step(server, 2)
    code = totp_code(user.secret, at)
    expect(login_totp(start_login(clients, user.username), code), 200)
    expect(login_totp(start_login(clients, user.username), code), 401, "invalid_code")
    r = expect(user.client.get(f"{API}/security-events"), 200)
    replays = [e for e in r["events"] if e["type"] == "totp_replay"]
    assert len(replays) == 1, r
    assert replays[0]["ip"] == "127.0.0.1"
    assert code not in str(r)


def test_code_used_at_sign_in_not_reusable_at_verify_access_and_back_sec18c(
    server: AppServer, clients: Clients
) -> None:
    """SEC-18 (c): a code used to sign in is refused at verify access, and one used at verify access is
    refused at sign-in."""
    user = new_2fa_user(server, clients)
    at = fresh_step(server, 2)
    code_t = totp_code(user.secret, at)
    client = start_login(clients, user.username)
    expect(login_totp(client, code_t), 200)
    assert verify_password(client)["status"] == "second_factor_required"
    expect(verify_totp(client, code_t), 401, "invalid_code")
    code_next = totp_code(user.secret, at + PERIOD)
    assert expect(verify_totp(client, code_next), 200)["status"] == "verified"
    expect(login_totp(start_login(clients, user.username), code_next), 401, "invalid_code")


@pytest.mark.parametrize("k", [-2, -1, 0, 1, 2])
def test_window_is_t_minus_1_to_t_plus_1_sec20(server: AppServer, clients: Clients, k: int) -> None:
    """SEC-20: with the server clock at T·30+1, the codes of T-1, T and T+1 are accepted (each on a fresh
    account), those of T-2 and T+2 refused."""
    confirm_at = fresh_step(server)
    user = new_2fa_user(server, clients, at=confirm_at)
    at = fresh_step(server, 5)
    assert step_of(at) == step_of(confirm_at) + 5
    client = start_login(clients, user.username)
    r = login_totp(client, totp_code(user.secret, at + k * PERIOD))
    if abs(k) <= 1:
        assert expect(r, 200) == {"status": "signed_in"}
        assert expect(session_of(client), 200)["second_factor"] == "totp"
    else:
        expect(r, 401, "invalid_code")
        expect(session_of(client), 401, "not_signed_in")


def test_only_the_server_clock_counts_sec21(server: AppServer, clients: Clients) -> None:
    """SEC-21: a code valid 10 minutes ago, sent with that time in the body and a forged Date header,
    is refused."""
    user = new_2fa_user(server, clients)
    at = fresh_step(server, 2)
    client = start_login(clients, user.username)
    past = at - 600
    for extra in ({"time": past}, {"time": int(past)}, {"timestamp": past, "now": past}):
        r = client.post(
            f"{API}/login/totp",
            json={"code": totp_code(user.secret, past), **extra},
            headers={"Date": formatdate(past, usegmt=True)},
        )
        expect(r, 401, "invalid_code")
    expect(login_totp(client, totp_code(user.secret, at)), 200)


STRING_MALFORMED = [
    "81804",
    "0818040",
    "+81804",
    "-81804",
    "\u0660\u0668\u0661\u0668\u0660\u0664",  # Arabic-Indic digits
    "\uff10\uff18\uff11\uff18\uff10\uff14",  # full-width digits
    "12345a",
    "",
    "1" * 64 + "x",
]
TYPE_MALFORMED: list[object] = [81804, None, ["081804"], {"$ne": ""}, True, "1" * 10_000]


def test_malformed_codes_are_4xx_never_5xx_sec22(server: AppServer, clients: Clients) -> None:
    """SEC-22: malformed codes at every code endpoint → 4xx, never 5xx (a 1 MiB body → 413)."""
    user = new_2fa_user(server, clients)
    pending = start_login(clients, user.username)
    assert verify_password(user.client)["status"] == "second_factor_required"
    endpoints = [
        (pending, "/login/totp"),
        (pending, "/login/recovery-code"),
        (user.client, "/verify-access/totp"),
        (user.client, "/verify-access/recovery-code"),
    ]
    for client, path in endpoints:
        for value in [*STRING_MALFORMED, *TYPE_MALFORMED]:
            r = client.post(f"{API}{path}", json={"code": value})
            assert 400 <= r.status_code < 500, f"{path} {value!r}: {r.status_code} {r.text}"
            assert r.json()["error"] in {"invalid_code", "invalid_request", "too_many_attempts"}
        for raw in (b"{", b"[]", b'{"code": "1234', b"\xff\xfe"):
            r = client.post(f"{API}{path}", content=raw, headers={"Content-Type": "application/json"})
            assert 400 <= r.status_code < 500, f"{path} {raw!r}: {r.status_code} {r.text}"
        r = client.post(f"{API}{path}", json={"code": "1" * (1 << 20)})
        expect(r, 413, "payload_too_large")
    expect(session_of(pending), 401, "not_signed_in")


def test_malformed_string_codes_count_as_failures_sec22(server: AppServer, clients: Clients) -> None:
    """SEC-22 (documented behaviour): a malformed code sent as a JSON string is an ordinary wrong code and
    counts toward the limit; a wrong JSON type is refused with 422 before any lookup and does not count."""
    user = new_2fa_user(server, clients)
    at = fresh_step(server, 2)
    client = start_login(clients, user.username)
    for value in TYPE_MALFORMED * 2:
        expect(client.post(f"{API}/login/totp", json={"code": value}), 422, "invalid_request")
    assert mfa_failures(server, user.username) == 0
    for value in STRING_MALFORMED[:5]:
        expect(login_totp(client, value), 401, "invalid_code")
    assert mfa_failures(server, user.username) == 5
    assert_too_many(login_totp(client, totp_code(user.secret, at)))


def test_white_space_in_codes_is_dropped_and_leading_zeros_kept_sec22(
    server: AppServer, clients: Clients
) -> None:
    """SEC-22 with §0.10: "456 987"-style spaces are dropped before the check; a code with a leading zero
    is accepted as the string it is."""
    user = new_2fa_user(server, clients)
    at = fresh_step(server, 3)
    for k, shape in ((-1, "{a} {b}"), (0, " {a}{b} "), (1, "{a}\u00a0{b}")):
        code = totp_code(user.secret, at + k * PERIOD)
        expect(login_totp(start_login(clients, user.username), shape.format(a=code[:3], b=code[3:])), 200)
    # Find a later step whose code starts with 0 and move the server there.
    start = at + 3 * PERIOD
    codes = totp_codes(user.secret, start, 300)
    index = next(i for i, c in enumerate(codes) if c.startswith("0"))
    target = start + index * PERIOD
    advance(server, target - server_time(server))
    code = codes[index]
    assert code.startswith("0") and totp_code(user.secret, server_time(server)) == code
    expect(login_totp(start_login(clients, user.username), code), 200)


def test_factor_listing_never_contains_a_secret_sec24(server: AppServer, clients: Clients) -> None:
    """SEC-24: after enrolment no response (factors, session, events, sessions) carries the secret."""
    user = new_2fa_user(server, clients)
    pending_enrolment = begin_totp(user.client)
    for path in ("/factors", "/session", "/security-events", "/sessions"):
        r = user.client.get(f"{API}{path}")
        expect(r, 200)
        text = r.text.lower()
        for secret in (user.secret, pending_enrolment.secret):
            assert secret.lower() not in text, path
            assert base64.b64encode(secret_bytes(secret)).decode().rstrip("=").lower() not in text
            assert secret_bytes(secret).hex() not in text
        assert "otpauth" not in text, path
    for factor in factors_of(user.client)["factors"]:
        assert set(factor) <= {"id", "type", "name", "created_at", "last_used_at", "authenticator", "synced"}


# --- throttling ------------------------------------------------------------------------------------------


def test_failures_accumulate_across_fresh_sign_ins_sec26a(server: AppServer, clients: Clients) -> None:
    """SEC-26 (a): wrong codes over 3 fresh sign-ins share one counter: 5 free, then 429 even for the
    right code; after the wait the right code works. The next wait doubles (30 s, then 60 s)."""
    user = new_2fa_user(server, clients)
    at = fresh_step(server, 2)
    wrong = wrong_code(user.secret, at)
    for _ in range(2):
        client = start_login(clients, user.username)
        for _ in range(2):
            expect(login_totp(client, wrong), 401, "invalid_code")
    client = start_login(clients, user.username)
    expect(login_totp(client, wrong), 401, "invalid_code")  # the 5th failure
    assert 25 <= assert_too_many(login_totp(client, wrong)) <= 30
    assert_too_many(login_totp(client, totp_code(user.secret, at)))
    expect(session_of(client), 401, "not_signed_in")

    advance(server, 31)
    expect(login_totp(client, wrong), 401, "invalid_code")  # the 6th failure, after the wait
    assert 55 <= assert_too_many(login_totp(client, code_now(server, user.secret))) <= 60
    advance(server, 61)
    expect(login_totp(client, code_now(server, user.secret)), 200)


def test_forwarded_for_headers_do_not_reset_the_count_sec26b(server: AppServer, clients: Clients) -> None:
    """SEC-26 (b): a new client and a new X-Forwarded-For / X-Real-IP per attempt do not help."""
    user = new_2fa_user(server, clients)
    at = fresh_step(server, 2)
    wrong = wrong_code(user.secret, at)
    for i in range(6):
        headers = {"X-Forwarded-For": f"198.51.100.{i + 1}", "X-Real-IP": f"203.0.113.{i + 1}"}
        client = clients.new(headers=headers)
        assert login(client, user.username)["status"] == "second_factor_required"
        if i < 5:
            expect(login_totp(client, wrong), 401, "invalid_code")
        else:
            assert_too_many(login_totp(client, totp_code(user.secret, at)))


def test_success_resets_the_count_sec26c(server: AppServer, clients: Clients) -> None:
    """SEC-26 (c): 4 failures then a success: the next 5 failures are all evaluated, the 6th waits."""
    user = new_2fa_user(server, clients)
    at = fresh_step(server, 2)
    wrong = wrong_code(user.secret, at)
    client = start_login(clients, user.username)
    for _ in range(4):
        expect(login_totp(client, wrong), 401, "invalid_code")
    expect(login_totp(client, totp_code(user.secret, at)), 200)
    assert mfa_failures(server, user.username) == 0
    client = start_login(clients, user.username)
    for _ in range(5):
        expect(login_totp(client, wrong), 401, "invalid_code")
    assert_too_many(login_totp(client, totp_code(user.secret, at + PERIOD)))


def test_the_lock_is_per_account_sec26d(server: AppServer, clients: Clients) -> None:
    """SEC-26 (d): locking one account leaves another (same client address) unaffected."""
    locked = new_2fa_user(server, clients)
    other = new_2fa_user(server, clients)
    at = fresh_step(server, 2)
    client = start_login(clients, locked.username)
    for _ in range(5):
        expect(login_totp(client, wrong_code(locked.secret, at)), 401, "invalid_code")
    assert_too_many(login_totp(client, totp_code(locked.secret, at)))
    other_client = start_login(clients, other.username)
    expect(login_totp(other_client, wrong_code(other.secret, at)), 401, "invalid_code")
    expect(login_totp(other_client, totp_code(other.secret, at)), 200)


def test_totp_recovery_and_verify_access_share_one_counter_sec29(server: AppServer, clients: Clients) -> None:
    """SEC-29: wrong codes at verify access (TOTP), at sign-in (TOTP) and at sign-in (recovery code) add up;
    at the combined 5 every endpoint, including the recovery-code ones, waits."""
    user = new_2fa_user(server, clients)
    at = fresh_step(server, 2)
    wrong = wrong_code(user.secret, at)
    assert verify_password(user.client)["status"] == "second_factor_required"
    expect(verify_totp(user.client, wrong), 401, "invalid_code")
    expect(user.client.post(f"{API}/verify-access/recovery-code", json={"code": "ABCD-EFGH-JKMN-PQRS"}), 401)
    pending = start_login(clients, user.username)
    expect(login_totp(pending, wrong), 401, "invalid_code")
    expect(login_recovery(pending, "ZZZZ-ZZZZ-ZZZZ-ZZZZ"), 401, "invalid_code")
    expect(login_recovery(pending, "YYYY-YYYY-YYYY-YYYY"), 401, "invalid_code")
    assert mfa_failures(server, user.username) == 5
    assert_too_many(login_totp(pending, totp_code(user.secret, at)))
    assert_too_many(login_recovery(pending, user.recovery_codes[0]))
    assert_too_many(verify_totp(user.client, totp_code(user.secret, at)))
    assert_too_many(
        user.client.post(f"{API}/verify-access/recovery-code", json={"code": user.recovery_codes[1]})
    )
    # Nothing was consumed while waiting.
    assert factors_of(user.client)["recovery_codes_remaining"] == 10


def test_pending_sign_in_reaches_forward_auth_never(server: AppServer, clients: Clients) -> None:
    """SEC-01: the forward-auth endpoint of a reverse proxy answers a pending sign-in with 401, and the
    finished sign-in with 200 and Remote-User."""
    at = fresh_step(server)
    user = new_2fa_user(server, clients, at=at)
    client = start_login(clients, user.username)
    r = client.get(f"{API}/forward-auth")
    assert r.status_code == 401 and "remote-user" not in r.headers
    expect(login_totp(client, totp_code(user.secret, at + PERIOD)), 200)
    r = client.get(f"{API}/forward-auth")
    assert r.status_code == 200 and r.headers["remote-user"] == user.username


def test_users_have_distinct_secrets(server: AppServer, clients: Clients) -> None:
    """SEC-16: secrets are per credential: two apps of one account and two accounts never share one."""
    a = new_2fa_user(server, clients)
    a.add_totp("Second")
    b = new_2fa_user(server, clients)
    found = [f.secret for f in a.factors + b.factors]
    assert len(set(found)) == 3


def test_confirming_another_accounts_enrolment_is_404(server: AppServer, clients: Clients) -> None:
    """An enrolment belongs to its account: another account cannot confirm it (404), the owner still can."""
    alice = new_user(server, clients)
    bob = new_user(server, clients)
    enrollment = begin_totp(alice.client)
    code = code_now(server, enrollment.secret)
    expect(confirm_totp(bob.client, enrollment.enrollment_id, name="Mine", code=code), 404, "not_found")
    assert factors_of(bob.client)["factors"] == []
    expect(confirm_totp(alice.client, enrollment.enrollment_id, name="Phone", code=code), 201)


def test_password_guessing_is_throttled_per_account_sec28(server: AppServer, clients: Clients) -> None:
    """SEC-28: 5 wrong passwords, then every password step of that account from that address waits (429 with
    Retry-After, the correct password too; H07: per account and address); another account is unaffected;
    after the wait the password works."""
    user = new_2fa_user(server, clients)
    other = new_2fa_user(server, clients)
    client = clients.new()
    for _ in range(5):
        r = client.post(f"{API}/login", json={"username": user.username, "password": user.password + "!"})
        expect(r, 401, "invalid_credentials")
    r = client.post(f"{API}/login", json={"username": user.username, "password": user.password})
    assert_too_many(r)
    expect(session_of(client), 401, "not_signed_in")
    assert login(clients.new(), other.username)["status"] == "second_factor_required"
    advance(server, 31)
    assert login(client, user.username)["status"] == "second_factor_required"


@pytest.mark.slow  # 100 failed sign-ins
def test_after_100_failures_only_a_recovery_code_signs_in_sec26(server: AppServer, clients: Clients) -> None:
    """SEC-26 / §0.7: waits double up to 1 hour and never lock for ever, but at 100 consecutive failures the
    authenticator app is refused even after waiting; a recovery code then signs in and resets the count."""
    user = new_2fa_user(server, clients)
    fresh_step(server)
    wrong = wrong_code(user.secret, server_time(server))
    waits = []
    for failure in range(1, 101):
        client = start_login(clients, user.username)
        expect(login_totp(client, wrong), 401, "invalid_code")
        if failure >= 5:
            r = login_totp(client, wrong)
            waits.append(assert_too_many(r))
            advance(server, waits[-1] + 1)
        client.close()
    expected = [30, 60, 120, 240, 480, 960, 1920] + [3600] * 89
    assert len(waits) == len(expected) == 96
    for got, want in zip(waits, expected, strict=True):
        assert want - 2 <= got <= want, waits
    client = start_login(clients, user.username)
    r = login_totp(client, code_now(server, user.secret))
    assert_too_many(r)
    advance(server, 3601)
    client = start_login(clients, user.username)
    assert_too_many(login_totp(client, code_now(server, user.secret)))
    body = expect(login_recovery(client, user.recovery_codes[0]), 200)
    assert body["recovery_codes_remaining"] == 9
    assert mfa_failures(server, user.username) == 0
    expect(login_totp(start_login(clients, user.username), code_now(server, user.secret, 1)), 200)
