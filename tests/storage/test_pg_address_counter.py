"""The per-address request counter on PostgreSQL (SEC-62, issue 16): it commits on its own, ahead of the
ceremony's transaction, on the ceremony's own connection (``storage.db.ahead_of_transaction``), so that its
row, which every request from one address updates, is never locked across a ceremony, and a step checks out
one connection, not two."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, func, select

from tests.storage.test_driver_statements import account_of
from tests.support.services import code_at, pending_login, with_totp
from twostep.core.clock import SettableClock
from twostep.services import sign_in
from twostep.services.context import Context
from twostep.storage import events, ratelimit
from twostep.storage.db import ahead_of_transaction, first
from twostep.storage.tables import rate_windows, security_events


def _pg_only(ctx: Context) -> None:
    if ctx.db.dialect != "postgresql":
        pytest.skip("on SQLite the counter is the transaction's (its writes are serialised anyway)")


def _window_count(ctx: Context, key: str) -> int | None:
    with ctx.db.read() as conn:
        return conn.execute(select(rate_windows.c.count).where(rate_windows.c.key == key)).scalar()


def _events_count() -> Any:
    return select(func.count()).select_from(security_events)


def test_SEC_62_the_address_counter_commits_ahead_of_the_ceremony_and_holds_no_lock(ctx: Context) -> None:
    """Counted even when the ceremony's transaction rolls back; its row is not locked while the ceremony
    runs (issue 16, the hot row)."""
    _pg_only(ctx)
    key = f"192.0.2.{id(ctx) % 250}:{int(ctx.now().timestamp())}"
    expires = ctx.now() + timedelta(minutes=1)
    conninfo = ctx.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    account_id = account_of(ctx)
    with pytest.raises(RuntimeError), ctx.db.transaction() as conn:
        with ahead_of_transaction(conn):
            assert ratelimit.hit(conn, key=key, expires_at=expires) == 1
        events.insert(
            conn, account_id=account_id, type_="test", at=ctx.now(), ip="192.0.2.1", user_agent="t", detail={}
        )
        assert first(conn, _events_count(), {}) is not None  # the ceremony's transaction is open
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
    _pg_only(ctx)
    with pytest.raises(RuntimeError, match="has begun"), ctx.db.transaction() as conn:
        first(conn, _events_count(), {})
        with ahead_of_transaction(conn):
            pass


def test_the_totp_step_checks_out_one_connection(ctx: Context, clock: SettableClock) -> None:
    _pg_only(ctx)
    user = with_totp(ctx, clock)
    token = pending_login(ctx, user)
    code = code_at(user.secret, clock.now())
    checkouts: list[int] = []

    def count(*_: Any) -> None:
        checkouts.append(1)

    event.listen(ctx.db.engine, "checkout", count)
    try:
        result = sign_in.totp_step(
            replace(ctx, rate_limit_per_minute=1000), token=token, code=code, client=user.client
        )
    finally:
        event.remove(ctx.db.engine, "checkout", count)
    assert result.status == "signed_in"
    assert len(checkouts) == 1
