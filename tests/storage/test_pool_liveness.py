"""PostgreSQL's pooled connections are checked without a round trip (``storage.db.is_alive``, issue 16): a
connection the server has ended is never handed to a request, so that a restart of PostgreSQL, or an
administrator ending every backend, costs no request a 503."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from sqlalchemy import select, text

from tests.support.services import signed_up
from twostep.services.context import Context
from twostep.storage.db import is_alive
from twostep.storage.tables import accounts


def _pg_only(ctx: Context) -> None:
    if ctx.db.dialect != "postgresql":
        pytest.skip("PostgreSQL's connection pool")


def _conninfo(ctx: Context) -> str:
    return ctx.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def _end_backends(ctx: Context, pids: set[int]) -> None:
    """End ``pids`` as an administrator would (``pg_terminate_backend``), from a connection outside the
    pool, and wait until they are gone."""
    with psycopg.connect(_conninfo(ctx), autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            left = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (list(pids),))
            if left.fetchone() == (0,):
                return
            time.sleep(0.02)
    raise AssertionError(f"backends {pids} did not end")


def _pooled_pids(ctx: Context, n: int) -> set[int]:
    """Check out ``n`` connections at once (as a burst does) and return them to the pool idle."""
    conns = [ctx.db.engine.connect() for _ in range(n)]
    try:
        return {int(c.execute(text("SELECT pg_backend_pid()")).scalar_one()) for c in conns}
    finally:
        for c in conns:
            c.close()


def test_every_transaction_succeeds_after_postgresql_ends_the_pooled_connections(ctx: Context) -> None:
    _pg_only(ctx)
    user = signed_up(ctx)
    pids = _pooled_pids(ctx, 4)
    assert len(pids) == 4
    _end_backends(ctx, pids)
    seen: list[Any] = []
    for _ in range(6):  # more than the connections that were ended: each would be tried in turn
        with ctx.db.transaction() as conn:
            found = select(accounts.c.username).where(accounts.c.username == user.username)
            seen.append(conn.execute(found).scalar_one())
            seen.append(int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one()))
    assert seen[0::2] == [user.username] * 6  # no Unavailable (503) raised
    assert not pids & set(seen[1::2])  # and no ended connection was used


def test_is_alive_tells_an_ended_connection_from_an_idle_one(ctx: Context) -> None:
    _pg_only(ctx)
    with psycopg.connect(_conninfo(ctx)) as idle, psycopg.connect(_conninfo(ctx)) as ended:
        idle.execute("SELECT 1").fetchone()
        idle.rollback()
        assert is_alive(idle)
        pid = ended.info.backend_pid
        assert is_alive(ended)
        _end_backends(ctx, {pid})
        assert not is_alive(ended)
        assert is_alive(idle)  # reading nothing changed nothing
        assert idle.execute("SELECT 2").fetchone() == (2,)
        idle.rollback()
        idle.execute("SELECT 3").fetchone()  # opens a transaction (the driver is not in autocommit)
        assert not is_alive(idle)  # never handed on with a transaction open
    assert not is_alive(idle)  # closed
