"""What sign-in and verify access share: the attempt counter and the checks of codes against the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from twostep.core import recovery_codes, totp
from twostep.core.errors import InvalidCode, TooManyAttempts
from twostep.core.secretbox import aad_for
from twostep.core.throttle import RECOVERY, SECOND_FACTOR, Backoff, retry_after_seconds
from twostep.services.context import Client, Context
from twostep.services.notifications import record
from twostep.storage import factors, recovery, throttle
from twostep.storage.factors import TotpRow


def mfa_key(account_id: int) -> str:
    """One counter per account shared by every second-factor kind and verify access (SEC-29)."""
    return f"mfa:{account_id}"


def reserve(conn: Connection, *, account_id: int, policy: Backoff, now: datetime) -> int:
    """Count this attempt before evaluating it (SEC-27); returns the failures so far, this one included.

    Raises:
        TooManyAttempts: the account must wait; nothing was evaluated.
    """
    res = throttle.reserve_attempt(conn, key=mfa_key(account_id), policy=policy, now=now)
    if res.blocked_until is not None:
        raise TooManyAttempts(retry_after_seconds(res.blocked_until, now))
    return res.failures


def record_failure(
    conn: Connection,
    *,
    account_id: int,
    failures: int,
    client: Client,
    now: datetime,
    origin: str,
    type_: str,
    detail: dict[str, object],
    notify: bool,
) -> None:
    """A failed second factor; the failure that starts the backoff is told to the owner (SEC-55)."""
    record(
        conn,
        account_id=account_id,
        type_=type_,
        client=client,
        now=now,
        detail=detail,
        origin=origin,
        notify=notify,
    )
    if failures == SECOND_FACTOR.free:
        record(
            conn,
            account_id=account_id,
            type_="second_factor_locked",
            client=client,
            now=now,
            detail={"failures": failures},
            origin=origin,
        )


@dataclass(frozen=True)
class TotpMatch:
    factor_id: str
    step: int


class Replay(InvalidCode):
    """A code that matched, but at or before the factor's last used time step (SEC-18, SEC-25)."""


def match_totp(ctx: Context, rows: list[TotpRow], code: str, now: datetime) -> TotpMatch:
    """The factor and time step this code matches.

    Raises:
        Replay: it matched only an already used step.
        InvalidCode: it matches no factor (or is malformed).
    """
    replay = False
    for row in rows:
        secret = ctx.box.open(row.sealed_secret, aad=aad_for("factors", "totp_secret", row.id))
        try:
            step = totp.verify_code(secret=secret, code=code, now=now, last_used_step=None)
        except InvalidCode:
            continue
        if row.last_step is not None and step <= row.last_step:
            replay = True
            continue
        return TotpMatch(row.id, step)
    if replay:
        raise Replay()
    raise InvalidCode()


def load_totp(conn: Connection, account_id: int) -> list[TotpRow]:
    return factors.totp_for(conn, account_id)


def consume_totp(conn: Connection, match: TotpMatch, now: datetime) -> None:
    """The database decides single use: compare-and-set of the last used step.

    Raises:
        Replay: another request used this step (or a later one) first.
    """
    if not factors.advance_totp_step(conn, factor_id=match.factor_id, step=match.step, now=now):
        raise Replay()


@dataclass(frozen=True)
class RecoveryCandidate:
    """The unused code whose selector the input names (``code_id`` None: there is none)."""

    code_id: int | None
    stored_hash: str
    secret: str

    def __repr__(self) -> str:
        return f"RecoveryCandidate(code_id={self.code_id})"


def find_recovery(conn: Connection, *, account_id: int, code: str) -> RecoveryCandidate | None:
    """Look the code up by its clear selector; None when the input is not a recovery code at all."""
    normalized = recovery_codes.normalize_recovery_code(code)
    if normalized is None:
        return None
    selector, secret = recovery_codes.split_recovery_code(normalized)
    found = recovery.find_unused(conn, account_id=account_id, selector=selector)
    if found is None:
        return RecoveryCandidate(None, "", secret)
    return RecoveryCandidate(found[0], found[1], secret)


def check_recovery(candidate: RecoveryCandidate | None) -> RecoveryCandidate:
    """One slow-hash verification at most, and one even when no code matched (equal timing).

    Raises:
        InvalidCode: no such unused code.
    """
    if candidate is None:
        raise InvalidCode()
    if candidate.code_id is None:
        recovery_codes.burn_verification(candidate.secret)
        raise InvalidCode()
    if not recovery_codes.verify_recovery_secret(secret=candidate.secret, stored_hash=candidate.stored_hash):
        raise InvalidCode()
    return candidate


def consume_recovery(conn: Connection, candidate: RecoveryCandidate, now: datetime) -> None:
    """Raises:
    InvalidCode: another request used this code first (SEC-34).
    """
    if candidate.code_id is None or not recovery.consume(conn, code_id=candidate.code_id, now=now):
        raise InvalidCode()


def succeeded(conn: Connection, account_id: int) -> None:
    throttle.reset(conn, key=mfa_key(account_id))


__all__ = ["RECOVERY", "SECOND_FACTOR"]
