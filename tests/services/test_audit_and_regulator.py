"""The two helpers every use case shares, on SQLite and PostgreSQL: the Audit that records an event (and its
e-mail) in the caller's transaction, and the regulator's reserve and settle."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.support import STRONG_PASSWORD, unique_client, unique_username
from twostep.core.errors import TooManyAttempts
from twostep.core.events import EventType
from twostep.core.throttle import PASSWORD_USER
from twostep.services import account, regulator
from twostep.services.audit import Audit
from twostep.services.context import Context
from twostep.services.notifications import NOTIFIED
from twostep.services.regulator import Outcome
from twostep.storage import accounts, events, throttle
from twostep.storage.tables import outbox, throttles


def _account(ctx: Context, *, email: str | None) -> int:
    name = unique_username("audit")
    account.sign_up(ctx, username=name, password=STRONG_PASSWORD, email=email, client=unique_client())
    with ctx.db.transaction() as conn:
        found = accounts.by_username(conn, name)
    assert found is not None
    return found.id


def _subjects(ctx: Context, account_id: int) -> list[str]:
    with ctx.db.transaction() as conn:
        return [
            r.subject for r in conn.execute(select(outbox.c.subject).where(outbox.c.account_id == account_id))
        ]


def test_an_audit_records_the_event_and_queues_its_email_in_the_callers_transaction(ctx: Context) -> None:
    account_id = _account(ctx, email="audit@example.test")
    client = unique_client()
    audit = Audit(ctx, account_id, client, ctx.now())
    with ctx.db.transaction() as conn:
        audit.record(conn, EventType.PASSWORD_CHANGED, other_sessions_ended=2, factor_id=None)
        audit.record(conn, EventType.SIGNED_IN, method="password", session="s1")  # not told by e-mail
        audit.record(conn, EventType.FACTOR_ADDED, notify=False, factor_id="f1")  # told by another event
    with ctx.db.transaction() as conn:
        logged = events.list_for(conn, account_id)
    assert [(e.type, e.detail) for e in logged[:3]] == [
        (EventType.FACTOR_ADDED, {"factor_id": "f1"}),
        (EventType.SIGNED_IN, {"method": "password", "session": "s1"}),
        (EventType.PASSWORD_CHANGED, {"other_sessions_ended": 2}),  # a None value is left out
    ]
    assert all((e.ip, e.user_agent) == (client.ip, client.user_agent) for e in logged[:3])
    assert _subjects(ctx, account_id) == [NOTIFIED[EventType.PASSWORD_CHANGED].subject]


def test_an_event_and_its_email_are_rolled_back_together(ctx: Context) -> None:
    account_id = _account(ctx, email="rollback@example.test")
    audit = Audit(ctx, account_id, unique_client(), ctx.now())
    with pytest.raises(RuntimeError), ctx.db.transaction() as conn:
        audit.record(conn, EventType.TWO_FACTOR_DISABLED)
        raise RuntimeError("the use case failed after recording")
    with ctx.db.transaction() as conn:
        types = [e.type for e in events.list_for(conn, account_id)]
    assert EventType.TWO_FACTOR_DISABLED not in types
    assert _subjects(ctx, account_id) == []


def test_the_failure_that_starts_the_backoff_also_records_the_lock(ctx: Context) -> None:
    account_id = _account(ctx, email=None)
    audit = Audit(ctx, account_id, unique_client(), ctx.now())
    with ctx.db.transaction() as conn:
        for failures in range(1, 7):
            audit.second_factor_failed(conn, EventType.SECOND_FACTOR_FAILED, failures=failures, notify=False)
        logged = [e.type for e in events.list_for(conn, account_id)]
    assert logged.count(EventType.SECOND_FACTOR_FAILED) == 6
    assert logged.count(EventType.SECOND_FACTOR_LOCKED) == 1  # at the fifth, when the waits begin


def _failures(ctx: Context, *counters: regulator.Counter) -> list[int]:
    with ctx.db.transaction() as conn:
        return [throttle.failures(conn, key=c.key) for c in counters]


def test_reserve_counts_every_counter_and_settle_resets_or_refunds(ctx: Context) -> None:
    """H07: a success refunds the address's counter (shared by many accounts) and resets the others; an
    attempt never evaluated (busy, H03) is given back on every counter."""
    counters = regulator.password(unique_username(), "192.0.2.7", known_browser=False)
    assert len(counters) == 3
    now = ctx.now()
    with ctx.db.transaction() as conn:
        for _ in range(3):
            regulator.reserve(conn, *counters, now=now)
    assert _failures(ctx, *counters) == [3, 3, 3]
    with ctx.db.transaction() as conn:
        regulator.settle(conn, *counters, outcome=Outcome.NOT_EVALUATED)
    assert _failures(ctx, *counters) == [2, 2, 2]
    with ctx.db.transaction() as conn:
        regulator.settle(conn, *counters, outcome=Outcome.FAILED)
    assert _failures(ctx, *counters) == [2, 2, 2]
    with ctx.db.transaction() as conn:
        regulator.settle(conn, *counters, outcome=Outcome.SUCCEEDED)
    assert _failures(ctx, *counters) == [1, 0, 0]


def test_a_counter_that_must_wait_gives_back_the_ones_counted_before_it(ctx: Context) -> None:
    username = unique_username()
    counters = regulator.password(username, "192.0.2.8", known_browser=False)
    ceiling = counters[2]
    assert ceiling.policy == PASSWORD_USER
    now = ctx.now()
    with ctx.db.transaction() as conn:  # the username's ceiling is reached from other addresses
        conn.execute(
            throttles.insert().values(
                key=ceiling.key, failures=PASSWORD_USER.free, next_at=now + timedelta(hours=1), updated_at=now
            )
        )
    with ctx.db.transaction() as conn:
        with pytest.raises(TooManyAttempts) as refused:
            regulator.reserve(conn, *counters, now=now)
        assert [throttle.failures(conn, key=c.key) for c in counters[:2]] == [0, 0]
    assert refused.value.retry_after == 3600
    # A browser that signed in to the account before does not meet the ceiling (H07).
    known = regulator.password(username, "192.0.2.8", known_browser=True)
    with ctx.db.transaction() as conn:
        assert regulator.reserve(conn, *known, now=now) == 1


def test_the_edge_window_refuses_past_its_limit_and_no_limit_is_off(ctx: Context) -> None:
    client = unique_client()
    now = ctx.now().replace(second=5)
    window = regulator.Window(client.ip, per_minute=2)
    with ctx.db.transaction() as conn:
        regulator.reserve(conn, window, now=now)
        regulator.reserve(conn, window, now=now)
    with pytest.raises(TooManyAttempts), ctx.db.transaction() as conn:
        regulator.reserve(conn, window, now=now)
    with ctx.db.transaction() as conn:
        for _ in range(5):
            regulator.reserve(conn, regulator.Window(client.ip, per_minute=0), now=now)
