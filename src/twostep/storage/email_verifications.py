"""Single-use links that verify an e-mail address: stored as the token's SHA-256, taken by DELETE."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, delete, insert, select, update

from twostep.storage.tables import accounts, email_verifications


@dataclass(frozen=True)
class Taken:
    account_id: int
    email: str


def create(conn: Connection, *, token_hash: str, account_id: int, email: str, expires_at: datetime) -> None:
    conn.execute(
        insert(email_verifications).values(
            token_hash=token_hash, account_id=account_id, email=email, expires_at=expires_at
        )
    )


def take(conn: Connection, *, token_hash: str, now: datetime) -> Taken | None:
    """Take the link (single use: DELETE ... RETURNING) while it is unexpired; None otherwise."""
    row = conn.execute(
        delete(email_verifications)
        .where(email_verifications.c.token_hash == token_hash, email_verifications.c.expires_at > now)
        .returning(email_verifications.c.account_id, email_verifications.c.email)
    ).first()
    return None if row is None else Taken(row.account_id, row.email)


def mark_verified(conn: Connection, *, account_id: int, email: str, now: datetime) -> bool:
    """Set email_verified_at, only while the account's address is still ``email``."""
    result = conn.execute(
        update(accounts)
        .where(and_(accounts.c.id == account_id, accounts.c.email == email))
        .values(email_verified_at=now)
    )
    return bool(result.rowcount)


def forget_account(conn: Connection, account_id: int) -> None:
    """Every pending link of the account (its address changed)."""
    conn.execute(delete(email_verifications).where(email_verifications.c.account_id == account_id))


def delete_expired(conn: Connection, *, now: datetime, limit: int) -> int:
    """At most ``limit`` links past their 24 hours."""
    old = (
        select(email_verifications.c.token_hash)
        .where(email_verifications.c.expires_at <= now)
        .limit(limit)
        .scalar_subquery()
    )
    result = conn.execute(delete(email_verifications).where(email_verifications.c.token_hash.in_(old)))
    return int(result.rowcount or 0)
