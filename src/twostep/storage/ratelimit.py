"""Fixed-window request counters per client address (SEC-62), one upsert per request."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from twostep.storage.db import first
from twostep.storage.tables import rate_windows


@functools.lru_cache(maxsize=4)
def _hit_statement(dialect: str) -> Any:
    """Built once per dialect: it runs on every sign-in ceremony request."""
    t = rate_windows
    ins = (postgresql.insert(t) if dialect == "postgresql" else sqlite.insert(t)).values(
        key=bindparam("b_key"), count=1, expires_at=bindparam("b_expires", type_=t.c.expires_at.type)
    )
    return ins.on_conflict_do_update(index_elements=[t.c.key], set_={"count": t.c.count + 1}).returning(
        t.c.count
    )


def hit(conn: Connection, *, key: str, expires_at: datetime) -> int:
    """Count one request in the window ``key``; returns the count including it."""
    params = {"b_key": key, "b_expires": expires_at}
    row = first(conn, _hit_statement(conn.dialect.name), params)
    assert row is not None  # an upsert's RETURNING always has its row
    return int(row[0])


def delete_expired(conn: Connection, *, now: datetime, limit: int) -> int:
    """At most ``limit`` windows that have ended (H08)."""
    dead = select(rate_windows.c.key).where(rate_windows.c.expires_at <= now).limit(limit)
    return int(
        conn.execute(delete(rate_windows).where(rate_windows.c.key.in_(dead.scalar_subquery()))).rowcount
    )
