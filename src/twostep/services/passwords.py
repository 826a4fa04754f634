"""The password: the first factor at sign-in, and again at verify access and a password change (H07)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from twostep.core import devices
from twostep.core.errors import Busy, InvalidCredentials, TooManyAttempts
from twostep.core.passwords import MAX_INPUT_CHARS
from twostep.core.throttle import PASSWORD_ADDRESS, PASSWORD_USER, PASSWORD_USER_ADDRESS, retry_after_seconds
from twostep.core.usernames import normalize_username
from twostep.services.context import Client, Context
from twostep.services.notifications import record
from twostep.services.ratelimit import edge_limit
from twostep.storage import accounts, throttle


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
