"""Authorization requests waiting for the browser to sign in (the validated parameters, as JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select

from twostep.storage.tables import oidc_pending


@dataclass(frozen=True)
class PendingRow:
    id: str
    params: dict[str, str]
    created_at: datetime
    expires_at: datetime


def add(conn: Connection, row: PendingRow) -> None:
    conn.execute(
        insert(oidc_pending).values(
            id=row.id, params=json.dumps(row.params), created_at=row.created_at, expires_at=row.expires_at
        )
    )


def get(conn: Connection, *, pending_id: str, now: datetime) -> PendingRow | None:
    r = conn.execute(
        select(oidc_pending).where(oidc_pending.c.id == pending_id, oidc_pending.c.expires_at > now)
    ).first()
    if r is None:
        return None
    return PendingRow(r.id, dict(json.loads(r.params)), r.created_at, r.expires_at)


def take(conn: Connection, *, pending_id: str, now: datetime) -> bool:
    """Single use: the request that deletes it continues it."""
    result = conn.execute(
        delete(oidc_pending).where(oidc_pending.c.id == pending_id, oidc_pending.c.expires_at > now)
    )
    return result.rowcount == 1


def sweep(conn: Connection, *, now: datetime) -> int:
    return int(conn.execute(delete(oidc_pending).where(oidc_pending.c.expires_at <= now)).rowcount)
