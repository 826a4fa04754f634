"""WebAuthn challenges: stored server-side, single use, short-lived."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, delete, select

from twostep.storage.db import first
from twostep.storage.tables import challenges


def put(
    conn: Connection,
    *,
    challenge_id: str,
    session_key: str,
    purpose: str,
    challenge: bytes,
    account_id: int | None,
    expires_at: datetime,
    allowed: list[bytes] | None = None,
) -> None:
    """Store a challenge, replacing any earlier one of the same session and purpose."""
    conn.execute(
        delete(challenges).where(challenges.c.session_key == session_key, challenges.c.purpose == purpose)
    )
    conn.execute(
        challenges.insert().values(
            id=challenge_id,
            session_key=session_key,
            purpose=purpose,
            challenge=challenge,
            account_id=account_id,
            expires_at=expires_at,
            allowed=",".join(c.hex() for c in allowed) if allowed else None,
        )
    )


@dataclass(frozen=True)
class Taken:
    challenge: bytes
    account_id: int | None
    allowed: frozenset[bytes]


_TAKE = (
    delete(challenges)
    .where(challenges.c.session_key == bindparam("b_key"), challenges.c.purpose == bindparam("b_purpose"))
    .returning(challenges.c.challenge, challenges.c.account_id, challenges.c.expires_at, challenges.c.allowed)
)


def take(conn: Connection, *, session_key: str, purpose: str, now: datetime) -> Taken | None:
    """Consume the challenge: DELETE ... RETURNING gives it to exactly one request."""
    row = first(conn, _TAKE, {"b_key": session_key, "b_purpose": purpose})
    if row is None:
        return None
    challenge, account_id, expires_at, allowed_hex = row
    if expires_at <= now:
        return None
    allowed = frozenset(bytes.fromhex(h) for h in (allowed_hex or "").split(",") if h)
    return Taken(bytes(challenge), account_id, allowed)


def delete_expired(conn: Connection, *, now: datetime, limit: int) -> int:
    """At most ``limit`` expired challenges (H08: one sweep never holds a long lock)."""
    dead = select(challenges.c.id).where(challenges.c.expires_at <= now).limit(limit)
    return int(conn.execute(delete(challenges).where(challenges.c.id.in_(dead.scalar_subquery()))).rowcount)
