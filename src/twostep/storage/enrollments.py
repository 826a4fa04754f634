"""Pending TOTP enrolments (15 minutes, secret sealed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, select, update

from twostep.storage.tables import totp_enrollments


def insert(
    conn: Connection,
    *,
    enrollment_id: str,
    account_id: int,
    sealed_secret: bytes,
    now: datetime,
    expires_at: datetime,
) -> None:
    conn.execute(
        totp_enrollments.insert().values(
            id=enrollment_id,
            account_id=account_id,
            secret=sealed_secret,
            created_at=now,
            expires_at=expires_at,
        )
    )


@dataclass(frozen=True)
class EnrollmentRow:
    id: str
    sealed_secret: bytes
    expires_at: datetime

    def __repr__(self) -> str:
        return f"EnrollmentRow(id={self.id!r}, expires_at={self.expires_at!r})"


def get(conn: Connection, *, enrollment_id: str, account_id: int) -> EnrollmentRow | None:
    row = conn.execute(
        select(totp_enrollments.c.secret, totp_enrollments.c.expires_at).where(
            totp_enrollments.c.id == enrollment_id, totp_enrollments.c.account_id == account_id
        )
    ).first()
    return None if row is None else EnrollmentRow(enrollment_id, bytes(row.secret), row.expires_at)


def delete_one(conn: Connection, *, enrollment_id: str) -> bool:
    return conn.execute(delete(totp_enrollments).where(totp_enrollments.c.id == enrollment_id)).rowcount == 1


def delete_expired(conn: Connection, *, now: datetime, limit: int) -> int:
    """At most ``limit`` expired enrolments (H08)."""
    dead = select(totp_enrollments.c.id).where(totp_enrollments.c.expires_at <= now).limit(limit)
    result = conn.execute(delete(totp_enrollments).where(totp_enrollments.c.id.in_(dead.scalar_subquery())))
    return int(result.rowcount)


def delete_for_account(conn: Connection, account_id: int) -> None:
    conn.execute(delete(totp_enrollments).where(totp_enrollments.c.account_id == account_id))


def every(conn: Connection) -> list[EnrollmentRow]:
    """Every pending enrolment, expired or not (key rotation re-seals them all)."""
    rows = conn.execute(
        select(totp_enrollments.c.id, totp_enrollments.c.secret, totp_enrollments.c.expires_at)
    ).all()
    return [EnrollmentRow(r.id, bytes(r.secret), r.expires_at) for r in rows]


def set_sealed_secret(conn: Connection, *, enrollment_id: str, sealed_secret: bytes) -> None:
    conn.execute(
        update(totp_enrollments).where(totp_enrollments.c.id == enrollment_id).values(secret=sealed_secret)
    )
