"""Trusted browsers (docs/api.md "Trusted browsers"): only the SHA-256 of the cookie's token is stored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, select, update

from twostep.storage.tables import trusted_browsers


@dataclass(frozen=True)
class TrustedBrowserRow:
    id: str
    account_id: int
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    ip: str
    user_agent: str


_COLUMNS = (
    trusted_browsers.c.id,
    trusted_browsers.c.account_id,
    trusted_browsers.c.created_at,
    trusted_browsers.c.expires_at,
    trusted_browsers.c.last_used_at,
    trusted_browsers.c.ip,
    trusted_browsers.c.user_agent,
)


def insert(
    conn: Connection,
    *,
    browser_id: str,
    account_id: int,
    token_hash: str,
    now: datetime,
    expires_at: datetime,
    ip: str,
    user_agent: str,
) -> None:
    conn.execute(
        trusted_browsers.insert().values(
            id=browser_id,
            account_id=account_id,
            token_hash=token_hash,
            created_at=now,
            expires_at=expires_at,
            last_used_at=None,
            revoked_at=None,
            ip=ip,
            user_agent=user_agent,
        )
    )


def use(conn: Connection, *, account_id: int, token_hashes: Sequence[str], now: datetime) -> str | None:
    """The id of a live trust of this account among these token hashes, marked used now; None when there is
    none (unknown, another account's, expired or revoked). One conditional UPDATE ... RETURNING: a trust
    revoked by a concurrent request is either used before or not at all."""
    if not token_hashes:
        return None
    found = (
        conn.execute(
            update(trusted_browsers)
            .where(
                trusted_browsers.c.account_id == account_id,
                trusted_browsers.c.token_hash.in_(list(token_hashes)),
                trusted_browsers.c.revoked_at.is_(None),
                trusted_browsers.c.expires_at > now,
            )
            .values(last_used_at=now)
            .returning(trusted_browsers.c.id)
        )
        .scalars()
        .all()
    )
    return min(found) if found else None


def list_live(conn: Connection, *, account_id: int, now: datetime) -> list[TrustedBrowserRow]:
    rows = conn.execute(
        select(*_COLUMNS)
        .where(
            trusted_browsers.c.account_id == account_id,
            trusted_browsers.c.revoked_at.is_(None),
            trusted_browsers.c.expires_at > now,
        )
        .order_by(trusted_browsers.c.created_at.desc(), trusted_browsers.c.id)
    ).all()
    return [TrustedBrowserRow(**r._mapping) for r in rows]


def revoke_one(conn: Connection, *, account_id: int, browser_id: str, now: datetime) -> bool:
    result = conn.execute(
        update(trusted_browsers)
        .where(
            trusted_browsers.c.account_id == account_id,
            trusted_browsers.c.id == browser_id,
            trusted_browsers.c.revoked_at.is_(None),
            trusted_browsers.c.expires_at > now,
        )
        .values(revoked_at=now)
    )
    return result.rowcount == 1


def revoke_all(conn: Connection, *, account_id: int, now: datetime) -> int:
    result = conn.execute(
        update(trusted_browsers)
        .where(
            trusted_browsers.c.account_id == account_id,
            trusted_browsers.c.revoked_at.is_(None),
            trusted_browsers.c.expires_at > now,
        )
        .values(revoked_at=now)
    )
    return int(result.rowcount)


def delete_dead(conn: Connection, *, now: datetime, limit: int) -> int:
    """At most ``limit`` rows past their end or revoked (the sweep, H08)."""
    dead = (
        select(trusted_browsers.c.id)
        .where((trusted_browsers.c.expires_at <= now) | trusted_browsers.c.revoked_at.is_not(None))
        .limit(limit)
    )
    result = conn.execute(delete(trusted_browsers).where(trusted_browsers.c.id.in_(dead.scalar_subquery())))
    return int(result.rowcount)


def ids_of(conn: Connection, *, account_id: int, token_hashes: Sequence[str]) -> list[str]:
    """The ids of this account's trusts among these token hashes (live or not)."""
    return list(
        conn.execute(
            select(trusted_browsers.c.id).where(
                trusted_browsers.c.account_id == account_id,
                trusted_browsers.c.token_hash.in_(list(token_hashes)),
            )
        ).scalars()
    )
