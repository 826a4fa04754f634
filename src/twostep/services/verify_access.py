"""Verify access: re-run sign-in for the signed-in user, bound to this session, 10 minutes (SEC-43..45)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from twostep.core import passkeys as wa
from twostep.core.errors import InvalidCode, NotSignedIn, PasskeyRejected, VerifyAccessRequired
from twostep.core.throttle import RECOVERY, SECOND_FACTOR
from twostep.services import second_factor as sf
from twostep.services.context import (
    PENDING_LOGIN_TTL,
    VERIFIED_ACCESS_TTL,
    Client,
    Context,
)
from twostep.services.notifications import record
from twostep.services.passwords import check_password
from twostep.services.ratelimit import edge_limit
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
            until = now + VERIFIED_ACCESS_TTL
            token = step_up(conn, ctx, session, verified_until=until, reauth_until=None)
            record(
                conn,
                account_id=session.account_id,
                type_="access_verified",
                client=client,
                now=now,
                detail={"method": "password", "session": session.public_id},
                origin=ctx.origin,
            )
            return VerifyResult("verified", token, [], until)
        methods = methods_for(kinds, recovery.remaining(conn, session.account_id))
        token = step_up(
            conn, ctx, session, verified_until=session.verified_until, reauth_until=now + PENDING_LOGIN_TTL
        )
    return VerifyResult("second_factor_required", token, methods, None)


def _require_password_step(session: CurrentSession, now: datetime) -> None:
    if session.reauth_until is None or session.reauth_until <= now:
        raise VerifyAccessRequired("Enter your password first.")


def _failed(
    ctx: Context, session: CurrentSession, *, client: Client, method: str, failures: int, replay: bool
) -> None:
    now = ctx.now()
    with ctx.db.transaction() as conn:
        if replay:
            record(
                conn,
                account_id=session.account_id,
                type_="totp_replay",
                client=client,
                now=now,
                detail={"method": method, "during": "verify_access"},
                origin=ctx.origin,
            )
        sf.record_failure(
            conn,
            account_id=session.account_id,
            failures=failures,
            client=client,
            now=now,
            origin=ctx.origin,
            type_="verify_access_failed",
            detail={"method": method},
            notify=False,
        )


def with_totp(ctx: Context, session: CurrentSession, *, code: str, client: Client) -> VerifyResult:
    """POST /verify-access/totp, after the password step.

    Raises:
        VerifyAccessRequired (no password step), TooManyAttempts, InvalidCode.
    """
    now = ctx.now()
    _require_password_step(session, now)
    with ctx.db.transaction() as conn:
        edge_limit(conn, ctx, client, now)
        failures = sf.reserve(conn, account_id=session.account_id, policy=SECOND_FACTOR, now=now)
        rows = sf.load_totp(conn, session.account_id)
    try:
        match = sf.match_totp(ctx, rows, code, now)
        with ctx.db.transaction() as conn:
            sf.consume_totp(conn, match, now)
            until = now + VERIFIED_ACCESS_TTL
            token = step_up(conn, ctx, session, verified_until=until, reauth_until=None)
            sf.succeeded(conn, session.account_id)
            record(
                conn,
                account_id=session.account_id,
                type_="access_verified",
                client=client,
                now=now,
                detail={"method": "totp", "factor_id": match.factor_id, "session": session.public_id},
                origin=ctx.origin,
            )
    except InvalidCode as exc:
        _failed(
            ctx, session, client=client, method="totp", failures=failures, replay=isinstance(exc, sf.Replay)
        )
        raise InvalidCode() from None
    return VerifyResult("verified", token, [], until)


def with_recovery_code(ctx: Context, session: CurrentSession, *, code: str, client: Client) -> VerifyResult:
    """POST /verify-access/recovery-code, after the password step; the code is consumed.

    Raises:
        VerifyAccessRequired, TooManyAttempts, InvalidCode.
    """
    now = ctx.now()
    _require_password_step(session, now)
    with ctx.db.transaction() as conn:
        edge_limit(conn, ctx, client, now)
        failures = sf.reserve(conn, account_id=session.account_id, policy=RECOVERY, now=now)
        candidate = sf.find_recovery(conn, account_id=session.account_id, code=code)
    try:
        candidate = sf.check_recovery(candidate)
        with ctx.db.transaction() as conn:
            sf.consume_recovery(conn, candidate, now)
            until = now + VERIFIED_ACCESS_TTL
            token = step_up(conn, ctx, session, verified_until=until, reauth_until=None)
            sf.succeeded(conn, session.account_id)
            remaining = recovery.remaining(conn, session.account_id)
            record(
                conn,
                account_id=session.account_id,
                type_="recovery_code_used",
                client=client,
                now=now,
                detail={"remaining": remaining, "during": "verify_access"},
                origin=ctx.origin,
            )
            record(
                conn,
                account_id=session.account_id,
                type_="access_verified",
                client=client,
                now=now,
                detail={"method": "recovery_code", "session": session.public_id},
                origin=ctx.origin,
            )
    except InvalidCode:
        _failed(ctx, session, client=client, method="recovery_code", failures=failures, replay=False)
        raise InvalidCode() from None
    return VerifyResult("verified", token, [], until, recovery_codes_remaining=remaining)


def _password_step_done(session: CurrentSession, now: datetime) -> bool:
    return session.reauth_until is not None and session.reauth_until > now


def passkey_options(ctx: Context, session: CurrentSession, *, client: Client) -> dict[str, object]:
    """POST /verify-access/passkey/options: user verification required unless the password was just given."""
    now = ctx.now()
    with ctx.db.transaction() as conn:
        edge_limit(conn, ctx, client, now)
        allow = [(p.credential_id, p.transports) for p in factors.passkeys_for(conn, session.account_id)]
        uv = "preferred" if _password_step_done(session, now) else "required"
        opts = wa.authentication_options(rp_id=ctx.rp_id, allow_credentials=allow, user_verification=uv)
        sf.put_challenge(
            conn,
            ctx,
            session_key=session.token_hash,
            purpose="verify",
            challenge=opts.challenge,
            account_id=session.account_id,
            allowed=[cid for cid, _ in allow],
        )
    return opts.options


def with_passkey(
    ctx: Context, session: CurrentSession, *, credential: object, client: Client
) -> tuple[str, datetime]:
    """POST /verify-access/passkey: with user verification it is enough on its own.

    Raises:
        PasskeyRejected, TooManyAttempts, NotSignedIn.
    """
    now = ctx.now()
    with ctx.db.transaction() as conn:
        edge_limit(conn, ctx, client, now)
        taken = challenges.take(conn, session_key=session.token_hash, purpose="verify", now=now)
        if taken is not None:
            prepared = sf.prepare_assertion(
                conn, ctx, credential=credential, account_id=session.account_id, now=now
            )
    if taken is None:
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
        )
    except PasskeyRejected as exc:
        with ctx.db.transaction() as conn:
            sf.record_failure(
                conn,
                account_id=session.account_id,
                failures=exc.failures if isinstance(exc, sf.Refused) else 0,
                client=client,
                now=now,
                origin=ctx.origin,
                type_="verify_access_failed",
                detail={"method": "passkey", "session": session.public_id},
                notify=False,
            )
        raise PasskeyRejected() from None
    until = now + VERIFIED_ACCESS_TTL
    with ctx.db.transaction() as conn:
        sf.use_passkey(conn, checked, now)
        token = step_up(conn, ctx, session, verified_until=until, reauth_until=None)
        sf.succeeded(conn, session.account_id)
        record(
            conn,
            account_id=session.account_id,
            type_="access_verified",
            client=client,
            now=now,
            detail={"method": "passkey", "factor_id": checked.factor_id, "session": session.public_id},
            origin=ctx.origin,
        )
    return token, until


def account_of(ctx: Context, session: CurrentSession) -> accounts.AccountRow:
    with ctx.db.transaction() as conn:
        account = accounts.by_id(conn, session.account_id)
    if account is None:
        raise NotSignedIn()
    return account
