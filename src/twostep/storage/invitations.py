"""Invitations of `twostep invite`: stored as the token's SHA-256, used once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, update

from twostep.storage.tables import invitations


@dataclass(frozen=True)
class InvitationRow:
    id: int
    username: str | None
    email: str | None
    groups: tuple[str, ...]
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None


def _row(row: Row[*tuple[Any, ...]] | None) -> InvitationRow | None:
    if row is None:
        return None
    return InvitationRow(
        id=row.id,
        username=row.username,
        email=row.email,
        groups=tuple(json.loads(row.groups)),
        created_at=row.created_at,
        expires_at=row.expires_at,
        used_at=row.used_at,
    )


_COLUMNS = (
    invitations.c.id,
    invitations.c.username,
    invitations.c.email,
    invitations.c.groups,
    invitations.c.created_at,
    invitations.c.expires_at,
    invitations.c.used_at,
)


def create(
    conn: Connection,
    *,
    token_hash: str,
    username: str | None,
    email: str | None,
    groups: list[str],
    now: datetime,
    expires_at: datetime,
) -> int:
    result = conn.execute(
        insert(invitations)
        .values(
            token_hash=token_hash,
            username=username,
            email=email,
            groups=json.dumps(sorted(set(groups))),
            created_at=now,
            expires_at=expires_at,
            used_at=None,
        )
        .returning(invitations.c.id)
    )
    return int(result.scalar_one())


def usable(conn: Connection, *, token_hash: str, now: datetime) -> InvitationRow | None:
    """The invitation of this token while it is unused and unexpired, else None."""
    row = conn.execute(
        select(*_COLUMNS).where(
            invitations.c.token_hash == token_hash,
            invitations.c.used_at.is_(None),
            invitations.c.expires_at > now,
        )
    ).first()
    return _row(row)


def consume(conn: Connection, *, token_hash: str, now: datetime) -> InvitationRow | None:
    """Mark the invitation used, if it still is usable; the database decides between racing sign-ups: one
    conditional UPDATE ... RETURNING, so at most one of them gets the row."""
    row = conn.execute(
        update(invitations)
        .where(
            invitations.c.token_hash == token_hash,
            invitations.c.used_at.is_(None),
            invitations.c.expires_at > now,
        )
        .values(used_at=now)
        .returning(*_COLUMNS)
    ).first()
    return _row(row)


def delete_expired(conn: Connection, *, before: datetime, limit: int) -> int:
    """At most ``limit`` invitations that expired, or were used, before ``before``."""
    dead = (invitations.c.expires_at < before) | (invitations.c.used_at < before)
    old = select(invitations.c.id).where(dead).limit(limit).scalar_subquery()
    return int(conn.execute(delete(invitations).where(invitations.c.id.in_(old))).rowcount or 0)
