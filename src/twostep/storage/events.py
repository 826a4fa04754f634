"""Security events (the account's audit log) and the notification outbox."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from twostep.storage.db import run
from twostep.storage.tables import security_events

_INSERT = security_events.insert()


@dataclass(frozen=True)
class EventRow:
    type: str
    at: datetime
    ip: str
    user_agent: str
    detail: dict[str, Any]


def insert(
    conn: Connection,
    *,
    account_id: int,
    type_: str,
    at: datetime,
    ip: str,
    user_agent: str,
    detail: dict[str, Any],
) -> None:
    run(
        conn,
        _INSERT,
        {
            "account_id": account_id,
            "type": type_,
            "at": at,
            "ip": ip,
            "user_agent": user_agent,
            "detail": json.dumps(detail),
        },
    )


def list_for(conn: Connection, account_id: int, *, limit: int = 200) -> list[EventRow]:
    rows = conn.execute(
        select(
            security_events.c.type,
            security_events.c.at,
            security_events.c.ip,
            security_events.c.user_agent,
            security_events.c.detail,
        )
        .where(security_events.c.account_id == account_id)
        .order_by(security_events.c.id.desc())
        .limit(limit)
    ).all()
    return [EventRow(r.type, r.at, r.ip, r.user_agent, json.loads(r.detail)) for r in rows]


def last_at(conn: Connection, account_id: int, type_: str) -> datetime | None:
    """When the account's latest event of ``type_`` happened, or None."""
    value = conn.execute(
        select(func.max(security_events.c.at)).where(
            security_events.c.account_id == account_id, security_events.c.type == type_
        )
    ).scalar()
    return value if isinstance(value, datetime) else None
