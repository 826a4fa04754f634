"""PostgreSQL transactions with fewer round trips (``storage.db``, issue 16): the ``BEGIN`` goes with the
first statement, the writes nobody reads (``defer``) go with the next statement or with the ``COMMIT``, and
the per-address counter commits on its own ahead of the ceremony's transaction (``ahead_of_transaction``).
Whatever is kept unsent, the transaction stays one: its statements run in order, a deferred write that fails
fails the commit and leaves nothing half-written, a rollback sends nothing of it. On SQLite each runs as it
comes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from tests.storage.test_driver_statements import account_of, sent
from tests.support.services import code_at, pending_login, with_totp
from twostep.core.clock import SettableClock
from twostep.services import sign_in
from twostep.services.context import Context
from twostep.storage import events, ratelimit
from twostep.storage.db import ahead_of_transaction, first
from twostep.storage.tables import rate_windows, security_events


def _event(ctx: Context, conn: Any, account_id: int, kind: str) -> None:
    events.insert(
        conn, account_id=account_id, type_=kind, at=ctx.now(), ip="192.0.2.1", user_agent="test", detail={}
    )


def _events_of(ctx: Context, account_id: int) -> list[str]:
    with ctx.db.read() as conn:
        rows = conn.execute(
            select(security_events.c.type)
            .where(security_events.c.account_id == account_id)
            .order_by(security_events.c.id)
        )
        return [r[0] for r in rows]


def _count_statement() -> Any:
    return select(func.count()).select_from(security_events).where(security_events.c.account_id == 0)


def test_a_deferred_write_is_seen_by_the_next_statements_of_its_transaction(ctx: Context) -> None:
    account_id = account_of(ctx)
    before = len(_events_of(ctx, account_id))
    mine = select(func.count()).select_from(security_events).where(security_events.c.account_id == account_id)
    with ctx.db.transaction() as conn:
        _event(ctx, conn, account_id, "test_first")
        seen_by_driver = first(conn, mine, {})  # a statement on the driver: in the same round trip
        _event(ctx, conn, account_id, "test_second")
        seen_by_sqlalchemy = conn.execute(mine).scalar_one()  # one of SQLAlchemy's: sent after it
        _event(ctx, conn, account_id, "test_third")
    assert seen_by_driver == (before + 1,)
    assert seen_by_sqlalchemy == before + 2
    assert _events_of(ctx, account_id)[before:] == ["test_first", "test_second", "test_third"]


def test_a_deferred_write_that_fails_fails_the_commit_and_nothing_is_written(ctx: Context) -> None:
    account_id = account_of(ctx)
    before = _events_of(ctx, account_id)
    with pytest.raises(IntegrityError), ctx.db.transaction() as conn:
        _event(ctx, conn, account_id, "test_kept_only_with_the_rest")
        _event(ctx, conn, 2_000_000_000, "test_no_such_account")  # a foreign key that does not hold
    assert _events_of(ctx, account_id) == before
    with ctx.db.transaction() as conn:  # the connection went back to the pool fit for use
        _event(ctx, conn, account_id, "test_after")
    with ctx.db.read() as conn:  # and reads still run in a transaction of the driver's
        assert conn.execute(text("SELECT 1")).scalar_one() == 1
    assert _events_of(ctx, account_id) == [*before, "test_after"]


def test_a_rolled_back_transaction_sends_nothing_it_kept(ctx: Context) -> None:
    account_id = account_of(ctx)
    before = _events_of(ctx, account_id)
    with sent(ctx.db) as seen, pytest.raises(RuntimeError), ctx.db.transaction() as conn:
        _event(ctx, conn, account_id, "test_never")
        raise RuntimeError("the use case fails")
    if ctx.db.dialect == "postgresql":
        assert seen == []  # kept unsent, then dropped
    assert _events_of(ctx, account_id) == before


def _window_count(ctx: Context, key: str) -> int | None:
    with ctx.db.read() as conn:
        return conn.execute(select(rate_windows.c.count).where(rate_windows.c.key == key)).scalar()


def test_the_address_counter_commits_ahead_of_the_transaction_and_holds_no_lock(ctx: Context) -> None:
    """SEC-62's counter on PostgreSQL: counted even when the ceremony's transaction rolls back, and its row is
    not locked while the ceremony runs (issue 16, the hot row)."""
    if ctx.db.dialect != "postgresql":
        pytest.skip("on SQLite the counter is the transaction's (its writes are serialised anyway)")
    key = f"192.0.2.{id(ctx) % 250}:{int(ctx.now().timestamp())}"
    expires = ctx.now() + timedelta(minutes=1)
    conninfo = ctx.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    account_id = account_of(ctx)
    with pytest.raises(RuntimeError), ctx.db.transaction() as conn:
        with ahead_of_transaction(conn):
            assert ratelimit.hit(conn, key=key, expires_at=expires) == 1
        _event(ctx, conn, account_id, "test_ceremony")
        first(conn, _count_statement(), {})  # the ceremony's transaction has begun, and is open
        with psycopg.connect(conninfo, autocommit=True) as other:
            other.execute("SET lock_timeout = '2s'")
            # Another worker counts the same address meanwhile, without waiting for this ceremony.
            row = other.execute(
                "UPDATE rate_windows SET count = count + 1 WHERE key = %s RETURNING count", (key,)
            )
            assert row.fetchone() == (2,)
        raise RuntimeError("the ceremony fails")
    assert _window_count(ctx, key) == 2


def test_ahead_of_transaction_must_come_first(ctx: Context) -> None:
    if ctx.db.dialect != "postgresql":
        pytest.skip("PostgreSQL's transactions")
    with pytest.raises(RuntimeError, match="has begun"), ctx.db.transaction() as conn:
        first(conn, _count_statement(), {})
        with ahead_of_transaction(conn):
            pass


@contextmanager
def round_trips() -> Iterator[list[list[str]]]:
    """Each round trip to PostgreSQL, as the first word of each statement in it: a statement the driver
    executes on its own is one, a pipeline (``storage.db._flush``) is one. A spy on the driver's methods;
    nothing is changed."""
    trips: list[list[str]] = []
    raw_pipeline, raw_execute = psycopg.Connection.pipeline, psycopg.Connection.execute

    def pipeline(self: psycopg.Connection[Any]) -> Any:
        trips.append([])
        return raw_pipeline(self)

    def execute(self: psycopg.Connection[Any], query: Any, params: Any = None, **kw: Any) -> Any:
        word = str(query).split()[0]
        if self._pipeline is not None:
            trips[-1].append(word)
        else:
            trips.append([word])
        return raw_execute(self, query, params, **kw)

    psycopg.Connection.pipeline = pipeline  # type: ignore[method-assign]
    psycopg.Connection.execute = execute  # type: ignore[method-assign]
    try:
        yield trips
    finally:
        psycopg.Connection.pipeline = raw_pipeline  # type: ignore[method-assign]
        psycopg.Connection.execute = raw_execute  # type: ignore[method-assign]


def test_the_totp_step_takes_seven_round_trips(ctx: Context, clock: SettableClock) -> None:
    """Eleven statements (bench/README.md) in seven round trips: the address's counter on its own, the
    ``BEGIN`` with the pending sign-in, the writes nobody reads with the ``COMMIT``; no pre-ping."""
    if ctx.db.dialect != "postgresql":
        pytest.skip("PostgreSQL's round trips")
    user = with_totp(ctx, clock)
    token = pending_login(ctx, user)
    code = code_at(user.secret, clock.now())
    with round_trips() as trips:
        result = sign_in.totp_step(
            replace(ctx, rate_limit_per_minute=1000), token=token, code=code, client=user.client
        )
    assert result.status == "signed_in"
    assert trips == [
        ["INSERT"],  # the address's request counter, committed on its own (SEC-62)
        ["BEGIN", "SELECT"],  # the pending sign-in
        ["INSERT"],  # the account's attempt counter (SEC-27)
        ["SELECT"],  # the account's factors
        ["UPDATE"],  # the code's time step, compare-and-set (SEC-28)
        ["DELETE"],  # the pending sign-in, consumed
        ["INSERT", "DELETE", "INSERT", "COMMIT"],  # the session, the counter's reset, the event
    ]
