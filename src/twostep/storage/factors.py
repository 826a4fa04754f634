"""Second factors: authenticator apps (TOTP) and passkeys, one table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, or_, select, update

from twostep.core.kinds import FactorKind
from twostep.core.passkeys import RegisteredPasskey
from twostep.storage.db import all_rows, run
from twostep.storage.tables import factors


@dataclass(frozen=True)
class FactorRow:
    id: str
    account_id: int
    type: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    aaguid: str | None
    backup_state: bool | None


@dataclass(frozen=True)
class TotpRow:
    id: str
    sealed_secret: bytes
    last_step: int | None

    def __repr__(self) -> str:
        return f"TotpRow(id={self.id!r}, last_step={self.last_step})"


@dataclass(frozen=True)
class PasskeyRow:
    id: str
    account_id: int
    credential_id: bytes
    public_key: bytes
    sign_count: int
    backup_eligible: bool
    transports: list[str]


_LISTED = (
    factors.c.id,
    factors.c.account_id,
    factors.c.type,
    factors.c.name,
    factors.c.created_at,
    factors.c.last_used_at,
    factors.c.aaguid,
    factors.c.backup_state,
)


def list_for(conn: Connection, account_id: int) -> list[FactorRow]:
    rows = conn.execute(
        select(*_LISTED)
        .where(factors.c.account_id == account_id)
        .order_by(factors.c.created_at, factors.c.id)
    ).all()
    return [FactorRow(**r._mapping) for r in rows]


def get(conn: Connection, *, account_id: int, factor_id: str) -> FactorRow | None:
    row = conn.execute(
        select(*_LISTED).where(factors.c.account_id == account_id, factors.c.id == factor_id)
    ).first()
    return None if row is None else FactorRow(**row._mapping)


def kinds(conn: Connection, account_id: int) -> set[str]:
    rows = conn.execute(select(factors.c.type).where(factors.c.account_id == account_id).distinct()).all()
    return {r.type for r in rows}


def count(conn: Connection, account_id: int, *, type_: str | None = None) -> int:
    stmt = select(func.count()).select_from(factors).where(factors.c.account_id == account_id)
    if type_ is not None:
        stmt = stmt.where(factors.c.type == type_)
    return int(conn.execute(stmt).scalar_one())


# Built once (the sign-in hot path).
_TOTP_FOR = select(factors.c.id, factors.c.totp_secret, factors.c.totp_last_step).where(
    factors.c.account_id == bindparam("b_account"), factors.c.type == FactorKind.TOTP
)
_ADVANCE_STEP = (
    update(factors)
    .where(
        factors.c.id == bindparam("b_id"),
        or_(factors.c.totp_last_step.is_(None), factors.c.totp_last_step < bindparam("b_step")),
    )
    .values(
        totp_last_step=bindparam("b_new_step", type_=factors.c.totp_last_step.type),
        last_used_at=bindparam("b_now", type_=factors.c.last_used_at.type),
    )
)


def totp_for(conn: Connection, account_id: int) -> list[TotpRow]:
    rows = conn.execute(_TOTP_FOR, {"b_account": account_id}).all()
    return [TotpRow(r.id, r.totp_secret, r.totp_last_step) for r in rows]


# Every factor of the account, for the TOTP sign-in step: its authenticator apps and the kinds it has (the
# passkey upgrade needs them), in one statement where it was two (issue 16).
_TOTP_AND_KINDS = select(factors.c.type, factors.c.id, factors.c.totp_secret, factors.c.totp_last_step).where(
    factors.c.account_id == bindparam("b_account")
)


def totp_and_kinds(conn: Connection, account_id: int) -> tuple[list[TotpRow], set[str]]:
    """``totp_for`` and ``kinds`` of the account, in one read."""
    rows = all_rows(conn, _TOTP_AND_KINDS, {"b_account": account_id})
    apps = [
        TotpRow(id_, secret, last_step) for kind, id_, secret, last_step in rows if kind == FactorKind.TOTP
    ]
    return apps, {r[0] for r in rows}


def every_totp(conn: Connection) -> list[TotpRow]:
    """Every authenticator app of every account (key rotation re-seals them all)."""
    rows = conn.execute(
        select(factors.c.id, factors.c.totp_secret, factors.c.totp_last_step).where(
            factors.c.totp_secret.is_not(None)
        )
    ).all()
    return [TotpRow(r.id, r.totp_secret, r.totp_last_step) for r in rows]


def set_totp_secret(conn: Connection, *, factor_id: str, sealed_secret: bytes) -> None:
    conn.execute(update(factors).where(factors.c.id == factor_id).values(totp_secret=sealed_secret))


def advance_totp_step(conn: Connection, *, factor_id: str, step: int, now: datetime) -> bool:
    """Compare-and-set of the last used time step: True only for the one request that moves it forward."""
    params = {"b_id": factor_id, "b_step": step, "b_new_step": step, "b_now": now}
    return int(run(conn, _ADVANCE_STEP, params).rowcount) == 1


def insert_totp(
    conn: Connection,
    *,
    factor_id: str,
    account_id: int,
    name: str,
    sealed_secret: bytes,
    last_step: int,
    now: datetime,
) -> None:
    """Raises IntegrityError when the name is taken for this account."""
    conn.execute(
        factors.insert().values(
            id=factor_id,
            account_id=account_id,
            type=FactorKind.TOTP,
            name=name,
            created_at=now,
            last_used_at=None,
            totp_secret=sealed_secret,
            totp_last_step=last_step,
        )
    )


def insert_passkey(
    conn: Connection, *, factor_id: str, account_id: int, name: str, passkey: RegisteredPasskey, now: datetime
) -> None:
    """Store a verified passkey. Raises IntegrityError when the name or the credential id is taken."""
    conn.execute(
        factors.insert().values(
            id=factor_id,
            account_id=account_id,
            type=FactorKind.PASSKEY,
            name=name,
            created_at=now,
            credential_id=passkey.credential_id,
            public_key=passkey.public_key,
            algorithm=passkey.algorithm,
            sign_count=passkey.sign_count,
            transports=json.dumps(passkey.transports),
            aaguid=passkey.aaguid,
            backup_eligible=passkey.backup_eligible,
            backup_state=passkey.backup_state,
            user_verified=passkey.user_verified,
        )
    )


def passkeys_for(conn: Connection, account_id: int) -> list[PasskeyRow]:
    return _passkeys(conn, _PASSKEYS_OF_ACCOUNT, {"b_account": account_id})


def passkey_by_credential_id(conn: Connection, credential_id: bytes) -> PasskeyRow | None:
    found = _passkeys(conn, _PASSKEY_BY_CREDENTIAL, {"b_credential": credential_id})
    return found[0] if found else None


_PASSKEY_COLUMNS = select(
    factors.c.id,
    factors.c.account_id,
    factors.c.credential_id,
    factors.c.public_key,
    factors.c.sign_count,
    factors.c.backup_eligible,
    factors.c.transports,
).where(factors.c.type == FactorKind.PASSKEY)
_PASSKEYS_OF_ACCOUNT = _PASSKEY_COLUMNS.where(factors.c.account_id == bindparam("b_account"))
_PASSKEY_BY_CREDENTIAL = _PASSKEY_COLUMNS.where(factors.c.credential_id == bindparam("b_credential"))
_RECORD_USE = (
    update(factors)
    .where(factors.c.id == bindparam("b_id"), factors.c.sign_count == bindparam("b_expected"))
    .values(
        sign_count=bindparam("b_count", type_=factors.c.sign_count.type),
        backup_state=bindparam("b_backup", type_=factors.c.backup_state.type),
        backup_eligible=bindparam("b_eligible", type_=factors.c.backup_eligible.type),
        user_verified=factors.c.user_verified | bindparam("b_uv", type_=factors.c.user_verified.type),
        last_used_at=bindparam("b_now", type_=factors.c.last_used_at.type),
    )
)


def _passkeys(conn: Connection, stmt: Any, params: dict[str, object]) -> list[PasskeyRow]:
    return [
        PasskeyRow(r[0], r[1], r[2], r[3], int(r[4]), bool(r[5]), json.loads(r[6] or "[]"))
        for r in all_rows(conn, stmt, params)  # id, account, credential id, key, count, eligible, transports
    ]


def record_passkey_use(
    conn: Connection,
    *,
    factor_id: str,
    expected_sign_count: int,
    new_sign_count: int,
    backup_state: bool,
    user_verified: bool,
    now: datetime,
    backup_eligible: bool,
) -> bool:
    """Store the new counter only if nobody moved it meanwhile (compare-and-set), with the flags seen."""
    params = {
        "b_id": factor_id,
        "b_expected": expected_sign_count,
        "b_count": new_sign_count,
        "b_backup": backup_state,
        "b_eligible": backup_eligible,
        "b_uv": user_verified,
        "b_now": now,
    }
    return int(run(conn, _RECORD_USE, params).rowcount) == 1


def rename(conn: Connection, *, account_id: int, factor_id: str, name: str) -> bool:
    """Raises IntegrityError when the name is taken."""
    result = conn.execute(
        update(factors).where(factors.c.account_id == account_id, factors.c.id == factor_id).values(name=name)
    )
    return result.rowcount == 1


def delete_one(conn: Connection, *, account_id: int, factor_id: str) -> FactorRow | None:
    row = conn.execute(
        delete(factors)
        .where(factors.c.account_id == account_id, factors.c.id == factor_id)
        .returning(*_LISTED)
    ).first()
    return None if row is None else FactorRow(**row._mapping)


def delete_all(conn: Connection, account_id: int) -> int:
    return int(conn.execute(delete(factors).where(factors.c.account_id == account_id)).rowcount)


def names(conn: Connection, account_id: int) -> set[str]:
    return {r.name for r in conn.execute(select(factors.c.name).where(factors.c.account_id == account_id))}
