"""Second factors of an account: list, add an authenticator app, rename, remove, recovery codes, turn off."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from twostep.core import recovery_codes, totp
from twostep.core.errors import (
    EnrollmentExpired,
    InvalidCode,
    InvalidEnrollmentCode,
    InvalidRequest,
    NameTaken,
    NotFound,
    TwoFactorNotEnabled,
)
from twostep.core.passkeys import provider_name
from twostep.core.secretbox import aad_for
from twostep.services.context import TOTP_ENROLLMENT_TTL, Client, Context, new_id
from twostep.services.notifications import record
from twostep.services.sessions import CurrentSession, require_verified
from twostep.storage import accounts, enrollments, recovery
from twostep.storage import factors as store
from twostep.storage import sessions as session_store

T = TypeVar("T")
NewCodes = recovery_codes.NewRecoveryCode


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
    if row.type == "passkey":
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


def clean_name(name: str) -> str:
    """Names are 1 to 64 characters after trimming, without control characters.

    Raises:
        InvalidRequest.
    """
    value = " ".join(name.split())
    if not 1 <= len(value) <= 64 or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidRequest("A name has 1 to 64 characters.")
    return value


@dataclass(frozen=True)
class TotpEnrollment:
    enrollment_id: str
    secret: str
    otpauth_uri: str
    qr_svg: str
    expires_at: datetime

    def __repr__(self) -> str:
        return f"TotpEnrollment(enrollment_id={self.enrollment_id!r})"


def begin_totp(ctx: Context, session: CurrentSession) -> TotpEnrollment:
    """POST /factors/totp: a pending enrolment, 15 minutes, its secret sealed server-side (SEC-17).

    Raises:
        VerifyAccessRequired.
    """
    now = ctx.now()
    require_verified(session, now)
    secret = totp.generate_secret()
    enrollment_id = new_id()
    expires_at = now + TOTP_ENROLLMENT_TTL
    sealed = ctx.box.seal(secret, aad=aad_for("totp_enrollments", "secret", enrollment_id))
    with ctx.db.transaction() as conn:
        enrollments.delete_expired(conn, now=now, limit=100)
        enrollments.insert(
            conn,
            enrollment_id=enrollment_id,
            account_id=session.account_id,
            sealed_secret=sealed,
            now=now,
            expires_at=expires_at,
        )
    uri = totp.build_otpauth_uri(secret=secret, issuer=ctx.issuer, account=session.username)
    return TotpEnrollment(enrollment_id, totp.encode_secret(secret), uri, totp.render_qr_svg(uri), expires_at)


def pending_totp(ctx: Context, session: CurrentSession, *, enrollment_id: str) -> TotpEnrollment | None:
    """The unexpired pending enrolment of this account, to show its QR code and key again after a wrong
    code (the secret is still unconfirmed and shown only to the account that started it)."""
    now = ctx.now()
    require_verified(session, now)
    with ctx.db.transaction() as conn:
        found = enrollments.get(conn, enrollment_id=enrollment_id[:64], account_id=session.account_id)
    if found is None or found[1] <= now:
        return None
    secret = ctx.box.open(found[0], aad=aad_for("totp_enrollments", "secret", enrollment_id))
    uri = totp.build_otpauth_uri(secret=secret, issuer=ctx.issuer, account=session.username)
    return TotpEnrollment(enrollment_id, totp.encode_secret(secret), uri, totp.render_qr_svg(uri), found[1])


@dataclass(frozen=True)
class Added:
    factor: FactorView
    recovery_codes: list[str] | None
    # The first factor (two-step verification turned on): how many password-only sessions ended (H04).
    other_sessions_ended: int | None = None

    def __repr__(self) -> str:
        return f"Added(factor={self.factor!r})"


class CodesNeeded(Exception):
    """The factor being added turned out to be the first one, and no recovery codes were made beforehand."""


def with_codes_if_first(ctx: Context, account_id: int, write: Callable[[list[NewCodes] | None], T]) -> T:
    """Run ``write`` (which opens its own transaction) with recovery codes made *before* it when the account
    has no factor yet: ten argon2id hashes inside the write transaction would stall every other request (H06).
    Should the account lose its factors meanwhile, ``write`` raises CodesNeeded and runs again with codes."""
    with ctx.db.transaction() as conn:
        enabled = store.count(conn, account_id) > 0
    codes = None if enabled else recovery_codes.generate_recovery_codes()
    try:
        return write(codes)
    except CodesNeeded:
        return write(recovery_codes.generate_recovery_codes())


def confirm_totp(
    ctx: Context, session: CurrentSession, *, enrollment_id: str, name: str, code: str, client: Client
) -> Added:
    """POST /factors/totp/{id}/confirm: the code proves the app holds the secret; the step is then used.

    Raises:
        VerifyAccessRequired, NotFound, EnrollmentExpired, InvalidRequest, NameTaken,
        InvalidEnrollmentCode (with clock_skew_seconds when the device clock seems off).
    """
    now = ctx.now()
    require_verified(session, now)
    name = clean_name(name)
    with ctx.db.transaction() as conn:
        found = enrollments.get(conn, enrollment_id=enrollment_id[:64], account_id=session.account_id)
    if found is None:
        raise NotFound("There is no such setup. Start again.")
    sealed, expires_at = found
    if expires_at <= now:
        raise EnrollmentExpired()
    secret = ctx.box.open(sealed, aad=aad_for("totp_enrollments", "secret", enrollment_id))
    try:
        step = totp.verify_code(secret=secret, code=code, now=now, last_used_step=None)
    except InvalidCode:
        raise InvalidEnrollmentCode(
            clock_skew_seconds=totp.diagnose_clock_skew(secret=secret, code=code, now=now)
        ) from None
    factor_id = new_id()
    sealed_factor = ctx.box.seal(secret, aad=aad_for("factors", "totp_secret", factor_id))

    def write(codes: list[NewCodes] | None) -> Added:
        with ctx.db.transaction() as conn:
            accounts.lock(conn, session.account_id)
            if not enrollments.delete_one(conn, enrollment_id=enrollment_id):
                raise NotFound("There is no such setup. Start again.")
            first = store.count(conn, session.account_id) == 0
            store.insert_totp(
                conn,
                factor_id=factor_id,
                account_id=session.account_id,
                name=name,
                sealed_secret=sealed_factor,
                last_step=step,
                now=now,
            )
            ended = added_events(
                conn,
                ctx,
                session,
                client=client,
                now=now,
                first=first,
                name=name,
                kind="totp",
                factor_id=factor_id,
                codes=codes,
            )
            row = store.get(conn, account_id=session.account_id, factor_id=factor_id)
        assert row is not None
        shown = [c.shown for c in codes] if first and codes is not None else None
        return Added(view_of(row), shown, ended)

    try:
        return with_codes_if_first(ctx, session.account_id, write)
    except IntegrityError as exc:
        raise NameTaken() from exc


def added_events(
    conn: Connection,
    ctx: Context,
    session: CurrentSession,
    *,
    client: Client,
    now: datetime,
    first: bool,
    name: str,
    kind: str,
    factor_id: str,
    codes: list[NewCodes] | None,
) -> int | None:
    """Events of a new factor. The first one turns two-step verification on: it stores the recovery codes
    (made before the transaction, H06), ends the account's other sessions that were signed in with the
    password alone (H04; this session counts as having used the new factor), and sends one e-mail that says
    all of it (H13). Returns how many sessions ended (None when it was not the first factor).

    Raises:
        CodesNeeded: it is the first factor and ``codes`` is None.
    """
    detail = {"factor_id": factor_id, "type": kind, "factor_name": name}
    if not first:
        record(
            conn,
            account_id=session.account_id,
            type_="factor_added",
            client=client,
            now=now,
            detail=detail,
            origin=ctx.origin,
        )
        return None
    if codes is None:
        raise CodesNeeded()
    recovery.replace_set(conn, account_id=session.account_id, codes=[(c.selector, c.hash) for c in codes])
    ended = session_store.end_password_only(
        conn, account_id=session.account_id, keep_hash=session.token_hash, second_factor=kind
    )
    record(
        conn,
        account_id=session.account_id,
        type_="factor_added",
        client=client,
        now=now,
        detail=detail,
        origin=ctx.origin,
        notify=False,  # the message of two_factor_enabled says it
    )
    record(
        conn,
        account_id=session.account_id,
        type_="two_factor_enabled",
        client=client,
        now=now,
        detail={**detail, "other_sessions_ended": ended},
        origin=ctx.origin,
    )
    return ended


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
            record(
                conn,
                account_id=session.account_id,
                type_="factor_renamed",
                client=client,
                now=now,
                detail={"factor_id": factor_id, "factor_name": name},
                origin=ctx.origin,
            )
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
        detail = {"factor_id": row.id, "type": row.type, "factor_name": row.name}
        record(
            conn,
            account_id=session.account_id,
            type_="factor_removed",
            client=client,
            now=now,
            detail=detail,
            origin=ctx.origin,
            notify=not last,  # the last one: the message of two_factor_disabled says both (H13)
        )
        if not last:
            return False
        recovery.delete_all(conn, session.account_id)
        record(
            conn,
            account_id=session.account_id,
            type_="two_factor_disabled",
            client=client,
            now=now,
            detail={**detail, "reason": "last factor removed"},
            origin=ctx.origin,
        )
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
        record(
            conn,
            account_id=session.account_id,
            type_="two_factor_disabled",
            client=client,
            now=now,
            origin=ctx.origin,
        )


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
        record(
            conn,
            account_id=session.account_id,
            type_="recovery_codes_regenerated",
            client=client,
            now=now,
            origin=ctx.origin,
        )
    return [c.shown for c in codes]
