"""Recovery codes end to end over HTTP: format, shown once, single use, regeneration, recovery sign-in."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime

import pytest

from tests.support.api import (
    API,
    RECOVERY_CODE_RE,
    Clients,
    advance,
    code_now,
    expect,
    factors_of,
    fresh_step,
    login,
    login_recovery,
    new_2fa_user,
    new_user,
    server_time,
    session_of,
    start_login,
    verify_password,
    verify_recovery,
    verify_totp,
)
from tests.support.database import account_id, account_snapshot, db_rows
from tests.support.inprocess import AppServer

pytestmark = pytest.mark.api


@pytest.fixture
def clients(server: AppServer) -> Iterator[Clients]:
    with Clients(server) as c:
        yield c


def compact(code: str) -> str:
    return code.replace("-", "").upper()


def test_ten_distinct_codes_of_80_bits_sec30(server: AppServer, clients: Clients) -> None:
    """SEC-30: 10 distinct codes, 16 Crockford base32 characters in groups of 4 (80 bits ≥ 64); no code
    repeats across accounts or across a regenerated set."""
    seen: set[str] = set()
    for _ in range(3):
        user = new_2fa_user(server, clients)
        codes = user.recovery_codes
        assert len(codes) == 10 and len(set(codes)) == 10
        for code in codes:
            assert re.fullmatch(RECOVERY_CODE_RE, code), code
        assert len(compact(codes[0])) * 5 >= 64
        assert not seen & set(codes)
        seen |= set(codes)
    regenerated = expect(user.client.post(f"{API}/recovery-codes", json={}), 201)["recovery_codes"]
    assert len(set(regenerated)) == 10 and not seen & set(regenerated)
    assert all(re.fullmatch(RECOVERY_CODE_RE, c) for c in regenerated)


def test_codes_are_shown_once_sec32(server: AppServer, clients: Clients) -> None:
    """SEC-32: the responses that carry codes are no-store; afterwards only the count is visible."""
    user = new_user(server, clients)
    enrollment = user.client.post(f"{API}/factors/totp", json={}).json()
    r = user.client.post(
        f"{API}/factors/totp/{enrollment['enrollment_id']}/confirm",
        json={"name": "Phone", "code": code_now(server, enrollment["secret"])},
    )
    codes = expect(r, 201)["recovery_codes"]
    assert r.headers["cache-control"] == "no-store"
    r = user.client.post(f"{API}/recovery-codes", json={})
    new_codes = expect(r, 201)["recovery_codes"]
    assert r.headers["cache-control"] == "no-store"

    overview = factors_of(user.client)
    assert overview["recovery_codes_remaining"] == 10
    assert set(overview) == {"two_factor_enabled", "factors", "recovery_codes_remaining"}
    r = user.client.get(f"{API}/recovery-codes")
    assert r.status_code in (404, 405), r.text
    for path in ("/factors", "/security-events", "/session", "/sessions"):
        text = user.client.get(f"{API}{path}").text.upper()
        for code in codes + new_codes:
            assert compact(code) not in text.replace("-", ""), path
            assert code[5:9] + code[10:14] not in text.replace("-", "")  # no middle part either


def test_each_code_works_once_sec33(server: AppServer, clients: Clients) -> None:
    """SEC-33: code #3 signs in once; again it fails, also at verify access; #4 still works; 8 remain."""
    user = new_2fa_user(server, clients)
    third, fourth = user.recovery_codes[2], user.recovery_codes[3]
    client = start_login(clients, user.username)
    body = expect(login_recovery(client, third), 200)
    assert body == {"status": "signed_in", "recovery_codes_remaining": 9}
    expect(client.post(f"{API}/logout", json={}), 204)

    again = start_login(clients, user.username)
    expect(login_recovery(again, third), 401, "invalid_code")
    expect(session_of(again), 401, "not_signed_in")
    assert verify_password(user.client)["status"] == "second_factor_required"
    expect(verify_recovery(user.client, third), 401, "invalid_code")
    body = expect(login_recovery(again, fourth), 200)
    assert body["recovery_codes_remaining"] == 8
    assert factors_of(again)["recovery_codes_remaining"] == 8
    aid = account_id(server, user.username)
    used = db_rows(
        server, "SELECT COUNT(*) FROM recovery_codes WHERE account_id = :a AND used_at IS NOT NULL", a=aid
    )
    assert used == [(2,)]


def test_regeneration_needs_verified_access_and_replaces_the_set_sec35(
    server: AppServer, clients: Clients
) -> None:
    """SEC-35: POST /recovery-codes without verified access → 403, nothing changes and the old codes work;
    with it → 201, a new set, and every old code fails."""
    user = new_2fa_user(server, clients)
    fresh_step(server)
    client = start_login(clients, user.username)
    expect(client.post(f"{API}/login/totp", json={"code": code_now(server, user.secret)}), 200)
    before = account_snapshot(server, user.username)
    expect(client.post(f"{API}/recovery-codes", json={}), 403, "verify_access_required")
    after = account_snapshot(server, user.username)
    assert after["recovery_codes"] == before["recovery_codes"]
    assert after["factors"] == before["factors"]
    assert client.get(f"{API}/recovery-codes").status_code in (404, 405)
    # An old code still works after the refused regeneration.
    expect(login_recovery(start_login(clients, user.username), user.recovery_codes[0]), 200)

    assert verify_password(client)["status"] == "second_factor_required"
    assert expect(verify_totp(client, code_now(server, user.secret, 1)), 200)["status"] == "verified"
    r = client.post(f"{API}/recovery-codes", json={})
    new_codes = expect(r, 201)["recovery_codes"]
    assert len(new_codes) == 10 and not set(new_codes) & set(user.recovery_codes)
    assert factors_of(client)["recovery_codes_remaining"] == 10
    pending = start_login(clients, user.username)
    for old in user.recovery_codes[1:5]:
        expect(login_recovery(pending, old), 401, "invalid_code")
    body = expect(login_recovery(pending, new_codes[0]), 200)
    assert body["recovery_codes_remaining"] == 9
    for old in user.recovery_codes[5:9]:
        expect(login_recovery(start_login(clients, user.username), old), 401, "invalid_code")
    rows = db_rows(
        server,
        "SELECT COUNT(*) FROM recovery_codes WHERE account_id = :a",
        a=account_id(server, user.username),
    )
    assert rows == [(10,)]
    events = [e["type"] for e in expect(client.get(f"{API}/security-events"), 200)["events"]]
    assert events.count("recovery_codes_regenerated") == 1

    # Without two-step verification there is nothing to regenerate.
    plain = new_user(server, clients)
    expect(plain.client.post(f"{API}/recovery-codes", json={}), 409, "two_factor_not_enabled")


def test_recovery_sign_in_sec36(server: AppServer, clients: Clients) -> None:
    """SEC-36: a wrong password with a valid code fails and does not use the code; password + code signs in
    as a recovery sign-in with verified access, so 2FA can be turned off without a TOTP."""
    user = new_2fa_user(server, clients)
    code = user.recovery_codes[0]
    client = clients.new()
    r = client.post(f"{API}/login", json={"username": user.username, "password": user.password + "x"})
    expect(r, 401, "invalid_credentials")
    expect(login_recovery(client, code), 401, "no_pending_login")
    expect(session_of(client), 401, "not_signed_in")
    assert factors_of(user.client)["recovery_codes_remaining"] == 10

    body = login(client, user.username)
    assert body["methods"] == ["totp", "recovery_code"]
    body = expect(login_recovery(client, code), 200)
    assert body == {"status": "signed_in", "recovery_codes_remaining": 9}
    session = expect(session_of(client), 200)
    assert session["second_factor"] == "recovery_code"
    assert session["access_verified_until"] is not None
    events = [e["type"] for e in expect(client.get(f"{API}/security-events"), 200)["events"]]
    assert "recovery_code_used" in events
    until = datetime.fromisoformat(session["access_verified_until"]).timestamp()
    assert abs(until - (server_time(server) + 600)) < 10

    # That verified access lasts 10 minutes, like any other.
    late = start_login(clients, user.username)
    expect(login_recovery(late, user.recovery_codes[1]), 200)
    advance(server, 10 * 60 + 1)
    expect(late.delete(f"{API}/two-factor"), 403, "verify_access_required")
    client = start_login(clients, user.username)
    expect(login_recovery(client, user.recovery_codes[2]), 200)
    expect(client.delete(f"{API}/two-factor"), 204)
    assert factors_of(client) == {"two_factor_enabled": False, "factors": [], "recovery_codes_remaining": 0}
    assert login(clients.new(), user.username) == {"status": "signed_in"}


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param(lambda c: c.lower(), id="lower-case"),
        pytest.param(lambda c: c.replace("-", " "), id="spaces"),
        pytest.param(lambda c: c.replace("-", ""), id="no-separators"),
        pytest.param(lambda c: " " + c.lower().replace("-", " - ") + " ", id="padded"),
    ],
)
def test_input_is_normalised_but_single_use_sec37(server: AppServer, clients: Clients, shape: object) -> None:
    """SEC-37: case, spaces and hyphens are ignored; the code still works only once; overlong input → 4xx."""
    assert callable(shape)
    user = new_2fa_user(server, clients)
    code = user.recovery_codes[4]
    typed = shape(code)
    assert typed != code
    body = expect(login_recovery(start_login(clients, user.username), typed), 200)
    assert body["recovery_codes_remaining"] == 9
    again = start_login(clients, user.username)
    expect(login_recovery(again, code), 401, "invalid_code")
    expect(login_recovery(again, compact(code).lower()), 401, "invalid_code")
    r = login_recovery(again, code * 700)
    assert 400 <= r.status_code < 500, r.text
    expect(login_recovery(again, user.recovery_codes[5]), 200)
