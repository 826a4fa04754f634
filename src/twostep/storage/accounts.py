"""Accounts table access."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, select, update

from twostep.storage.tables import accounts


@dataclass(frozen=True)
class AccountRow:
    id: int
    username: str
    display_name: str
    password_hash: str
    email: str | None
    user_handle: bytes
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
    accounts.c.language,
)


def _row(row: Row[*tuple[Any, ...]] | None) -> AccountRow | None:
    return None if row is None else AccountRow(**row._mapping)


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
    return _row(conn.execute(_BY_USERNAME, {"b_username": username}).first())


def by_id(conn: Connection, account_id: int) -> AccountRow | None:
    return _row(conn.execute(_BY_ID, {"b_id": account_id}).first())


def set_password_hash(conn: Connection, account_id: int, password_hash: str) -> None:
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(password_hash=password_hash))


def lock(conn: Connection, account_id: int) -> None:
    """Serialise changes to one account's factors: SELECT ... FOR UPDATE on PostgreSQL (SQLite's
    BEGIN IMMEDIATE already lets one writer in at a time). Without it, two removals of an account's last
    two factors could each see the other still there, and two-step verification would end up off with
    its recovery codes left behind."""
    conn.execute(select(accounts.c.id).where(accounts.c.id == account_id).with_for_update())


def set_language(conn: Connection, account_id: int, language: str | None) -> None:
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(language=language))
