"""The password: the first factor at sign-in, and again at verify access and a password change (H07)."""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import datetime

from twostep.core import devices
from twostep.core.errors import AccountLocked, Busy, InvalidCredentials, TooManyAttempts
from twostep.core.events import EventType
from twostep.core.kinds import Method
from twostep.core.names import normalize_username
from twostep.core.passwords import MAX_INPUT_CHARS
from twostep.services import regulator
from twostep.services.audit import Audit
from twostep.services.context import Client, Context
from twostep.services.metrics import FAILED
from twostep.services.regulator import Outcome
from twostep.storage import accounts
from twostep.storage.accounts import AccountRow


def check_password(
    ctx: Context,
    *,
    username: str,
    password: str,
    client: Client,
    device: str | None = None,
    known_browser: bool = False,
) -> AccountRow:
    """The first factor, throttled per client address, per username and address, and per username (H07).

    The per-username ceiling (security.md §0.7) is skipped by a browser that signed in to this account
    before: ``device`` holds a device cookie for it, or ``known_browser`` says the caller's session is the
    account's own (verify access).

    Raises:
        TooManyAttempts: a counter must wait; the password was not checked.
        InvalidCredentials: unknown user or wrong password, indistinguishable (SEC-05).
        AccountLocked: the password is correct, and an operator locked the account.
        Busy: too many password hashes in this worker; the attempt was not counted (H03).
    """
    now = ctx.now()
    account, counters = _reserve(ctx, username, client, device=device, known_browser=known_browser, now=now)
    try:
        matched = _verify(ctx, account, password)
    except Busy:
        with ctx.db.transaction() as conn:
            regulator.settle(conn, *counters, outcome=Outcome.NOT_EVALUATED)
        raise
    if account is None or not matched:
        if account is not None:
            with ctx.db.transaction() as conn:
                Audit(ctx, account.id, client, now).record(conn, EventType.PASSWORD_FAILED)
        else:
            ctx.metrics.sign_in(Method.PASSWORD.value, FAILED)  # no account, so no event to count it
        raise InvalidCredentials()
    new_hash: str | None = None
    if ctx.hasher.needs_rehash(account.password_hash):
        with contextlib.suppress(Busy):  # the next sign-in rehashes instead
            new_hash = ctx.hasher.hash(password)
    with ctx.db.transaction() as conn:
        regulator.settle(conn, *counters, outcome=Outcome.SUCCEEDED)
        if new_hash is not None:
            accounts.set_password_hash(conn, account.id, new_hash)
            account = dataclasses.replace(account, password_hash=new_hash)
    if account.locked_at is not None:
        # Said only after the correct password: a wrong one answers as for any account (SEC-05).
        raise AccountLocked()
    return account


def _reserve(
    ctx: Context, username: str, client: Client, *, device: str | None, known_browser: bool, now: datetime
) -> tuple[AccountRow | None, tuple[regulator.Counter, ...]]:
    """The account of this username (if any) and the password counters, each with this attempt counted.

    Raises:
        TooManyAttempts: too many requests from the address this minute, or a counter must wait (then
            raised once this request is counted at the edge, SEC-62).
    """
    refused: TooManyAttempts | None = None
    edge = regulator.edge(ctx, client)
    with ctx.db.transaction() as conn:
        regulator.reserve(conn, edge, now=now)
        normalized = normalize_username(username)
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
        counters = regulator.password(username, client.ip, known_browser=known_browser)
        try:
            regulator.reserve(conn, *counters, now=now)
        except TooManyAttempts as exc:
            refused = exc
    if refused is not None:
        raise refused
    return account, counters


def _verify(ctx: Context, account: AccountRow | None, password: str) -> bool:
    """One argon2id verification, also for an unknown account or an overlong password (SEC-05, SEC-09).

    Raises:
        Busy: too many password hashes in this worker (H03).
    """
    if len(password) > MAX_INPUT_CHARS or account is None:
        ctx.hasher.dummy_verify(password[:MAX_INPUT_CHARS])
        return False
    return ctx.hasher.verify(account.password_hash, password)
