"""Sign-in: the password step, then the second step (authenticator app, recovery code, passkey), or a
passwordless passkey."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from twostep.core import devices
from twostep.core import passkeys as wa
from twostep.core.errors import InvalidCode, NoPendingLogin, PasskeyRejected, TooManyAttempts
from twostep.core.throttle import PASSKEY_ADDRESS, RECOVERY, SECOND_FACTOR, retry_after_seconds
from twostep.services import second_factor as sf
from twostep.services.context import VERIFIED_ACCESS_TTL, Client, Context, hash_token, new_id
from twostep.services.notifications import record
from twostep.services.passwords import check_password
from twostep.services.ratelimit import edge_limit
from twostep.services.sessions import create_active, create_pending, end, pending
from twostep.storage import challenges, factors, recovery, throttle
from twostep.storage import sessions as session_store


@dataclass(frozen=True)
class LoginResult:
    """``status`` is "signed_in" or "second_factor_required"; ``token`` is the new cookie value;
    ``device`` the new device cookie value after a password step (H07)."""

    status: str
    token: str
    methods: list[str]
    recovery_codes_remaining: int | None = None
    device: str | None = None


def methods_for(kinds: set[str], recovery_remaining: int) -> list[str]:
    out: list[str] = [kind for kind in ("totp", "passkey") if kind in kinds]
    if out and recovery_remaining > 0:
        out.append("recovery_code")
    return out


def password_step(
    ctx: Context,
    *,
    username: str,
    password: str,
    client: Client,
    current_token: str | None,
    device: str | None = None,
) -> LoginResult:
    """POST /login: sign in, or open a pending sign-in that owes a second factor (5 minutes).

    ``device`` is the browser's device cookie; the result's ``device`` is its new value (H07).

    Raises:
        TooManyAttempts, InvalidCredentials, Busy: see check_password.
    """
    account = check_password(ctx, username=username, password=password, client=client, device=device)
    remembered = devices.remember_device(
        key=ctx.device_key, cookie=device, username=account.username, password_hash=account.password_hash
    )
    now = ctx.now()
    with ctx.db.transaction() as conn:
        end(conn, ctx, token=current_token, now=now)
        kinds = factors.kinds(conn, account.id)
        if not kinds:
            sid = new_id()
            token = create_active(
                conn, account_id=account.id, now=now, client=client, second_factor=None, public_id=sid
            )
            record(
                conn,
                account_id=account.id,
                type_="signed_in",
                client=client,
                now=now,
                detail={"method": "password", "session": sid},
                origin=ctx.origin,
            )
            return LoginResult("signed_in", token, [], device=remembered)
        methods = methods_for(kinds, recovery.remaining(conn, account.id))
        token = create_pending(conn, account_id=account.id, now=now, client=client)
    return LoginResult("second_factor_required", token, methods, device=remembered)


def _failed(
    ctx: Context,
    *,
    account_id: int,
    pending_hash: str,
    client: Client,
    method: str,
    replay: bool,
    failures: int,
) -> None:
    """Record a failed second step in a transaction of its own."""
    with ctx.db.transaction() as conn:
        _record_failed(
            conn,
            ctx,
            account_id=account_id,
            pending_hash=pending_hash,
            client=client,
            method=method,
            replay=replay,
            failures=failures,
        )


def _record_failed(
    conn: Connection,
    ctx: Context,
    *,
    account_id: int,
    pending_hash: str,
    client: Client,
    method: str,
    replay: bool,
    failures: int,
) -> None:
    """Record a failed second step; the first failure of a pending sign-in is told to the owner (SEC-07)."""
    now = ctx.now()
    if replay:
        record(
            conn,
            account_id=account_id,
            type_="totp_replay",
            client=client,
            now=now,
            detail={"method": method},
            origin=ctx.origin,
            notify=False,
        )
    first = session_store.mark_alerted(conn, token_hash=pending_hash)
    sf.record_failure(
        conn,
        account_id=account_id,
        failures=failures,
        client=client,
        now=now,
        origin=ctx.origin,
        type_="second_factor_failed",
        detail={"method": method},
        notify=first,
    )


def totp_step(ctx: Context, *, token: str | None, code: str, client: Client) -> LoginResult:
    """POST /login/totp: finish a pending sign-in with a code from an authenticator app.

    Raises:
        NoPendingLogin, TooManyAttempts, InvalidCode (wrong, replayed, or from a removed factor).
    """
    now = ctx.now()
    # One transaction: the attempt is counted (and, on PostgreSQL, the account's counter row locked)
    # before the code is evaluated; a failure is recorded and committed before the error is raised.
    with ctx.db.transaction() as conn:
        edge_limit(conn, ctx, client, now)
        pend = pending(conn, token=token, now=now)
        failures = sf.reserve(conn, account_id=pend.account_id, policy=SECOND_FACTOR, now=now)
        try:
            match = sf.match_totp(ctx, sf.load_totp(conn, pend.account_id), code, now)
            sf.consume_totp(conn, match, now)
        except InvalidCode as exc:
            _record_failed(
                conn,
                ctx,
                account_id=pend.account_id,
                pending_hash=pend.token_hash,
                client=client,
                method="totp",
                replay=isinstance(exc, sf.Replay),
                failures=failures,
            )
            failed = True
        else:
            failed = False
            if session_store.consume_pending(conn, token_hash=pend.token_hash, now=now) is None:
                raise NoPendingLogin()
            new_token = create_active(
                conn,
                account_id=pend.account_id,
                now=now,
                client=client,
                second_factor="totp",
                public_id=pend.public_id,
            )
            sf.succeeded(conn, pend.account_id)
            record(
                conn,
                account_id=pend.account_id,
                type_="signed_in",
                client=client,
                now=now,
                detail={"method": "totp", "factor_id": match.factor_id, "session": pend.public_id},
                origin=ctx.origin,
            )
    if failed:
        raise InvalidCode()
    return LoginResult("signed_in", new_token, [])


def recovery_step(ctx: Context, *, token: str | None, code: str, client: Client) -> LoginResult:
    """POST /login/recovery-code: finish a pending sign-in with a recovery code; access counts as verified.

    Raises:
        NoPendingLogin, TooManyAttempts, InvalidCode.
    """
    now = ctx.now()
    with ctx.db.transaction() as conn:
        edge_limit(conn, ctx, client, now)
        pend = pending(conn, token=token, now=now)
        failures = sf.reserve(conn, account_id=pend.account_id, policy=RECOVERY, now=now)
        candidate = sf.find_recovery(conn, account_id=pend.account_id, code=code)
    try:
        candidate = sf.check_recovery(candidate)
        with ctx.db.transaction() as conn:
            sf.consume_recovery(conn, candidate, now)
            if session_store.consume_pending(conn, token_hash=pend.token_hash, now=now) is None:
                raise NoPendingLogin()
            new_token = create_active(
                conn,
                account_id=pend.account_id,
                now=now,
                client=client,
                second_factor="recovery_code",
                verified_until=now + VERIFIED_ACCESS_TTL,
                public_id=pend.public_id,
            )
            sf.succeeded(conn, pend.account_id)
            remaining = recovery.remaining(conn, pend.account_id)
            record(
                conn,
                account_id=pend.account_id,
                type_="recovery_code_used",
                client=client,
                now=now,
                detail={"remaining": remaining},
                origin=ctx.origin,
            )
            record(
                conn,
                account_id=pend.account_id,
                type_="signed_in",
                client=client,
                now=now,
                detail={"method": "recovery_code", "session": pend.public_id},
                origin=ctx.origin,
            )
    except InvalidCode:
        _failed(
            ctx,
            account_id=pend.account_id,
            pending_hash=pend.token_hash,
            client=client,
            method="recovery_code",
            replay=False,
            failures=failures,
        )
        raise InvalidCode() from None
    return LoginResult("signed_in", new_token, [], recovery_codes_remaining=remaining)


@dataclass(frozen=True)
class LoginOptions:
    options: dict[str, object]
    passwordless: bool


def passkey_options(ctx: Context, *, token: str | None, ceremony_key: str, client: Client) -> LoginOptions:
    """POST /login/passkey/options: the pending user's passkeys, or a discoverable request (UV required)."""
    now = ctx.now()
    with ctx.db.transaction() as conn:
        edge_limit(conn, ctx, client, now)
        pend = session_store.get_pending(conn, token_hash=hash_token(token), now=now) if token else None
        if pend is not None:
            allow = [(p.credential_id, p.transports) for p in factors.passkeys_for(conn, pend.account_id)]
            opts = wa.authentication_options(
                rp_id=ctx.rp_id, allow_credentials=allow, user_verification="preferred"
            )
            sf.put_challenge(
                conn,
                ctx,
                session_key=pend.token_hash,
                purpose="login",
                challenge=opts.challenge,
                account_id=pend.account_id,
                allowed=[cid for cid, _ in allow],
            )
            return LoginOptions(opts.options, passwordless=False)
        opts = wa.authentication_options(rp_id=ctx.rp_id, allow_credentials=[], user_verification="required")
        sf.put_challenge(
            conn,
            ctx,
            session_key=hash_token(ceremony_key),
            purpose="passwordless",
            challenge=opts.challenge,
            account_id=None,
        )
    return LoginOptions(opts.options, passwordless=True)


def passwordless_key(ip: str) -> str:
    """Passwordless assertions are counted per client address (H01); the challenge is single use."""
    return f"pk-ip:{ip}"


def passkey_step(
    ctx: Context, *, token: str | None, ceremony_key: str | None, credential: object, client: Client
) -> str:
    """POST /login/passkey: the second step of a pending sign-in, or a passwordless sign-in.

    Raises:
        PasskeyRejected (also for a missing or used challenge), TooManyAttempts.
    """
    now = ctx.now()
    blocked: datetime | None = None
    with ctx.db.transaction() as conn:
        edge_limit(conn, ctx, client, now)
        pend = session_store.get_pending(conn, token_hash=hash_token(token), now=now) if token else None
        if pend is not None:
            taken = challenges.take(conn, session_key=pend.token_hash, purpose="login", now=now)
        elif ceremony_key:
            taken = challenges.take(
                conn, session_key=hash_token(ceremony_key), purpose="passwordless", now=now
            )
            if taken is not None:
                # Counted before anything is evaluated, on the address only: a stranger naming someone's
                # credential id must not move that account's counter (H01).
                blocked = throttle.reserve_attempt(
                    conn, key=passwordless_key(client.ip), policy=PASSKEY_ADDRESS, now=now
                ).blocked_until
        else:
            taken = None
        account_id = pend.account_id if pend is not None else None
        if taken is not None and blocked is None:
            prepared = sf.prepare_assertion(conn, ctx, credential=credential, account_id=account_id, now=now)
    if blocked is not None:
        raise TooManyAttempts(retry_after_seconds(blocked, now))
    if taken is None:
        raise PasskeyRejected()
    try:
        checked = sf.check_assertion(
            ctx,
            credential=credential,
            taken=taken,
            prepared=prepared,
            account_id=account_id,
            require_uv=pend is None,
            client=client,
        )
        with ctx.db.transaction() as conn:
            sf.use_passkey(conn, checked, now)
            if (
                pend is not None
                and session_store.consume_pending(conn, token_hash=pend.token_hash, now=now) is None
            ):
                raise PasskeyRejected()
            if token and pend is None:
                session_store.delete_one(conn, token_hash=hash_token(token))
            if pend is None:
                throttle.refund_attempt(conn, key=passwordless_key(client.ip))
            sid = pend.public_id if pend is not None else new_id()
            new_token = create_active(
                conn,
                account_id=checked.account_id,
                now=now,
                client=client,
                second_factor="passkey",
                public_id=sid,
            )
            sf.succeeded(conn, checked.account_id)
            record(
                conn,
                account_id=checked.account_id,
                type_="signed_in",
                client=client,
                now=now,
                detail={
                    "method": "passkey" if pend else "passkey_passwordless",
                    "factor_id": checked.factor_id,
                    "session": sid,
                },
                origin=ctx.origin,
            )
    except PasskeyRejected as exc:
        with ctx.db.transaction() as conn:
            if pend is not None:
                first = session_store.mark_alerted(conn, token_hash=pend.token_hash)
                sf.record_failure(
                    conn,
                    account_id=pend.account_id,
                    failures=exc.failures if isinstance(exc, sf.Refused) else 0,
                    client=client,
                    now=now,
                    origin=ctx.origin,
                    type_="second_factor_failed",
                    detail={"method": "passkey", "session": pend.public_id},
                    notify=first,
                )
            elif prepared.row is not None:
                # The account whose credential was named sees the attempt in its security log (H01); no
                # e-mail: anyone who saw the credential id can cause it, and it proves nothing about the
                # password.
                record(
                    conn,
                    account_id=prepared.row.account_id,
                    type_="passkey_sign_in_failed",
                    client=client,
                    now=now,
                    detail={"method": "passkey_passwordless", "factor_id": prepared.row.id},
                    origin=ctx.origin,
                    notify=False,
                )
        raise PasskeyRejected() from None
    return new_token


def sweep_abandoned(ctx: Context) -> int:
    """End expired pending sign-ins; each one never told about gives one event and e-mail (SEC-07)."""
    now = ctx.now()
    with ctx.db.transaction() as conn:
        gone = session_store.take_abandoned(conn, now=now)
        for account_id, alerted, ip, user_agent in gone:
            if not alerted:
                record(
                    conn,
                    account_id=account_id,
                    type_="second_factor_abandoned",
                    client=Client(ip, user_agent),
                    now=now,
                    origin=ctx.origin,
                )
    return len(gone)
