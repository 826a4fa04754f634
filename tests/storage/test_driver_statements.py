"""Statements run on the driver (``storage.db.run``, issue 16): the driver is given exactly the SQL text and
the values SQLAlchemy's own execution gives it, rows come back converted as SQLAlchemy converts them, driver
errors are SQLAlchemy's, and on SQLite a transaction in an event loop's thread (on the connection the
thread keeps) commits, rolls back and mixes with SQLAlchemy's statements as ``engine.begin`` does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import IntegrityError

from tests.storage.test_read_row import run as in_new_loop
from tests.support.services import signed_up
from twostep.core.kinds import SessionKind
from twostep.services.context import Context, hash_token
from twostep.storage import sessions as store
from twostep.storage import throttle
from twostep.storage.db import Database, first, run, send
from twostep.storage.tables import accounts, sessions


@contextmanager
def sent(db: Database) -> Iterator[list[tuple[str, Any]]]:
    """What the driver is given (SQLAlchemy's ``before_cursor_execute``, which ``run`` fires too)."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def account_of(ctx: Context) -> int:
    username = signed_up(ctx).username
    with ctx.db.read() as conn:
        return int(conn.execute(select(accounts.c.id).where(accounts.c.username == username)).scalar_one())


def row_of(ctx: Context, token_hash: str) -> store.SessionRow:
    return store.SessionRow(
        token_hash=token_hash,
        public_id="p" + token_hash[:20],
        account_id=account_of(ctx),
        kind=SessionKind.PENDING,
        created_at=ctx.now(),
        signed_in_at=ctx.now(),
        last_seen_at=ctx.now(),
        expires_at=ctx.now() + timedelta(minutes=5),
        second_factor=None,
        verified_until=None,
        reauth_until=None,
        alerted=False,
        ip="192.0.2.1",
        user_agent="test",
        passkey_upgrade_until=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def test_the_driver_gets_what_sqlalchemy_gives_it_and_rows_come_back_alike(ctx: Context) -> None:
    token_hash = hash_token("driver-statements-token-1")
    row = row_of(ctx, token_hash)
    params = {"b_hash": token_hash, "b_now": ctx.now()}
    with ctx.db.transaction() as conn:
        with sent(ctx.db) as ours:
            run(conn, store._INSERT, row.__dict__)
            mine = first(conn, store._GET_PENDING, params)
        with sent(ctx.db) as theirs:
            conn.execute(sessions.delete().where(sessions.c.token_hash == token_hash))
            conn.execute(store._INSERT, row.__dict__)
            expected = conn.execute(store._GET_PENDING, params).first()
    assert expected is not None and mine is not None
    assert mine == tuple(expected)
    assert store.SessionRow(*mine) == row
    assert [s for s in ours] == [s for s in theirs if not s[0].startswith("DELETE")]


def test_driver_errors_are_sqlalchemys_and_leave_nothing_written(ctx: Context) -> None:
    token_hash = hash_token("driver-statements-token-2")
    row = row_of(ctx, token_hash)
    with ctx.db.transaction() as conn:
        run(conn, store._INSERT, row.__dict__)
    with pytest.raises(IntegrityError), ctx.db.transaction() as conn:
        throttle.reset(conn, key="k")  # a statement before the failing one: rolled back with it
        run(conn, store._INSERT, {**row.__dict__, "public_id": "other"})
    with ctx.db.read() as conn:
        assert conn.execute(
            select(sessions.c.public_id).where(sessions.c.token_hash == token_hash)
        ).all() == [(row.public_id,)]


def test_a_loops_transaction_commits_rolls_back_and_mixes_with_sqlalchemy(ctx: Context) -> None:
    """In an event loop's thread on SQLite the transaction is begun and ended on the driver; the statements
    sent are those of engine.begin: BEGIN IMMEDIATE, then COMMIT or ROLLBACK."""
    kept, dropped = hash_token("driver-statements-kept"), hash_token("driver-statements-dropped")
    kept_row, dropped_row = row_of(ctx, kept), row_of(ctx, dropped)

    async def in_loop() -> list[tuple[str, Any]]:
        with sent(ctx.db) as seen:
            with ctx.db.transaction() as conn:
                run(conn, store._INSERT, kept_row.__dict__)
                conn.execute(text("SELECT 1"))  # SQLAlchemy's own statement in the same transaction
            with pytest.raises(RuntimeError), ctx.db.transaction() as conn:
                run(conn, store._INSERT, dropped_row.__dict__)
                raise RuntimeError("the use case failed")
            with ctx.db.transaction() as conn:  # the connection is usable again
                assert first(conn, store._GET_PENDING, {"b_hash": kept, "b_now": ctx.now()}) is not None
        return seen

    seen = in_new_loop(in_loop())
    with ctx.db.read() as conn:
        found = {
            r[0]
            for r in conn.execute(
                select(sessions.c.token_hash).where(sessions.c.token_hash.in_([kept, dropped]))
            )
        }
    assert found == {kept}
    words = [statement.split()[0].upper() for statement, _ in seen]
    if ctx.db.dialect == "sqlite":
        assert words[0] == "BEGIN" and "ROLLBACK" in words
        assert words.count("BEGIN") == 3
    else:
        assert "BEGIN" not in words  # PostgreSQL's transactions are psycopg's, not statements


def test_a_loops_transaction_whose_commit_fails_leaves_the_next_one_working(ctx: Context) -> None:
    """A COMMIT can fail (here a deferred foreign key, checked at COMMIT): the transaction is rolled back, the
    error reaches the caller, and the thread's next transaction begins as usual."""
    if ctx.db.dialect != "sqlite":
        pytest.skip("the loop's own connection is SQLite's")
    with ctx.db.transaction() as conn:
        conn.execute(text("CREATE TABLE t_parent (id INTEGER PRIMARY KEY)"))
        conn.execute(
            text(
                "CREATE TABLE t_child (parent INTEGER REFERENCES t_parent (id) DEFERRABLE INITIALLY DEFERRED)"
            )
        )

    async def in_loop() -> list[Any]:
        outcomes: list[Any] = []
        try:
            with ctx.db.transaction() as conn:
                conn.execute(text("INSERT INTO t_child (parent) VALUES (42)"))  # no such parent: COMMIT fails
        except IntegrityError:
            outcomes.append("refused")
        try:
            with ctx.db.transaction() as conn:
                send(conn, "INSERT INTO t_child (parent) VALUES (43)", ())  # the same, on the driver only
        except IntegrityError:
            outcomes.append("refused")
        with ctx.db.transaction() as conn:
            conn.execute(text("INSERT INTO t_parent (id) VALUES (1)"))
            conn.execute(text("INSERT INTO t_child (parent) VALUES (1)"))
        with ctx.db.transaction() as conn:
            outcomes.append(conn.execute(text("SELECT count(*) FROM t_child")).scalar_one())
        return outcomes

    assert in_new_loop(in_loop()) == ["refused", "refused", 1]
