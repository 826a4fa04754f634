"""Fixed-window request counters per client address (SEC-62), one upsert per request."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete
from sqlalchemy.dialects import postgresql, sqlite

from twostep.storage.tables import rate_windows


def hit(conn: Connection, *, key: str, expires_at: datetime) -> int:
    """Count one request in the window ``key``; returns the count including it."""
    t = rate_windows
    ins = (postgresql.insert(t) if conn.dialect.name == "postgresql" else sqlite.insert(t)).values(
        key=key, count=1, expires_at=expires_at
    )
    stmt = ins.on_conflict_do_update(index_elements=[t.c.key], set_={"count": t.c.count + 1}).returning(
        t.c.count
    )
    return int(conn.execute(stmt).scalar_one())


def delete_expired(conn: Connection, *, now: datetime) -> None:
    conn.execute(delete(rate_windows).where(rate_windows.c.expires_at <= now))
