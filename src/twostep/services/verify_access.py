"""Verify access: re-run sign-in for the signed-in user, bound to this session, 10 minutes (SEC-43..45)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from twostep.core.errors import InvalidCode, NotSignedIn, VerifyAccessRequired
from twostep.core.throttle import RECOVERY, SECOND_FACTOR
from twostep.services import second_factor as sf
from twostep.services.context import (
    PENDING_LOGIN_TTL,
    VERIFIED_ACCESS_TTL,
    Client,
    Context,
)
from twostep.services.login import check_password, methods_for
from twostep.services.notifications import record
from twostep.services.ratelimit import edge_limit
from twostep.services.sessions import CurrentSession, step_up
from twostep.storage import accounts, factors, recovery


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


def account_of(ctx: Context, session: CurrentSession) -> accounts.AccountRow:
    with ctx.db.transaction() as conn:
        account = accounts.by_id(conn, session.account_id)
    if account is None:
        raise NotSignedIn()
    return account
