"""Rotation of the secret-sealing key: every sealed secret re-sealed in one transaction."""

from __future__ import annotations

from twostep.core.secretbox import KeyRing, SecretBox, aad_for
from twostep.services import oidc_keys
from twostep.storage import enrollments, factors
from twostep.storage.db import Database


def reseal_all(db: Database, *, old: KeyRing | SecretBox, new: SecretBox) -> int:
    """Open every TOTP secret (factors and pending enrolments) and OpenID Connect signing key with ``old``
    and seal it with ``new``.

    Raises:
        SecretBoxError: a secret that ``old`` cannot open; nothing is changed then.
    """
    count = 0
    with db.transaction() as conn:
        for factor in factors.every_totp(conn):
            aad = aad_for("factors", "totp_secret", factor.id)
            sealed = new.seal(old.open(factor.sealed_secret, aad=aad), aad=aad)
            factors.set_totp_secret(conn, factor_id=factor.id, sealed_secret=sealed)
            count += 1
        for enrollment in enrollments.every(conn):
            aad = aad_for("totp_enrollments", "secret", enrollment.id)
            sealed = new.seal(old.open(enrollment.sealed_secret, aad=aad), aad=aad)
            enrollments.set_sealed_secret(conn, enrollment_id=enrollment.id, sealed_secret=sealed)
            count += 1
        count += oidc_keys.reseal(conn, old=old, new=new)
    return count
