"""Enrolment: adding an authenticator app or a passkey. Every new factor ends in ``finish_enrolment``, which
makes the first one turn two-step verification on, with its recovery codes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from twostep.core import passkeys as wa
from twostep.core import recovery_codes, totp
from twostep.core.errors import (
    EnrollmentExpired,
    InvalidCode,
    InvalidEnrollmentCode,
    NameTaken,
    NotFound,
    NotSignedIn,
    PasskeyRegistrationRejected,
    VerifyAccessRequired,
)
from twostep.core.events import EventType
from twostep.core.kinds import ChallengePurpose, FactorKind
from twostep.core.secretbox import aad_for
from twostep.i18n import N_
from twostep.services import second_factor as sf
from twostep.services import trusted_browsers
from twostep.services.audit import Audit
from twostep.services.context import TOTP_ENROLLMENT_TTL, Client, Context, new_id
from twostep.services.factors import FactorView, clean_name, view_of
from twostep.services.sessions import CurrentSession, require_verified
from twostep.storage import accounts, challenges, enrollments, factors, recovery
from twostep.storage import sessions as session_store

T = TypeVar("T")
NewCodes = recovery_codes.NewRecoveryCode
NO_SUCH_SETUP = N_("There is no such setup. Start again.")


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
        enabled = factors.count(conn, account_id) > 0
    codes = None if enabled else recovery_codes.generate_recovery_codes()
    try:
        return write(codes)
    except CodesNeeded:
        return write(recovery_codes.generate_recovery_codes())


def finish_enrolment(
    conn: Connection,
    audit: Audit,
    session: CurrentSession,
    *,
    kind: FactorKind,
    factor_id: str,
    name: str,
    codes: list[NewCodes] | None,
    event: EventType = EventType.FACTOR_ADDED,
) -> Added:
    """The one success path of every new factor, in the caller's transaction (the account locked, the
    factor's row inserted). The first factor turns two-step verification on: it stores the recovery codes
    (made before the transaction, H06), ends the account's other sessions that were signed in with the
    password alone (H04; this session counts as having used the new factor), and sends one e-mail that says
    all of it (H13).

    Raises:
        CodesNeeded: it is the first factor and ``codes`` is None.
    """
    first = factors.count(conn, session.account_id) == 1
    ended: int | None = None
    if first:
        if codes is None:
            raise CodesNeeded()
        recovery.replace_set(conn, account_id=session.account_id, codes=[(c.selector, c.hash) for c in codes])
        ended = session_store.end_password_only(
            conn, account_id=session.account_id, keep_hash=session.token_hash, second_factor=kind
        )
    # A change of factors: every trusted browser asks for the second step again.
    trusted_browsers.revoke_all(conn, audit, reason="factor added")
    # The first one's e-mail is that of two_factor_enabled, which says both (H13).
    audit.record(conn, event, notify=not first, factor_id=factor_id, type=kind, factor_name=name)
    if first:
        audit.record(
            conn,
            EventType.TWO_FACTOR_ENABLED,
            factor_id=factor_id,
            type=kind,
            factor_name=name,
            other_sessions_ended=ended,
        )
    row = factors.get(conn, account_id=session.account_id, factor_id=factor_id)
    assert row is not None
    shown = [c.shown for c in codes] if first and codes is not None else None
    return Added(view_of(row), shown, ended)


# ---------------------------------------------------------------------------------- authenticator apps


@dataclass(frozen=True)
class TotpEnrollment:
    enrollment_id: str
    secret: str
    otpauth_uri: str
    qr_svg: str
    expires_at: datetime

    def __repr__(self) -> str:
        return f"TotpEnrollment(enrollment_id={self.enrollment_id!r})"


def _shown(
    ctx: Context, session: CurrentSession, enrollment_id: str, secret: bytes, expires_at: datetime
) -> TotpEnrollment:
    uri = totp.build_otpauth_uri(secret=secret, issuer=ctx.issuer, account=session.username)
    return TotpEnrollment(enrollment_id, totp.encode_secret(secret), uri, totp.render_qr_svg(uri), expires_at)


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
    return _shown(ctx, session, enrollment_id, secret, expires_at)


def pending_totp(ctx: Context, session: CurrentSession, *, enrollment_id: str) -> TotpEnrollment | None:
    """The unexpired pending enrolment of this account, to show its QR code and key again after a wrong
    code (the secret is still unconfirmed and shown only to the account that started it)."""
    now = ctx.now()
    require_verified(session, now)
    with ctx.db.transaction() as conn:
        found = enrollments.get(conn, enrollment_id=enrollment_id[:64], account_id=session.account_id)
    if found is None or found.expires_at <= now:
        return None
    secret = ctx.box.open(found.sealed_secret, aad=aad_for("totp_enrollments", "secret", enrollment_id))
    return _shown(ctx, session, enrollment_id, secret, found.expires_at)


def _confirmed_step(
    ctx: Context, session: CurrentSession, enrollment_id: str, code: str, now: datetime
) -> tuple[bytes, int]:
    """The pending enrolment's secret and the time step its code matched.

    Raises:
        NotFound, EnrollmentExpired, InvalidEnrollmentCode (with clock_skew_seconds when the device clock
        seems off).
    """
    with ctx.db.transaction() as conn:
        found = enrollments.get(conn, enrollment_id=enrollment_id[:64], account_id=session.account_id)
    if found is None:
        raise NotFound(NO_SUCH_SETUP)
    if found.expires_at <= now:
        raise EnrollmentExpired()
    secret = ctx.box.open(found.sealed_secret, aad=aad_for("totp_enrollments", "secret", enrollment_id))
    try:
        return secret, totp.verify_code(secret=secret, code=code, now=now, last_used_step=None)
    except InvalidCode:
        skew = totp.diagnose_clock_skew(secret=secret, code=code, now=now)
        raise InvalidEnrollmentCode(clock_skew_seconds=skew) from None


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
    secret, step = _confirmed_step(ctx, session, enrollment_id, code, now)
    factor_id = new_id()
    sealed = ctx.box.seal(secret, aad=aad_for("factors", "totp_secret", factor_id))
    audit = Audit(ctx, session.account_id, client, now)

    def write(codes: list[NewCodes] | None) -> Added:
        with ctx.db.transaction() as conn:
            accounts.lock(conn, session.account_id)
            if not enrollments.delete_one(conn, enrollment_id=enrollment_id):
                raise NotFound(NO_SUCH_SETUP)
            factors.insert_totp(
                conn,
                factor_id=factor_id,
                account_id=session.account_id,
                name=name,
                sealed_secret=sealed,
                last_step=step,
                now=now,
            )
            return finish_enrolment(
                conn, audit, session, kind=FactorKind.TOTP, factor_id=factor_id, name=name, codes=codes
            )

    try:
        return with_codes_if_first(ctx, session.account_id, write)
    except IntegrityError as exc:
        raise NameTaken() from exc


# ------------------------------------------------------------------------------------------- passkeys


# What the person said the passkey is on ("this device", "a security key", "a phone"): WebAuthn L3 hints.
HINTS = ("client-device", "security-key", "hybrid")


def registration_options(
    ctx: Context, session: CurrentSession, *, hint: str | None = None
) -> dict[str, object]:
    """POST /factors/passkey/options: a 32-byte single-use challenge, the user's passkeys excluded; ``hint``
    (one of HINTS) becomes the options' ``hints``.

    Raises:
        VerifyAccessRequired.
    """
    require_verified(session, ctx.now())
    return _registration_options(ctx, session, purpose=ChallengePurpose.REGISTER, hint=hint)


def _registration_options(
    ctx: Context,
    session: CurrentSession,
    *,
    purpose: ChallengePurpose,
    hint: str | None = None,
    user_verification: str = "preferred",
) -> dict[str, object]:
    with ctx.db.transaction() as conn:
        account = accounts.by_id(conn, session.account_id)
        if account is None:
            raise NotSignedIn()
        options = wa.registration_options(
            rp_id=ctx.rp_id,
            rp_name=ctx.issuer,
            user_handle=account.user_handle,
            username=account.username,
            display_name=account.display_name,
            exclude_credential_ids=[cid for cid, _ in sf.allow_list(conn, session.account_id)],
            hints=[hint] if hint in HINTS else None,
            user_verification=user_verification,
        )
        sf.put_challenge(
            conn,
            ctx,
            session_key=session.token_hash,
            purpose=purpose,
            challenge=options.challenge,
            account_id=session.account_id,
        )
    return options.options


def _default_name(conn: Connection, account_id: int, aaguid: str) -> str:
    taken = factors.names(conn, account_id)
    provider = wa.provider_name(aaguid)
    if provider and provider not in taken:
        return provider[:64]
    n = factors.count(conn, account_id, type_=FactorKind.PASSKEY) + 1
    while f"Passkey {n}" in taken:
        n += 1
    return f"Passkey {n}"


def register_passkey(
    ctx: Context, session: CurrentSession, *, name: str, credential: object, client: Client
) -> Added:
    """POST /factors/passkey: stored only after every check passes (WA-R01..R17).

    Raises:
        VerifyAccessRequired, InvalidRequest, NameTaken, PasskeyRegistrationRejected.
    """
    now = ctx.now()
    require_verified(session, now)
    wanted = clean_name(name) if name.strip() else None
    with ctx.db.transaction() as conn:
        taken = challenges.take(
            conn, session_key=session.token_hash, purpose=ChallengePurpose.REGISTER, now=now
        )
    if taken is None or taken.account_id != session.account_id:
        raise PasskeyRegistrationRejected()
    verified = wa.verify_registration(
        credential=credential,
        expected_challenge=taken.challenge,
        expected_origin=ctx.origin,
        expected_rp_id=ctx.rp_id,
    )
    factor_id = new_id()
    audit = Audit(ctx, session.account_id, client, now)

    def write(codes: list[NewCodes] | None) -> Added:
        with ctx.db.transaction() as conn:
            accounts.lock(conn, session.account_id)
            if factors.passkey_by_credential_id(conn, verified.credential_id) is not None:
                raise PasskeyRegistrationRejected()  # WA-R15: registered already, to anyone
            final_name = wanted or _default_name(conn, session.account_id, verified.aaguid)
            factors.insert_passkey(
                conn,
                factor_id=factor_id,
                account_id=session.account_id,
                name=final_name,
                passkey=verified,
                now=now,
            )
            return finish_enrolment(
                conn,
                audit,
                session,
                kind=FactorKind.PASSKEY,
                factor_id=factor_id,
                name=final_name,
                codes=codes,
            )

    try:
        return with_codes_if_first(ctx, session.account_id, write)
    except IntegrityError as exc:
        with ctx.db.transaction() as conn:
            clash = factors.passkey_by_credential_id(conn, verified.credential_id) is not None
        if clash:
            raise PasskeyRegistrationRejected() from exc
        raise NameTaken() from exc


# ------------------------------------------------------------------------- the automatic passkey upgrade


def automatic_options(ctx: Context, session: CurrentSession) -> dict[str, object]:
    """POST /factors/passkey/automatic/options: creation options for a conditional create, allowed only while
    the session holds the grant of a password sign-in (5 minutes); no user verification asked.

    Raises:
        VerifyAccessRequired: no live grant (not right after a password sign-in, or used).
    """
    now = ctx.now()
    if session.passkey_upgrade_until is None or session.passkey_upgrade_until <= now:
        raise VerifyAccessRequired()
    return _registration_options(
        ctx, session, purpose=ChallengePurpose.REGISTER_AUTOMATIC, user_verification="discouraged"
    )


def register_automatic(ctx: Context, session: CurrentSession, *, credential: object, client: Client) -> Added:
    """POST /factors/passkey/automatic: store the passkey a password manager made by itself right after a
    password sign-in. The grant is used (once) in the first transaction, with the challenge; user presence
    and verification are not required (WebAuthn L3 §7.1 for a conditional create). Only an account that has a
    second factor and no passkey gets it (never the first factor); ``passkey_added_automatically`` is recorded
    and e-mailed.

    Raises:
        VerifyAccessRequired: no live grant. PasskeyRegistrationRejected: every other refusal.
    """
    now = ctx.now()
    with ctx.db.transaction() as conn:
        granted = session_store.take_passkey_upgrade(conn, token_hash=session.token_hash, now=now)
        taken = challenges.take(
            conn, session_key=session.token_hash, purpose=ChallengePurpose.REGISTER_AUTOMATIC, now=now
        )
    if not granted:
        raise VerifyAccessRequired()
    if taken is None or taken.account_id != session.account_id:
        raise PasskeyRegistrationRejected()
    verified = wa.verify_registration(
        credential=credential,
        expected_challenge=taken.challenge,
        expected_origin=ctx.origin,
        expected_rp_id=ctx.rp_id,
        require_user_presence=False,
    )
    factor_id = new_id()
    audit = Audit(ctx, session.account_id, client, now)
    try:
        with ctx.db.transaction() as conn:
            accounts.lock(conn, session.account_id)
            kinds = factors.kinds(conn, session.account_id)
            if not kinds or FactorKind.PASSKEY in kinds:
                raise PasskeyRegistrationRejected()
            if factors.passkey_by_credential_id(conn, verified.credential_id) is not None:
                raise PasskeyRegistrationRejected()
            name = _default_name(conn, session.account_id, verified.aaguid)
            factors.insert_passkey(
                conn, factor_id=factor_id, account_id=session.account_id, name=name, passkey=verified, now=now
            )
            return finish_enrolment(
                conn,
                audit,
                session,
                kind=FactorKind.PASSKEY,
                factor_id=factor_id,
                name=name,
                codes=None,
                event=EventType.PASSKEY_ADDED_AUTOMATICALLY,
            )
    except (IntegrityError, CodesNeeded) as exc:
        raise PasskeyRegistrationRejected() from exc
