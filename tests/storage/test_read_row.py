"""``Database.read_row`` and ``read_row_async``: the session lookup of every request run on the driver itself
(issue 13, F1) gives exactly what SQLAlchemy's own execution gives, in a thread, in an event loop and on
PostgreSQL's asyncio driver, and comes back after the database drops its connections."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.services import signed_up
from twostep.core.errors import Unavailable
from twostep.services.context import Context, hash_token
from twostep.storage.sessions import lookup_statement


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """``coroutine`` in a new event loop in a thread of its own (the test's thread may have a loop running:
    Playwright's, in the browser tests of the same session)."""
    out: list[Any] = []
    failed: list[BaseException] = []

    def target() -> None:
        try:
            out.append(asyncio.run(coroutine))
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=60)
    if failed:
        raise failed[0]
    assert out, "the coroutine did not finish"
    return out[0]


def by_sqlalchemy(ctx: Context, token_hash: str) -> dict[str, Any] | None:
    with ctx.db.read() as conn:
        row = conn.execute(lookup_statement(), {"b_hash": token_hash}).first()
    return None if row is None else dict(row._mapping)


def test_read_row_gives_what_sqlalchemy_gives_in_a_thread_a_loop_and_async(ctx: Context) -> None:
    user = signed_up(ctx)
    token_hash = hash_token(user.token)
    expected = by_sqlalchemy(ctx, token_hash)
    assert expected is not None and expected["username"] == user.username
    assert expected["signed_in_at"].tzinfo is not None

    async def in_loop() -> tuple[Any, Any]:
        return ctx.db.read_row(lookup_statement(), {"b_hash": token_hash}), await ctx.db.read_row_async(
            lookup_statement(), {"b_hash": token_hash}
        )

    in_thread = ctx.db.read_row(lookup_statement(), {"b_hash": token_hash})
    looped, awaited = run(in_loop())
    for got in (in_thread, looped, awaited):
        assert got is not None
        # has_factor is a boolean expression: SQLite gives 0/1, read as such by both; compare as truth.
        assert {**got, "has_factor": bool(got["has_factor"])} == {
            **expected,
            "has_factor": bool(expected["has_factor"]),
        }
    assert run(in_loop()) == (looped, awaited)
    assert ctx.db.read_row(lookup_statement(), {"b_hash": "0" * 64}) is None


def test_read_row_async_comes_back_after_postgresql_drops_its_connections(ctx: Context) -> None:
    if ctx.db.dialect != "postgresql":
        pytest.skip("PostgreSQL's asyncio connections")
    user = signed_up(ctx)
    params = {"b_hash": hash_token(user.token)}

    async def scenario() -> list[str]:
        seen: list[str] = []
        # Several idle connections, as after a burst.
        rows = await asyncio.gather(*(ctx.db.read_row_async(lookup_statement(), params) for _ in range(4)))
        assert all(r is not None for r in rows)
        with ctx.db.engine.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND application_name = ''"
                )
            )
        for _ in range(3):
            try:
                row = await ctx.db.read_row_async(lookup_statement(), params)
                seen.append("row" if row is not None else "none")
            except Unavailable:
                seen.append("unavailable")
        return seen

    # At most the first read after the drop fails (503 to that one request); the idle ones are not tried.
    seen = run(scenario())
    assert seen[-2:] == ["row", "row"] and seen.count("unavailable") <= 1, seen
