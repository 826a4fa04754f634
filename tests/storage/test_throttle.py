"""The attempt counter, on SQLite and PostgreSQL: counted before evaluation, backoff, reset (SEC-26..29)."""

from __future__ import annotations

from datetime import timedelta

from twostep.core.clock import SettableClock
from twostep.core.throttle import PASSWORD_ADDRESS, SECOND_FACTOR, Backoff
from twostep.storage import throttle
from twostep.storage.db import Database
from twostep.storage.tables import throttles


def test_SEC_27_five_free_failures_then_the_key_must_wait(db: Database, clock: SettableClock) -> None:
    now = clock.now()
    results = []
    with db.transaction() as conn:
        for _ in range(7):
            results.append(throttle.reserve_attempt(conn, key="mfa:1", policy=SECOND_FACTOR, now=now))
    assert [r.blocked_until is None for r in results] == [True] * 5 + [False, False]
    assert [r.failures for r in results[:5]] == [1, 2, 3, 4, 5]
    assert results[5].blocked_until == now + timedelta(seconds=30)
    with db.transaction() as conn:
        assert throttle.failures(conn, key="mfa:1") == 5


def test_SEC_26_backoff_doubles_and_is_capped_at_one_hour(db: Database, clock: SettableClock) -> None:
    policy = Backoff(free=2)
    now = clock.now()
    waits = []
    with db.transaction() as conn:
        for _ in range(12):
            res = throttle.reserve_attempt(conn, key="k", policy=policy, now=now)
            assert res.blocked_until is None
            waits.append(res.failures)
            # Jump past whatever wait this failure set.
            now = now + timedelta(hours=2)
    assert waits == list(range(1, 13))
    assert policy.delays() == [30, 60, 120, 240, 480, 960, 1920]
    assert policy.wait_after(1) == 0
    assert policy.wait_after(2) == 30
    assert policy.wait_after(30) == 3600


def test_SEC_26_success_resets_the_count(db: Database, clock: SettableClock) -> None:
    now = clock.now()
    with db.transaction() as conn:
        for _ in range(4):
            throttle.reserve_attempt(conn, key="mfa:2", policy=SECOND_FACTOR, now=now)
        throttle.reset(conn, key="mfa:2")
        assert throttle.failures(conn, key="mfa:2") == 0
        assert throttle.reserve_attempt(conn, key="mfa:2", policy=SECOND_FACTOR, now=now).failures == 1


def test_SEC_26_the_cap_of_100_is_never_passed_by_waiting(db: Database, clock: SettableClock) -> None:
    now = clock.now()
    with db.transaction() as conn:
        conn.execute(throttles.insert().values(key="mfa:3", failures=100, next_at=None, updated_at=now))
    with db.transaction() as conn:
        res = throttle.reserve_attempt(conn, key="mfa:3", policy=SECOND_FACTOR, now=now + timedelta(days=30))
    assert res.blocked_until is not None


def test_refund_keeps_earlier_failures_and_address_counters_forget_after_a_day(
    db: Database, clock: SettableClock
) -> None:
    now = clock.now()
    with db.transaction() as conn:
        for _ in range(3):
            throttle.reserve_attempt(conn, key="pw-ip:x", policy=PASSWORD_ADDRESS, now=now)
        throttle.refund_attempt(conn, key="pw-ip:x")
        assert throttle.failures(conn, key="pw-ip:x") == 2
        later = now + timedelta(hours=25)
        assert throttle.reserve_attempt(conn, key="pw-ip:x", policy=PASSWORD_ADDRESS, now=later).failures == 1
