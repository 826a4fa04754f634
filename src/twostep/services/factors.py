"""Second factors of an account once added: list, rename, remove, new recovery codes, turn off."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from twostep.core import recovery_codes
from twostep.core.errors import (
    InvalidRequest,
    NameTaken,
    NotFound,
    TwoFactorNotEnabled,
)
from twostep.core.events import EventType
from twostep.core.kinds import FactorKind
from twostep.core.passkeys import b64url, provider_name
from twostep.i18n import N_
from twostep.services import trusted_browsers
from twostep.services.audit import Audit
from twostep.services.context import Client, Context
from twostep.services.sessions import CurrentSession, require_verified
from twostep.storage import accounts, enrollments, recovery
from twostep.storage import factors as store


@dataclass(frozen=True)
class FactorView:
    id: str
    type: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    authenticator: str | None
    synced: bool | None


@dataclass(frozen=True)
class Overview:
    two_factor_enabled: bool
    factors: list[FactorView]
    recovery_codes_remaining: int


def view_of(row: store.FactorRow) -> FactorView:
    if row.type == FactorKind.PASSKEY:
        return FactorView(
            row.id,
            row.type,
            row.name,
            row.created_at,
            row.last_used_at,
            provider_name(row.aaguid or ""),
            bool(row.backup_state),
        )
    return FactorView(row.id, row.type, row.name, row.created_at, row.last_used_at, None, None)


def overview(ctx: Context, session: CurrentSession) -> Overview:
    """GET /factors: never a secret."""
    with ctx.db.transaction() as conn:
        rows = store.list_for(conn, session.account_id)
        remaining = recovery.remaining(conn, session.account_id) if rows else 0
    return Overview(bool(rows), [view_of(r) for r in rows], remaining)


@dataclass(frozen=True)
class AcceptedCredentials:
    """What ``PublicKeyCredential.signalAllAcceptedCredentials`` takes: the relying party, the account's user
    handle and its passkeys' credential ids, base64url. None of it is secret (registration options carry the
    user handle; the credential ids are in every allowCredentials)."""

    rp_id: str
    user_id: str
    credential_ids: list[str]


def accepted_credentials(ctx: Context, session: CurrentSession) -> AcceptedCredentials | None:
    with ctx.db.transaction() as conn:
        account = accounts.by_id(conn, session.account_id)
        ids = [b64url(p.credential_id) for p in store.passkeys_for(conn, session.account_id)]
    if account is None:
        return None
    return AcceptedCredentials(ctx.rp_id, b64url(account.user_handle), ids)


def clean_name(name: str) -> str:
    """Names are 1 to 64 characters after trimming, without control characters.

    Raises:
        InvalidRequest.
    """
    value = " ".join(name.split())
    if not 1 <= len(value) <= 64 or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidRequest(N_("A name has 1 to 64 characters."), field="name")
    return value


def rename(ctx: Context, session: CurrentSession, *, factor_id: str, name: str, client: Client) -> FactorView:
    """PATCH /factors/{id}.

    Raises:
        InvalidRequest, NotFound, NameTaken.
    """
    name = clean_name(name)
    now = ctx.now()
    try:
        with ctx.db.transaction() as conn:
            if not store.rename(conn, account_id=session.account_id, factor_id=factor_id[:64], name=name):
                raise NotFound()
            row = store.get(conn, account_id=session.account_id, factor_id=factor_id)
            audit = Audit(ctx, session.account_id, client, now)
            audit.record(conn, EventType.FACTOR_RENAMED, factor_id=factor_id, factor_name=name)
    except IntegrityError as exc:
        raise NameTaken() from exc
    assert row is not None
    return view_of(row)


def remove(ctx: Context, session: CurrentSession, *, factor_id: str, client: Client) -> bool:
    """DELETE /factors/{id}; the last one turns two-step verification off. Returns whether it did.

    Raises:
        VerifyAccessRequired, NotFound.
    """
    now = ctx.now()
    require_verified(session, now)
    with ctx.db.transaction() as conn:
        accounts.lock(conn, session.account_id)
        row = store.delete_one(conn, account_id=session.account_id, factor_id=factor_id[:64])
        if row is None:
            raise NotFound()
        last = store.count(conn, session.account_id) == 0
        audit = Audit(ctx, session.account_id, client, now)
        removed: dict[str, Any] = {"factor_id": row.id, "type": row.type, "factor_name": row.name}
        # The last one: the message of two_factor_disabled says both (H13).
        audit.record(conn, EventType.FACTOR_REMOVED, notify=not last, **removed)
        trusted_browsers.revoke_all(conn, audit, reason="factor removed")
        if not last:
            return False
        recovery.delete_all(conn, session.account_id)
        audit.record(conn, EventType.TWO_FACTOR_DISABLED, **removed, reason="last factor removed")
        return True


def disable(ctx: Context, session: CurrentSession, *, client: Client) -> None:
    """DELETE /two-factor: every factor and recovery code goes.

    Raises:
        VerifyAccessRequired, TwoFactorNotEnabled.
    """
    now = ctx.now()
    require_verified(session, now)
    with ctx.db.transaction() as conn:
        accounts.lock(conn, session.account_id)
        if store.delete_all(conn, session.account_id) == 0:
            raise TwoFactorNotEnabled()
        recovery.delete_all(conn, session.account_id)
        enrollments.delete_for_account(conn, session.account_id)
        audit = Audit(ctx, session.account_id, client, now)
        audit.record(conn, EventType.TWO_FACTOR_DISABLED)
        trusted_browsers.revoke_all(conn, audit, reason="two-step verification turned off")


def regenerate_recovery_codes(ctx: Context, session: CurrentSession, *, client: Client) -> list[str]:
    """POST /recovery-codes: a new set replaces the old one, atomically (SEC-35).

    Raises:
        VerifyAccessRequired, TwoFactorNotEnabled.
    """
    now = ctx.now()
    require_verified(session, now)
    with ctx.db.transaction() as conn:
        enabled = store.count(conn, session.account_id) > 0
    if not enabled:
        raise TwoFactorNotEnabled()
    codes = recovery_codes.generate_recovery_codes()
    with ctx.db.transaction() as conn:
        accounts.lock(conn, session.account_id)
        if store.count(conn, session.account_id) == 0:
            raise TwoFactorNotEnabled()
        recovery.replace_set(conn, account_id=session.account_id, codes=[(c.selector, c.hash) for c in codes])
        Audit(ctx, session.account_id, client, now).record(conn, EventType.RECOVERY_CODES_REGENERATED)
    return [c.shown for c in codes]
