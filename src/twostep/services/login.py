"""Sign-in: the password step, then the second step with an authenticator app or a recovery code."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from twostep.core import devices
from twostep.core.errors import Busy, InvalidCode, InvalidCredentials, NoPendingLogin, TooManyAttempts
from twostep.core.passwords import MAX_INPUT_CHARS
from twostep.core.throttle import (
    PASSWORD_ADDRESS,
    PASSWORD_USER,
    PASSWORD_USER_ADDRESS,
    RECOVERY,
    SECOND_FACTOR,
    retry_after_seconds,
)
from twostep.services import second_factor as sf
from twostep.services.accounts import normalize_username
from twostep.services.context import VERIFIED_ACCESS_TTL, Client, Context, new_id
from twostep.services.notifications import record
from twostep.services.ratelimit import edge_limit
from twostep.services.sessions import create_active, create_pending, end, pending
from twostep.storage import accounts, factors, recovery, throttle
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


@dataclass(frozen=True)
class PasswordKeys:
    """The counters of one password attempt (H07, SEC-28)."""

    address: str  # every username from this client address
    user_address: str  # this username from this client address
    user: str  # this username from every address: the ceiling a known browser does not meet


def password_keys(username: str, ip: str) -> PasswordKeys:
    """Keys by the normalised username, known or not (no enumeration, SEC-05); a username that cannot exist
    gets a digest of itself, so that case and width variants share a key and every key stays short."""
    normalized = normalize_username(username)
    if normalized is None:
        digest = hashlib.sha256(username.casefold().encode("utf-8", "surrogatepass")).hexdigest()[:40]
        normalized = f"?{digest}"
    return PasswordKeys(f"pw-ip:{ip}", f"pw-user-ip:{normalized}|{ip}", f"pw-user:{normalized}")


def _reserve(conn: Connection, keys: PasswordKeys, *, known_browser: bool, now: datetime) -> datetime | None:
    """Count the attempt on each counter in turn (address, username and address, username), before the
    password is checked; when one must wait, the ones before it are refunded and its wait is returned."""
    plan = [(keys.address, PASSWORD_ADDRESS), (keys.user_address, PASSWORD_USER_ADDRESS)]
    if not known_browser:
        plan.append((keys.user, PASSWORD_USER))
    counted: list[str] = []
    for key, policy in plan:
        blocked = throttle.reserve_attempt(conn, key=key, policy=policy, now=now).blocked_until
        if blocked is not None:
            for done in counted:
                throttle.refund_attempt(conn, key=done)
            return blocked
        counted.append(key)
    return None


def _refund(ctx: Context, keys: PasswordKeys, *, known_browser: bool) -> None:
    """Give back an attempt that was counted but never evaluated (the hasher was busy, H03)."""
    with ctx.db.transaction() as conn:
        throttle.refund_attempt(conn, key=keys.address)
        throttle.refund_attempt(conn, key=keys.user_address)
        if not known_browser:
            throttle.refund_attempt(conn, key=keys.user)


def check_password(
    ctx: Context,
    *,
    username: str,
    password: str,
    client: Client,
    device: str | None = None,
    known_browser: bool = False,
) -> accounts.AccountRow:
    """The first factor, throttled per client address, per username and address, and per username (H07).

    The per-username ceiling (security.md §0.7) is skipped by a browser that signed in to this account
    before: ``device`` holds a device cookie for it, or ``known_browser`` says the caller's session is the
    account's own (verify access).

    Raises:
        TooManyAttempts: a counter must wait; the password was not checked.
        InvalidCredentials: unknown user or wrong password, indistinguishable (SEC-05).
        Busy: too many password hashes in this worker; the attempt was not counted (H03).
    """
    now = ctx.now()
    normalized = normalize_username(username)
    keys = password_keys(username, client.ip)
    with ctx.db.transaction() as conn:
        edge_limit(conn, ctx, client, now)
        account = accounts.by_username(conn, normalized) if normalized else None
        known_browser = known_browser or (
            account is not None
            and devices.is_known_device(
                key=ctx.device_key,
                cookie=device,
                username=account.username,
                password_hash=account.password_hash,
            )
        )
        blocked = _reserve(conn, keys, known_browser=known_browser, now=now)
    if blocked is not None:
        raise TooManyAttempts(retry_after_seconds(blocked, now))
    try:
        if len(password) > MAX_INPUT_CHARS or account is None:
            ctx.hasher.dummy_verify(password[:MAX_INPUT_CHARS])
            matched = False
        else:
            matched = ctx.hasher.verify(account.password_hash, password)
    except Busy:
        _refund(ctx, keys, known_browser=known_browser)
        raise
    if account is None or not matched:
        if account is not None:
            with ctx.db.transaction() as conn:
                record(
                    conn,
                    account_id=account.id,
                    type_="password_failed",
                    client=client,
                    now=now,
                    origin=ctx.origin,
                )
        raise InvalidCredentials()
    new_hash: str | None = None
    if ctx.hasher.needs_rehash(account.password_hash):
        with contextlib.suppress(Busy):  # the next sign-in rehashes instead
            new_hash = ctx.hasher.hash(password)
    with ctx.db.transaction() as conn:
        # The same order as the reservation: no deadlock between parallel sign-ins. The ceiling is reset
        # only by a browser that had to meet it, so the owner's known browser does not refill an attacker's
        # budget.
        throttle.refund_attempt(conn, key=keys.address)
        throttle.reset(conn, key=keys.user_address)
        if not known_browser:
            throttle.reset(conn, key=keys.user)
        if new_hash is not None:
            accounts.set_password_hash(conn, account.id, new_hash)
            account = dataclasses.replace(account, password_hash=new_hash)
    return account


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
