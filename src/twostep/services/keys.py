"""Rotation of the secret-sealing key: every sealed secret re-sealed in one transaction."""

from __future__ import annotations

from sqlalchemy import select, update

from twostep.core.secretbox import KeyRing, SecretBox, aad_for
from twostep.storage.db import Database
from twostep.storage.tables import factors, totp_enrollments


def reseal_all(db: Database, *, old: KeyRing | SecretBox, new: SecretBox) -> int:
    """Open every TOTP secret (factors and pending enrolments) with ``old`` and seal it with ``new``.

    Raises:
        SecretBoxError: a secret that ``old`` cannot open; nothing is changed then.
    """
    count = 0
    with db.transaction() as conn:
        rows = conn.execute(
            select(factors.c.id, factors.c.totp_secret).where(factors.c.totp_secret.is_not(None))
        ).all()
        for row in rows:
            aad = aad_for("factors", "totp_secret", row.id)
            sealed = new.seal(old.open(row.totp_secret, aad=aad), aad=aad)
            conn.execute(update(factors).where(factors.c.id == row.id).values(totp_secret=sealed))
            count += 1
        for row in conn.execute(select(totp_enrollments.c.id, totp_enrollments.c.secret)).all():
            aad = aad_for("totp_enrollments", "secret", row.id)
            sealed = new.seal(old.open(row.secret, aad=aad), aad=aad)
            conn.execute(
                update(totp_enrollments).where(totp_enrollments.c.id == row.id).values(secret=sealed)
            )
            count += 1
    return count
