"""The attempt counter, on SQLite and PostgreSQL: counted before evaluation, backoff, reset (SEC-26..29)."""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import select

from twostep.core.clock import SettableClock
from twostep.core.throttle import PASSWORD_ADDRESS, SECOND_FACTOR, Backoff
from twostep.storage import throttle
from twostep.storage.db import Database
from twostep.storage.tables import throttles

# Keys of their own in this run: the PostgreSQL database is shared by the whole session (and its workers).
_RUN = secrets.token_hex(4)
KEYS = {key: f"{key}-{_RUN}" for key in ("mfa:1", "mfa:2", "mfa:3", "pw-ip:x", "k")}


def test_SEC_27_five_free_failures_then_the_key_must_wait(db: Database, clock: SettableClock) -> None:
    now = clock.now()
    results = []
    with db.transaction() as conn:
        for _ in range(7):
            results.append(throttle.reserve_attempt(conn, key=KEYS["mfa:1"], policy=SECOND_FACTOR, now=now))
    assert [r.blocked_until is None for r in results] == [True] * 5 + [False, False]
    assert [r.failures for r in results[:5]] == [1, 2, 3, 4, 5]
    assert results[5].blocked_until == now + timedelta(seconds=30)
    with db.transaction() as conn:
        assert throttle.failures(conn, key=KEYS["mfa:1"]) == 5


def test_SEC_26_backoff_doubles_and_is_capped_at_one_hour(db: Database, clock: SettableClock) -> None:
    """SEC-26: after the free failures, each failure makes the key wait twice as long as the one before, from
    30 s up to one hour, as the database's own upsert sets it; an attempt within the wait is refused until
    then and changes nothing."""
    policy = Backoff(free=2)
    start = clock.now()
    waits: list[float | None] = []
    for n in range(1, 13):
        now = start + timedelta(hours=2 * n)  # past whatever wait the failure before set
        with db.transaction() as conn:
            counted = throttle.reserve_attempt(conn, key=KEYS["k"], policy=policy, now=now)
            assert counted.blocked_until is None and counted.failures == n
            next_at = conn.execute(select(throttles.c.next_at).where(throttles.c.key == KEYS["k"])).scalar()
            waits.append(None if next_at is None else (next_at - now).total_seconds())
            if next_at is not None:
                refused = throttle.reserve_attempt(
                    conn, key=KEYS["k"], policy=policy, now=now + timedelta(seconds=1)
                )
                assert refused.blocked_until == next_at and refused.failures == n
    assert waits == [None, 30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600]


def test_SEC_26_success_resets_the_count(db: Database, clock: SettableClock) -> None:
    now = clock.now()
    with db.transaction() as conn:
        for _ in range(4):
            throttle.reserve_attempt(conn, key=KEYS["mfa:2"], policy=SECOND_FACTOR, now=now)
        throttle.reset(conn, key=KEYS["mfa:2"])
        assert throttle.failures(conn, key=KEYS["mfa:2"]) == 0
        assert throttle.reserve_attempt(conn, key=KEYS["mfa:2"], policy=SECOND_FACTOR, now=now).failures == 1


def test_SEC_26_the_cap_of_100_is_never_passed_by_waiting(db: Database, clock: SettableClock) -> None:
    now = clock.now()
    with db.transaction() as conn:
        conn.execute(throttles.insert().values(key=KEYS["mfa:3"], failures=100, next_at=None, updated_at=now))
    with db.transaction() as conn:
        res = throttle.reserve_attempt(
            conn, key=KEYS["mfa:3"], policy=SECOND_FACTOR, now=now + timedelta(days=30)
        )
    assert res.blocked_until is not None


def test_refund_keeps_earlier_failures_and_address_counters_forget_after_a_day(
    db: Database, clock: SettableClock
) -> None:
    now = clock.now()
    with db.transaction() as conn:
        for _ in range(3):
            throttle.reserve_attempt(conn, key=KEYS["pw-ip:x"], policy=PASSWORD_ADDRESS, now=now)
        throttle.refund_attempt(conn, key=KEYS["pw-ip:x"])
        assert throttle.failures(conn, key=KEYS["pw-ip:x"]) == 2
        later = now + timedelta(hours=25)
        assert (
            throttle.reserve_attempt(conn, key=KEYS["pw-ip:x"], policy=PASSWORD_ADDRESS, now=later).failures
            == 1
        )
