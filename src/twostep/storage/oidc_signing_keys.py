"""ID token signing keys; private keys sealed by the caller (services/oidc_keys.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select, update

from twostep.storage.tables import oidc_signing_keys


@dataclass(frozen=True)
class SigningKeyRow:
    kid: str
    alg: str
    private_key: bytes
    public_jwk: str
    created_at: datetime
    active_from: datetime
    retired_at: datetime | None
    drop_after: datetime | None


def add(conn: Connection, row: SigningKeyRow) -> None:
    conn.execute(insert(oidc_signing_keys).values(**row.__dict__))


def every(conn: Connection) -> list[SigningKeyRow]:
    rows = conn.execute(select(oidc_signing_keys).order_by(oidc_signing_keys.c.active_from))
    return [SigningKeyRow(**r._mapping) for r in rows]


def retire(conn: Connection, *, kid: str, at: datetime, drop_after: datetime) -> None:
    conn.execute(
        update(oidc_signing_keys)
        .where(oidc_signing_keys.c.kid == kid, oidc_signing_keys.c.retired_at.is_(None))
        .values(retired_at=at, drop_after=drop_after)
    )


def set_sealed(conn: Connection, *, kid: str, private_key: bytes) -> None:
    conn.execute(
        update(oidc_signing_keys).where(oidc_signing_keys.c.kid == kid).values(private_key=private_key)
    )


def drop_expired(conn: Connection, *, now: datetime) -> int:
    result = conn.execute(
        delete(oidc_signing_keys).where(
            oidc_signing_keys.c.drop_after.is_not(None), oidc_signing_keys.c.drop_after <= now
        )
    )
    return int(result.rowcount)
