"""Recovery codes: salted slow hashes behind a clear two-character selector."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, func, select, update

from twostep.storage.tables import recovery_codes


def replace_set(conn: Connection, *, account_id: int, codes: list[tuple[str, str]]) -> None:
    """Delete the old set and store the new (selector, hash) pairs, in the caller's transaction."""
    conn.execute(delete(recovery_codes).where(recovery_codes.c.account_id == account_id))
    conn.execute(
        recovery_codes.insert(),
        [{"account_id": account_id, "selector": s, "code_hash": h, "used_at": None} for s, h in codes],
    )


@dataclass(frozen=True)
class RecoveryCodeRow:
    id: int
    code_hash: str

    def __repr__(self) -> str:
        return f"RecoveryCodeRow(id={self.id})"


def find_unused(conn: Connection, *, account_id: int, selector: str) -> RecoveryCodeRow | None:
    row = conn.execute(
        select(recovery_codes.c.id, recovery_codes.c.code_hash).where(
            recovery_codes.c.account_id == account_id,
            recovery_codes.c.selector == selector,
            recovery_codes.c.used_at.is_(None),
        )
    ).first()
    return None if row is None else RecoveryCodeRow(int(row.id), str(row.code_hash))


def consume(conn: Connection, *, code_id: int, now: datetime) -> bool:
    """Single use: only the request whose UPDATE finds ``used_at`` empty gets True."""
    result = conn.execute(
        update(recovery_codes)
        .where(recovery_codes.c.id == code_id, recovery_codes.c.used_at.is_(None))
        .values(used_at=now)
    )
    return result.rowcount == 1


def remaining(conn: Connection, account_id: int) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(recovery_codes)
            .where(recovery_codes.c.account_id == account_id, recovery_codes.c.used_at.is_(None))
        ).scalar_one()
    )


def delete_all(conn: Connection, account_id: int) -> None:
    conn.execute(delete(recovery_codes).where(recovery_codes.c.account_id == account_id))
