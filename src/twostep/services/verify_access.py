"""Verify access: re-run sign-in for the signed-in user, bound to this session, 10 minutes (SEC-43..45).

The password, then a second factor (authenticator app, recovery code or passkey); or a passkey with user
verification alone. Every successful verification ends in ``finish_verify``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from twostep.core import oidc
from twostep.core import passkeys as wa
from twostep.core.errors import AccountLocked, InvalidCode, PasskeyRejected, VerifyAccessRequired
from twostep.core.events import EventType
from twostep.core.kinds import ChallengePurpose, Method
from twostep.i18n import N_
from twostep.services import regulator
from twostep.services import second_factor as sf
from twostep.services.audit import Audit
from twostep.services.context import PENDING_LOGIN_TTL, VERIFIED_ACCESS_TTL, Client, Context
from twostep.services.passwords import check_password
from twostep.services.regulator import Outcome
from twostep.services.sessions import CurrentSession, step_up
from twostep.services.sign_in import methods_for
from twostep.storage import accounts, challenges, factors, recovery


@dataclass(frozen=True)
class VerifyResult:
    """``status`` "verified" or "second_factor_required"; ``token`` is the rotated cookie value."""

    status: str
    token: str
    methods: list[str]
    verified_until: datetime | None
    recovery_codes_remaining: int | None = None


def finish_verify(
    conn: Connection,
    audit: Audit,
    session: CurrentSession,
    *,
    method: Method,
    factor_id: str | None = None,
    recovery_codes_remaining: int | None = None,
    passkey: wa.VerifiedAssertion | None = None,
) -> VerifyResult:
    """The one success path of every verification, in the caller's transaction: step the session up with a
    new id and ``verified_until`` 10 minutes on, reset the account's second-factor counter (when a second
    factor was used), record ``access_verified``.

    Raises:
        NotSignedIn: the session ended meanwhile.
    """
    if accounts.is_locked(conn, session.account_id):
        raise AccountLocked()
    until = audit.now + VERIFIED_ACCESS_TTL
    # The session has now shown both what it did at sign-in and what it did here (OpenID Connect `amr`).
    done = oidc.amr_for(
        method,
        synced_passkey=passkey.backup_eligible if passkey is not None else True,
        user_verified=passkey.user_verified if passkey is not None else False,
    )
    amr = oidc.format_amr(done | set(oidc.parse_amr(session.amr)))
    token = step_up(conn, audit.ctx, session, verified_until=until, reauth_until=None, amr=amr)
    if method.is_second_factor:
        regulator.settle(conn, regulator.second_factor(session.account_id), outcome=Outcome.SUCCEEDED)
    audit.record(
        conn, EventType.ACCESS_VERIFIED, method=method, factor_id=factor_id, session=session.public_id
    )
    return VerifyResult("verified", token, [], until, recovery_codes_remaining=recovery_codes_remaining)


def with_password(ctx: Context, session: CurrentSession, *, password: str, client: Client) -> VerifyResult:
    """POST /verify-access: the password, with the sign-in counters.

    Raises:
        TooManyAttempts, InvalidCredentials, NotSignedIn.
    """
    # The session is this account's own: its browser signed in before, so it skips the per-username
    # ceiling (H07).
    check_password(ctx, username=session.username, password=password, client=client, known_browser=True)
    now = ctx.now()
    with ctx.db.transaction() as conn:
        kinds = factors.kinds(conn, session.account_id)
        if not kinds:
            return finish_verify(
                conn, Audit(ctx, session.account_id, client, now), session, method=Method.PASSWORD
            )
        methods = methods_for(kinds, recovery.remaining(conn, session.account_id))
        token = step_up(
            conn, ctx, session, verified_until=session.verified_until, reauth_until=now + PENDING_LOGIN_TTL
        )
    return VerifyResult("second_factor_required", token, methods, None)


def _require_password_step(session: CurrentSession, now: datetime) -> None:
    if session.reauth_until is None or session.reauth_until <= now:
        raise VerifyAccessRequired(N_("Enter your password first."))


def _password_step_done(session: CurrentSession, now: datetime) -> bool:
    return session.reauth_until is not None and session.reauth_until > now


def _failed(
    ctx: Context, audit: Audit, *, method: Method, failures: int, replay: bool = False, **detail: object
) -> None:
    """A failed second factor while verifying access, in a transaction of its own; never an e-mail of its own
    (the session is the owner's)."""
    with ctx.db.transaction() as conn:
        if replay:
            audit.record(conn, EventType.TOTP_REPLAY, method=method, during="verify_access")
        audit.second_factor_failed(
            conn, EventType.VERIFY_ACCESS_FAILED, failures=failures, notify=False, method=method, **detail
        )


def with_totp(ctx: Context, session: CurrentSession, *, code: str, client: Client) -> VerifyResult:
    """POST /verify-access/totp, after the password step.

    Raises:
        VerifyAccessRequired (no password step), TooManyAttempts, InvalidCode.
    """
    now = ctx.now()
    _require_password_step(session, now)
    audit = Audit(ctx, session.account_id, client, now)
    edge = regulator.edge(ctx, client)
    with ctx.db.transaction() as conn:
        failures = regulator.reserve(conn, edge, regulator.second_factor(session.account_id), now=now)
        rows = factors.totp_for(conn, session.account_id)
    try:
        match = sf.match_totp(ctx, rows, code, now)
        with ctx.db.transaction() as conn:
            sf.consume_totp(conn, match, now)
            return finish_verify(conn, audit, session, method=Method.TOTP, factor_id=match.factor_id)
    except InvalidCode as exc:
        _failed(ctx, audit, method=Method.TOTP, failures=failures, replay=isinstance(exc, sf.Replay))
        raise InvalidCode() from None


def with_recovery_code(ctx: Context, session: CurrentSession, *, code: str, client: Client) -> VerifyResult:
    """POST /verify-access/recovery-code, after the password step; the code is consumed.

    Raises:
        VerifyAccessRequired, TooManyAttempts, InvalidCode.
    """
    now = ctx.now()
    _require_password_step(session, now)
    audit = Audit(ctx, session.account_id, client, now)
    edge = regulator.edge(ctx, client)
    with ctx.db.transaction() as conn:
        counter = regulator.second_factor(session.account_id, recovery_code=True)
        failures = regulator.reserve(conn, edge, counter, now=now)
        candidate = sf.find_recovery(conn, account_id=session.account_id, code=code)
    try:
        candidate = sf.check_recovery(candidate)
        with ctx.db.transaction() as conn:
            sf.consume_recovery(conn, candidate, now)
            remaining = recovery.remaining(conn, session.account_id)
            audit.record(conn, EventType.RECOVERY_CODE_USED, remaining=remaining, during="verify_access")
            return finish_verify(
                conn, audit, session, method=Method.RECOVERY_CODE, recovery_codes_remaining=remaining
            )
    except InvalidCode:
        _failed(ctx, audit, method=Method.RECOVERY_CODE, failures=failures)
        raise InvalidCode() from None


def passkey_options(ctx: Context, session: CurrentSession, *, client: Client) -> dict[str, object]:
    """POST /verify-access/passkey/options: user verification required unless the password was just given."""
    now = ctx.now()
    edge = regulator.edge(ctx, client)
    with ctx.db.transaction() as conn:
        regulator.reserve(conn, edge, now=now)
        allow = sf.allow_list(conn, session.account_id)
        uv = "preferred" if _password_step_done(session, now) else "required"
        opts = wa.authentication_options(rp_id=ctx.rp_id, allow_credentials=allow, user_verification=uv)
        sf.put_challenge(
            conn,
            ctx,
            session_key=session.token_hash,
            purpose=ChallengePurpose.VERIFY,
            challenge=opts.challenge,
            account_id=session.account_id,
            allowed=[cid for cid, _ in allow],
        )
    return opts.options


def with_passkey(
    ctx: Context, session: CurrentSession, *, credential: object, client: Client
) -> VerifyResult:
    """POST /verify-access/passkey: with user verification it is enough on its own.

    Raises:
        PasskeyRejected, TooManyAttempts, NotSignedIn.
    """
    now = ctx.now()
    audit = Audit(ctx, session.account_id, client, now)
    prepared: sf.PreparedAssertion | None = None
    edge = regulator.edge(ctx, client)
    with ctx.db.transaction() as conn:
        regulator.reserve(conn, edge, now=now)
        taken = challenges.take(
            conn, session_key=session.token_hash, purpose=ChallengePurpose.VERIFY, now=now
        )
        if taken is not None:
            prepared = sf.prepare_assertion(
                conn, credential=credential, account_id=session.account_id, now=now
            )
    if taken is None or prepared is None:
        raise PasskeyRejected()
    try:
        checked = sf.check_assertion(
            ctx,
            credential=credential,
            taken=taken,
            prepared=prepared,
            account_id=session.account_id,
            require_uv=not _password_step_done(session, now),
            client=client,
            now=now,
        )
    except PasskeyRejected as exc:
        failures = exc.failures if isinstance(exc, sf.Refused) else 0
        _failed(ctx, audit, method=Method.PASSKEY, failures=failures, session=session.public_id)
        raise PasskeyRejected() from None
    with ctx.db.transaction() as conn:
        sf.use_passkey(conn, checked, now, audit)
        return finish_verify(
            conn,
            audit,
            session,
            method=Method.PASSKEY,
            factor_id=checked.factor_id,
            passkey=checked.assertion,
        )
