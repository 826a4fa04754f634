"""Group memberships: one row per (account, group)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, String, delete, insert, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from twostep.storage.tables import account_groups


def of_account(conn: Connection, account_id: int) -> list[str]:
    """The account's groups, sorted."""
    rows = conn.execute(
        select(account_groups.c.name)
        .where(account_groups.c.account_id == account_id)
        .order_by(account_groups.c.name)
    )
    return [row.name for row in rows]


def add(conn: Connection, account_id: int, names: Iterable[str], *, now: datetime) -> list[str]:
    """Put the account in each group it is not in yet; returns the groups added, sorted."""
    present = set(of_account(conn, account_id))
    added = sorted(set(names) - present)
    if added:
        conn.execute(
            insert(account_groups),
            [{"account_id": account_id, "name": name, "added_at": now} for name in added],
        )
    return added


def remove(conn: Connection, account_id: int, names: Iterable[str]) -> list[str]:
    """Take the account out of each group named; returns the groups it was in and left, sorted."""
    wanted = sorted(set(names))
    if not wanted:
        return []
    rows = conn.execute(
        delete(account_groups)
        .where(account_groups.c.account_id == account_id, account_groups.c.name.in_(wanted))
        .returning(account_groups.c.name)
    )
    return sorted(row.name for row in rows)


def aggregated(account_id: ColumnElement[int]) -> ColumnElement[str | None]:
    """A scalar subquery of the account's groups joined by commas (NULL for none), for statements that read
    a session and its account in one round trip (group names never contain a comma: core.names)."""
    return (
        select(_CommaJoined(account_groups.c.name).label("aggregate_strings_1"))
        .where(account_groups.c.account_id == account_id)
        .scalar_subquery()
    )


class _CommaJoined(FunctionElement[str]):
    """``aggregate_strings(name, ",")`` with the separator written in the SQL text: SQLAlchemy's own sends it
    as a literal-execute parameter, which re-renders the statement at every execution (the session lookup of
    every request, issue 13's forward authentication)."""

    type = String()
    inherit_cache = True
    name = "comma_joined"


@compiles(_CommaJoined, "sqlite")
def _comma_joined_sqlite(element: _CommaJoined, compiler: SQLCompiler, **kw: Any) -> str:
    return f"group_concat({compiler.process(element.clauses, **kw)}, ',')"


@compiles(_CommaJoined, "postgresql")
def _comma_joined_postgresql(element: _CommaJoined, compiler: SQLCompiler, **kw: Any) -> str:
    return f"string_agg({compiler.process(element.clauses, **kw)}, ',')"


def split(value: str | None) -> tuple[str, ...]:
    """The groups of an ``aggregated`` value, sorted."""
    return tuple(sorted(value.split(","))) if value else ()
