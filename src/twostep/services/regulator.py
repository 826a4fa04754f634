"""One regulator for every ceremony (security.md §0.7): ``reserve`` an attempt before it is evaluated, and
``settle`` it once the outcome is known.

The counters, each a value that names its key and policy:

* ``edge(ctx, client)``: the sign-in ceremony requests of one client address in this minute (SEC-62); it adds
  to the counters below and never replaces them;
* ``password(username, ip, known_browser=...)``: a password per client address, per username and address,
  and per username from every address, the last skipped by a browser that signed in to the account before
  (H07, SEC-28);
* ``second_factor(account_id)``: one counter per account shared by every second-factor kind and verify access
  (SEC-26, SEC-29); recovery codes count on it with a policy that has no cap;
* ``passwordless(ip)``: passwordless passkey assertions per client address, never per account (H01).

An attempt is counted *before* it is evaluated, in one conditional upsert, so that parallel guesses cannot
evaluate more than the policy allows (SEC-27).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from sqlalchemy import Connection

from twostep.core.errors import TooManyAttempts
from twostep.core.names import normalize_username
from twostep.core.throttle import (
    PASSKEY_ADDRESS,
    PASSWORD_ADDRESS,
    PASSWORD_USER,
    PASSWORD_USER_ADDRESS,
    RECOVERY,
    SECOND_FACTOR,
    Backoff,
    retry_after_seconds,
)
from twostep.i18n import N_
from twostep.services.context import Client, Context
from twostep.storage import ratelimit, throttle
from twostep.storage.db import ahead_of_transaction

# The per-address window of the edge limit, in seconds.
WINDOW = 60


class Outcome(Enum):
    """How a reserved attempt ended."""

    SUCCEEDED = "succeeded"
    # Evaluated and refused: the attempt stays counted.
    FAILED = "failed"
    # Never evaluated (the hasher was busy, H03): the attempt is given back.
    NOT_EVALUATED = "not_evaluated"


@dataclass(frozen=True)
class Counter:
    """An attempt counter with backoff. A success resets it, or, with ``refund_on_success``, only gives back
    the attempt it counted (the counters of an address, which many accounts share)."""

    key: str
    policy: Backoff
    refund_on_success: bool = False


@dataclass(frozen=True)
class Window:
    """The fixed-window request limit of one client address (SEC-62); ``per_minute`` 0 is no limit."""

    ip: str
    per_minute: int


def edge(ctx: Context, client: Client) -> Window:
    """The request limit of the client's address, to be given to ``reserve`` first in the ceremony's
    transaction, which counts the request.

    On PostgreSQL that count commits on its own, ahead of the ceremony's transaction, on its connection
    (``storage.db.ahead_of_transaction``): the window's row is the same for every request from one address
    (one office behind NAT, one proxy), and a row updated inside the ceremony's transaction stays locked
    until it ends, so that those requests would run one at a time whatever the number of workers (issue 16,
    the hot row). The count stays shared by every worker and machine, and exact. On SQLite, whose writes are
    serialised anyway, it is counted inside the transaction.
    """
    return Window(client.ip, ctx.rate_limit_per_minute)


def password(username: str, ip: str, *, known_browser: bool) -> tuple[Counter, ...]:
    """The counters of one password attempt, in the order they are taken (the same order everywhere: no
    deadlock between parallel sign-ins). Keys use the normalised username, known or not (no enumeration,
    SEC-05); a username that cannot exist gets a digest of itself, so that case and width variants share a
    key and every key stays short. The ceiling of the username is reset only by a browser that had to meet
    it, so the owner's known browser does not refill an attacker's budget."""
    normalized = normalize_username(username)
    if normalized is None:
        digest = hashlib.sha256(username.casefold().encode("utf-8", "surrogatepass")).hexdigest()[:40]
        normalized = f"?{digest}"
    counters = (
        Counter(f"pw-ip:{ip}", PASSWORD_ADDRESS, refund_on_success=True),
        Counter(f"pw-user-ip:{normalized}|{ip}", PASSWORD_USER_ADDRESS),
    )
    if known_browser:
        return counters
    return (*counters, Counter(f"pw-user:{normalized}", PASSWORD_USER))


def second_factor(account_id: int, *, recovery_code: bool = False) -> Counter:
    """The account's one counter of second factors (SEC-29); a recovery code stays usable past the cap."""
    return Counter(f"mfa:{account_id}", RECOVERY if recovery_code else SECOND_FACTOR)


def passwordless(ip: str) -> Counter:
    """Passwordless assertions per client address (H01); the challenge is single use."""
    return Counter(f"pk-ip:{ip}", PASSKEY_ADDRESS, refund_on_success=True)


def reserve(conn: Connection, *limits: Counter | Window, now: datetime) -> int:
    """Count one attempt on each limit in turn, in the caller's transaction, before it is evaluated.

    When one must wait, the attempts counted on the limits before it are given back and nothing is counted.
    Returns the failures of the last counter so far, this attempt included (0 for a window).

    Raises:
        TooManyAttempts: a limit must wait; the attempt may not be evaluated.
    """
    counted: list[Counter] = []
    failures = 0
    for limit in limits:
        if isinstance(limit, Window):
            with ahead_of_transaction(conn):
                _hit(conn, limit, now)
            failures = 0
            continue
        reservation = throttle.reserve_attempt(conn, key=limit.key, policy=limit.policy, now=now)
        if reservation.blocked_until is not None:
            for done in counted:
                throttle.refund_attempt(conn, key=done.key)
            raise TooManyAttempts(retry_after_seconds(reservation.blocked_until, now))
        counted.append(limit)
        failures = reservation.failures
    return failures


def settle(conn: Connection, *counters: Counter, outcome: Outcome) -> None:
    """What an attempt's outcome does to its counters: a success resets them (or gives the attempt back, on
    an address's counters), a failure leaves it counted, an attempt never evaluated is given back."""
    if outcome is Outcome.FAILED:
        return
    for counter in counters:
        if outcome is Outcome.NOT_EVALUATED or counter.refund_on_success:
            throttle.refund_attempt(conn, key=counter.key)
        else:
            throttle.reset(conn, key=counter.key)


def _hit(conn: Connection, window: Window, now: datetime) -> None:
    if window.per_minute <= 0:
        return
    start = int(now.timestamp()) // WINDOW * WINDOW
    ends = datetime.fromtimestamp(start + WINDOW, UTC)
    count = ratelimit.hit(conn, key=f"{window.ip}:{start}", expires_at=ends)
    if count > window.per_minute:
        raise TooManyAttempts(
            retry_after_seconds(ends, now), N_("Too many requests from your address. Wait a minute.")
        )
