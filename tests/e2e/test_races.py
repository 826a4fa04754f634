"""Races against `twostep serve --workers 4`, on SQLite and on PostgreSQL (security.md §3).

Every scenario runs 10 times, each time with a fresh account; the requests of a round are released together
by a threading.Barrier from a thread pool, each over its own connection (its own pending sign-in). The
outcome is checked in the HTTP responses and in the database.

Note on the throttle: each second-step attempt is counted before it is evaluated (5 free failures, then
429), so of 20 simultaneous submissions at most 5 reach the code check; the others wait with 429.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from functools import partial

import httpx
import pytest

from tests.support.api import (
    API,
    Clients,
    User,
    advance,
    expect,
    factors_of,
    login,
    login_recovery,
    login_totp,
    new_2fa_user,
    new_user,
    release_together,
    server_time,
    session_of,
    verify_password,
    verify_totp,
)
from tests.support.database import account_id, db_rows
from tests.support.server import Server
from tests.support.totp import PERIOD, step_of, totp_code, wrong_code

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROUNDS = 10
RESULTS: dict[str, list[str]] = {}


@pytest.fixture
def clients(multi_server: Server) -> Iterator[Clients]:
    with Clients(multi_server) as c:
        yield c


def pending_sign_ins(clients: Clients, user: User, n: int) -> list[httpx.Client]:
    """``n`` pending sign-ins, made one after the other (simultaneous password steps are tested apart)."""
    out = []
    for _ in range(n):
        client = clients.new()
        assert login(client, user.username)["status"] == "second_factor_required"
        out.append(client)
    return out


def record(multi_server: Server, scenario: str, line: str) -> None:
    key = f"{scenario} [{'postgresql' if multi_server.database_url else 'sqlite'}]"
    RESULTS.setdefault(key, []).append(line)
    print(f"{key}: {line}")


def test_same_totp_from_20_pending_sign_ins_gives_one_session_sec19(
    multi_server: Server, clients: Clients
) -> None:
    """SEC-19: 20 pending sign-ins submit the same valid code at once → exactly one 200, the rest refused;
    one TOTP session in the database and the factor's last step is the code's step."""
    for round_ in range(ROUNDS):
        user = new_2fa_user(multi_server, clients)
        pending = pending_sign_ins(clients, user, 20)
        at = server_time(multi_server) + PERIOD
        code = totp_code(user.secret, at)
        responses = release_together([partial(login_totp, c, code) for c in pending])
        statuses = Counter(r.status_code for r in responses)
        record(multi_server, "SEC-19", f"round {round_ + 1}: {dict(sorted(statuses.items()))}")
        assert statuses[200] == 1, statuses
        assert set(statuses) <= {200, 401, 429}, statuses
        for r in responses:
            if r.status_code == 401:
                assert r.json()["error"] == "invalid_code"
        signed_in = [c for c in pending if session_of(c).status_code == 200]
        assert len(signed_in) == 1
        aid = account_id(multi_server, user.username)
        # The session that enrolled the app counts as having used it (H04); of the 20 sign-ins, one won.
        rows = db_rows(
            multi_server,
            "SELECT COUNT(*) FROM sessions"
            " WHERE account_id = :a AND kind = 'active' AND second_factor = 'totp'",
            a=aid,
        )
        assert rows == [(2,)]
        assert session_of(user.client).status_code == 200
        (last_step,) = db_rows(
            multi_server, "SELECT totp_last_step FROM factors WHERE account_id = :a", a=aid
        )
        assert last_step[0] == step_of(at)
        clients.close()


def test_same_recovery_code_from_20_pending_sign_ins_is_used_once_sec34(
    multi_server: Server, clients: Clients
) -> None:
    """SEC-34: 20 pending sign-ins submit one recovery code at once → exactly one 200; one code used in the
    database; the remaining count drops by exactly one."""
    for round_ in range(ROUNDS):
        user = new_2fa_user(multi_server, clients)
        pending = pending_sign_ins(clients, user, 20)
        code = user.recovery_codes[round_ % 10]
        responses = release_together([partial(login_recovery, c, code) for c in pending])
        statuses = Counter(r.status_code for r in responses)
        record(multi_server, "SEC-34", f"round {round_ + 1}: {dict(sorted(statuses.items()))}")
        assert statuses[200] == 1, statuses
        assert set(statuses) <= {200, 401, 429}, statuses
        winner = next(r for r in responses if r.status_code == 200)
        assert winner.json()["recovery_codes_remaining"] == 9
        assert factors_of(user.client)["recovery_codes_remaining"] == 9
        aid = account_id(multi_server, user.username)
        used = db_rows(
            multi_server,
            "SELECT COUNT(*) FROM recovery_codes WHERE account_id = :a AND used_at IS NOT NULL",
            a=aid,
        )
        assert used == [(1,)]
        signed_in = [c for c in pending if session_of(c).status_code == 200]
        assert len(signed_in) == 1
        assert expect(session_of(signed_in[0]), 200)["second_factor"] == "recovery_code"
        clients.close()


def test_50_parallel_wrong_codes_evaluate_at_most_5_sec27(multi_server: Server, clients: Clients) -> None:
    """SEC-27: 50 wrong codes at once from one account → at most 5 evaluated (401), the rest 429; the
    database counter equals the number evaluated; afterwards the correct code is refused with 429."""
    for round_ in range(ROUNDS):
        user = new_2fa_user(multi_server, clients)
        # 10 pending sign-ins, each sending 5 of the 50 requests over its own connections.
        pending = pending_sign_ins(clients, user, 10)
        at = server_time(multi_server)
        wrong = wrong_code(user.secret, at)
        responses = release_together([partial(login_totp, c, wrong) for c in pending * 5])
        assert len(responses) == 50
        statuses = Counter(r.status_code for r in responses)
        record(multi_server, "SEC-27", f"round {round_ + 1}: {dict(sorted(statuses.items()))}")
        assert set(statuses) <= {401, 429}, statuses
        assert 1 <= statuses[401] <= 5, statuses
        for r in responses:
            if r.status_code == 429:
                assert r.json()["error"] == "too_many_attempts"
                assert int(r.headers["retry-after"]) == r.json()["retry_after"] >= 1
        rows = db_rows(
            multi_server,
            "SELECT failures FROM throttles WHERE key = :k",
            k=f"mfa:{account_id(multi_server, user.username)}",
        )
        assert rows == [(statuses[401],)]
        r = login_totp(pending[0], totp_code(user.secret, at + PERIOD))
        expect(r, 429, "too_many_attempts")
        assert all(session_of(c).status_code == 401 for c in pending)
        clients.close()


def test_simultaneous_password_sign_ins_never_fail_with_500(multi_server: Server, clients: Clients) -> None:
    """SEC-28 / api.md "never a 500": 20 simultaneous correct password steps of one account (several tabs
    or devices, or a script) answer without a server error (some may wait with 429: every attempt is
    counted before it is checked), and leave no lock-out behind for the client address: another account
    signs in from it right after. (Regression: the success path once locked the throttle rows in the
    opposite order of the reservation, which deadlocked on PostgreSQL.)"""
    try:
        for _ in range(3):
            user = new_user(multi_server, clients)
            racers = [clients.new() for _ in range(20)]
            body = {"username": user.username, "password": user.password}
            responses = release_together([partial(c.post, f"{API}/login", json=body) for c in racers])
            statuses = Counter(r.status_code for r in responses)
            record(multi_server, "password steps", str(dict(sorted(statuses.items()))))
            assert not [s for s in statuses if s >= 500], statuses
            assert set(statuses) <= {200, 429} and statuses[200] >= 1, statuses
            other = new_user(multi_server, clients)
            assert login(clients.new(), other.username) == {"status": "signed_in"}
            clients.close()
    finally:
        # Leave no per-address counter behind for other tests (such counters are forgotten after 24 h).
        advance(multi_server, 25 * 3600)


def test_removing_the_last_two_factors_at_once_turns_two_step_off_exactly_once_sec46(
    multi_server: Server, clients: Clients
) -> None:
    """SEC-46/47: two sessions remove an account's last two factors at the same moment. The account's
    factor changes are serialised, so exactly one removal sees itself last: two-step verification is off,
    no recovery code is left behind, and `two_factor_disabled` is recorded once. 10 rounds."""
    for _ in range(10):
        user = new_2fa_user(multi_server, clients)
        second = user.add_totp("Tablet")
        other = clients.new()
        assert login(other, user.username)["status"] == "second_factor_required"
        later = server_time(multi_server) + 30
        assert expect(login_totp(other, totp_code(second.secret, later)), 200) == {"status": "signed_in"}
        assert verify_password(other)["status"] == "second_factor_required"
        expect(verify_totp(other, totp_code(user.secret, later)), 200)
        responses = release_together(
            [
                lambda: user.client.delete(f"{API}/factors/{user.factors[0].factor_id}"),
                lambda: other.delete(f"{API}/factors/{second.factor_id}"),
            ]
        )
        assert [r.status_code for r in responses] == [204, 204]
        assert factors_of(user.client) == {
            "two_factor_enabled": False,
            "factors": [],
            "recovery_codes_remaining": 0,
        }
        aid = account_id(multi_server, user.username)
        assert db_rows(multi_server, "SELECT COUNT(*) FROM recovery_codes WHERE account_id = :a", a=aid) == [
            (0,)
        ]
        disabled = db_rows(
            multi_server,
            "SELECT COUNT(*) FROM security_events WHERE account_id = :a AND type = 'two_factor_disabled'",
            a=aid,
        )
        assert disabled == [(1,)]
