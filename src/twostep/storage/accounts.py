"""Accounts table access."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, delete, select, update

from twostep.storage.db import first_mapping
from twostep.storage.tables import accounts


@dataclass(frozen=True)
class AccountRow:
    id: int
    username: str
    display_name: str
    password_hash: str
    email: str | None
    user_handle: bytes
    locked_at: datetime | None = None
    email_verified_at: datetime | None = None
    created_at: datetime | None = None
    language: str | None = None

    def __repr__(self) -> str:
        return f"AccountRow(id={self.id}, username={self.username!r})"


_COLUMNS = (
    accounts.c.id,
    accounts.c.username,
    accounts.c.display_name,
    accounts.c.password_hash,
    accounts.c.email,
    accounts.c.user_handle,
    accounts.c.locked_at,
    accounts.c.email_verified_at,
    accounts.c.created_at,
    accounts.c.language,
)


def insert(
    conn: Connection,
    *,
    username: str,
    display_name: str,
    password_hash: str,
    email: str | None,
    user_handle: bytes,
    now: datetime,
) -> int:
    """Insert an account; raises IntegrityError when the username is taken."""
    result = conn.execute(
        accounts.insert()
        .values(
            username=username,
            display_name=display_name,
            password_hash=password_hash,
            email=email,
            user_handle=user_handle,
            created_at=now,
        )
        .returning(accounts.c.id)
    )
    return int(result.scalar_one())


_BY_USERNAME = select(*_COLUMNS).where(accounts.c.username == bindparam("b_username"))
_BY_ID = select(*_COLUMNS).where(accounts.c.id == bindparam("b_id"))


def by_username(conn: Connection, username: str) -> AccountRow | None:
    found = first_mapping(conn, _BY_USERNAME, {"b_username": username})
    return None if found is None else AccountRow(**found)


def by_id(conn: Connection, account_id: int) -> AccountRow | None:
    found = first_mapping(conn, _BY_ID, {"b_id": account_id})
    return None if found is None else AccountRow(**found)


def set_password_hash(conn: Connection, account_id: int, password_hash: str) -> None:
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(password_hash=password_hash))


def lock(conn: Connection, account_id: int) -> None:
    """Serialise changes to one account's factors: SELECT ... FOR UPDATE on PostgreSQL (SQLite's
    BEGIN IMMEDIATE already lets one writer in at a time). Without it, two removals of an account's last
    two factors could each see the other still there, and two-step verification would end up off with
    its recovery codes left behind."""
    conn.execute(select(accounts.c.id).where(accounts.c.id == account_id).with_for_update())


def is_locked(conn: Connection, account_id: int) -> bool:
    """Whether an operator locked the account. (A sign-in that commits its session just after a lock is
    refused at its first request: ``sessions.touch_active`` treats a locked account's session as dead.)"""
    row = conn.execute(select(accounts.c.locked_at).where(accounts.c.id == account_id)).first()
    return row is not None and row.locked_at is not None


def set_locked(conn: Connection, account_id: int, locked_at: datetime | None) -> bool:
    """Lock (a time) or unlock (None); False when the account was already in that state."""
    condition = accounts.c.locked_at.is_(None) if locked_at is not None else accounts.c.locked_at.is_not(None)
    result = conn.execute(
        update(accounts).where(accounts.c.id == account_id, condition).values(locked_at=locked_at)
    )
    return bool(result.rowcount)


def set_email(conn: Connection, account_id: int, email: str | None) -> None:
    """A new address, not verified yet."""
    conn.execute(
        update(accounts).where(accounts.c.id == account_id).values(email=email, email_verified_at=None)
    )


def all_accounts(conn: Connection) -> list[AccountRow]:
    rows = conn.execute(select(*_COLUMNS).order_by(accounts.c.username))
    return [AccountRow(**row._mapping) for row in rows]


def delete_account(conn: Connection, account_id: int) -> bool:
    """Delete the account; its sessions, factors, codes, enrolments, challenges, events, groups and
    e-mail links go with it (ON DELETE CASCADE)."""
    result = conn.execute(delete(accounts).where(accounts.c.id == account_id))
    return bool(result.rowcount)


def set_language(conn: Connection, account_id: int, language: str | None) -> None:
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(language=language))
