"""What sign-in and verify access share about each factor: the checks of a TOTP code, a recovery code and a
passkey assertion against the database, and the passkey challenges.

Each check counts on the regulator's second-factor counter of its account before anything is evaluated
(SEC-27); the ceremonies end in their one success path (``sign_in.finish_sign_in``,
``verify_access.finish_verify``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from twostep.core import passkeys as wa
from twostep.core import recovery_codes, totp
from twostep.core.errors import InvalidCode, PasskeyRejected
from twostep.core.events import EventType
from twostep.core.kinds import ChallengePurpose
from twostep.core.secretbox import aad_for
from twostep.services import regulator
from twostep.services.audit import Audit
from twostep.services.context import CHALLENGE_TTL, Client, Context, new_id
from twostep.storage import accounts, challenges, factors, recovery
from twostep.storage.factors import PasskeyRow, TotpRow

# ---------------------------------------------------------------------------------- authenticator apps


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


def consume_totp(conn: Connection, match: TotpMatch, now: datetime) -> None:
    """The database decides single use: compare-and-set of the last used step.

    Raises:
        Replay: another request used this step (or a later one) first.
    """
    if not factors.advance_totp_step(conn, factor_id=match.factor_id, step=match.step, now=now):
        raise Replay()


# ------------------------------------------------------------------------------------ recovery codes


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
    return RecoveryCandidate(found.id, found.code_hash, secret)


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


# ------------------------------------------------------------------------------------------- passkeys


def put_challenge(
    conn: Connection,
    ctx: Context,
    *,
    session_key: str,
    purpose: ChallengePurpose,
    challenge: bytes,
    account_id: int | None,
    allowed: list[bytes] | None = None,
) -> None:
    """Store a ceremony's challenge server-side, bound to ``session_key``, single use, 5 minutes."""
    challenges.put(
        conn,
        challenge_id=new_id(),
        session_key=session_key,
        purpose=purpose,
        challenge=challenge,
        account_id=account_id,
        expires_at=ctx.now() + CHALLENGE_TTL,
        allowed=allowed,
    )


def allow_list(conn: Connection, account_id: int) -> list[tuple[bytes, list[str]]]:
    """The account's passkeys as (credential id, transports), for ``allowCredentials``."""
    return [(p.credential_id, p.transports) for p in factors.passkeys_for(conn, account_id)]


class Refused(PasskeyRejected):
    """A refused assertion; ``failures`` is the account's count including it (0: nothing was counted)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures


@dataclass(frozen=True)
class PreparedAssertion:
    """What the first transaction of an assertion found: the stored credential and the attempt count."""

    credential_id: bytes | None
    handle: bytes | None
    row: PasskeyRow | None
    user_handle: bytes | None
    failures: int


@dataclass(frozen=True)
class CheckedAssertion:
    factor_id: str
    account_id: int
    expected_sign_count: int
    assertion: wa.VerifiedAssertion
    failures: int


def prepare_assertion(
    conn: Connection, *, credential: object, account_id: int | None, now: datetime
) -> PreparedAssertion:
    """In the caller's transaction: count the attempt on the account's second-factor counter before anything
    is evaluated (a pending sign-in or verify access; a passwordless attempt moves no account's counter,
    H01) and look the credential up.

    Raises:
        TooManyAttempts: the account must wait.
    """
    failures = 0
    if account_id is not None:
        failures = regulator.reserve(conn, regulator.second_factor(account_id), now=now)
    try:
        credential_id = wa.credential_id_of(credential)
        handle = wa.user_handle_of(credential)
    except PasskeyRejected:
        return PreparedAssertion(None, None, None, None, failures)
    row = factors.passkey_by_credential_id(conn, credential_id)
    account = accounts.by_id(conn, row.account_id) if row is not None else None
    return PreparedAssertion(credential_id, handle, row, account.user_handle if account else None, failures)


def check_assertion(
    ctx: Context,
    *,
    credential: object,
    taken: challenges.Taken,
    prepared: PreparedAssertion,
    account_id: int | None,
    require_uv: bool,
    client: Client,
    now: datetime,
) -> CheckedAssertion:
    """Every WA-A row: the credential was listed (A02) and belongs to the account (A03), its user handle
    (A04), then the signature and flags. A validly signed assertion whose counter went back is recorded
    for the credential's account (WA-A15).

    Raises:
        Refused: for every failure alike (SEC-06).
    """
    row, failures = prepared.row, prepared.failures
    if (
        row is None
        or prepared.credential_id is None
        or prepared.user_handle is None
        or (account_id is not None and row.account_id != account_id)
        or (taken.allowed and prepared.credential_id not in taken.allowed)
        or (prepared.handle is not None and prepared.handle != prepared.user_handle)
        or (account_id is None and prepared.handle is None)
    ):
        raise Refused(failures)
    try:
        assertion = wa.verify_authentication(
            credential=credential,
            expected_challenge=taken.challenge,
            expected_origin=ctx.origin,
            expected_rp_id=ctx.rp_id,
            public_key=row.public_key,
            stored_sign_count=row.sign_count,
            stored_backup_eligible=row.backup_eligible,
            require_user_verification=require_uv,
        )
    except wa.SignCountRegression as exc:
        with ctx.db.transaction() as conn:
            Audit(ctx, row.account_id, client, now).record(
                conn,
                EventType.PASSKEY_COUNTER_REGRESSED,
                factor_id=row.id,
                stored=exc.stored,
                received=exc.received,
            )
        raise Refused(failures) from None
    except PasskeyRejected:
        raise Refused(failures) from None
    return CheckedAssertion(row.id, row.account_id, row.sign_count, assertion, failures)


def use_passkey(conn: Connection, checked: CheckedAssertion, now: datetime, audit: Audit) -> None:
    """WA-A16: the record changes only after every check, and only if nobody used it meanwhile. A change of
    backup eligibility (WA-A13) is stored and recorded as ``passkey_backup_eligibility_changed``.

    Raises:
        PasskeyRejected: another request used it first.
    """
    a = checked.assertion
    if not factors.record_passkey_use(
        conn,
        factor_id=checked.factor_id,
        expected_sign_count=checked.expected_sign_count,
        new_sign_count=a.new_sign_count,
        backup_state=a.backup_state,
        user_verified=a.user_verified,
        now=now,
        backup_eligible=a.backup_eligible,
    ):
        raise PasskeyRejected()
    if a.backup_eligibility_changed:
        audit.record(
            conn,
            EventType.PASSKEY_BACKUP_ELIGIBILITY_CHANGED,
            notify=False,
            factor_id=checked.factor_id,
            backup_eligible=a.backup_eligible,
        )
