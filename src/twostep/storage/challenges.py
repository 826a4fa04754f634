"""WebAuthn challenges: stored server-side, single use, short-lived."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete

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
        )
    )


def take(
    conn: Connection, *, session_key: str, purpose: str, now: datetime
) -> tuple[bytes, int | None] | None:
    """Consume the challenge: DELETE ... RETURNING gives it to exactly one request."""
    row = conn.execute(
        delete(challenges)
        .where(challenges.c.session_key == session_key, challenges.c.purpose == purpose)
        .returning(challenges.c.challenge, challenges.c.account_id, challenges.c.expires_at)
    ).first()
    if row is None or row.expires_at <= now:
        return None
    return bytes(row.challenge), row.account_id


def delete_expired(conn: Connection, *, now: datetime) -> None:
    conn.execute(delete(challenges).where(challenges.c.expires_at <= now))
