"""Passkeys: registration, the second sign-in step, passwordless sign-in and verify access (security.md F)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from twostep.core import passkeys as wa
from twostep.core.errors import (
    NameTaken,
    NotSignedIn,
    PasskeyRegistrationRejected,
    PasskeyRejected,
    TooManyAttempts,
)
from twostep.core.throttle import PASSKEY_ADDRESS, SECOND_FACTOR, retry_after_seconds
from twostep.services import second_factor as sf
from twostep.services.context import (
    CHALLENGE_TTL,
    VERIFIED_ACCESS_TTL,
    Client,
    Context,
    hash_token,
    new_id,
)
from twostep.services.factors import Added, NewCodes, added_events, clean_name, view_of, with_codes_if_first
from twostep.services.notifications import record
from twostep.services.ratelimit import edge_limit
from twostep.services.sessions import CurrentSession, create_active, require_verified, step_up
from twostep.storage import accounts, challenges, factors, throttle
from twostep.storage import sessions as session_store

log = logging.getLogger("twostep.passkeys")


def _put_challenge(
    conn: Connection,
    ctx: Context,
    *,
    session_key: str,
    purpose: str,
    challenge: bytes,
    account_id: int | None,
    allowed: list[bytes] | None = None,
) -> None:
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


def registration_options(ctx: Context, session: CurrentSession) -> dict[str, object]:
    """POST /factors/passkey/options: a 32-byte single-use challenge, the user's passkeys excluded.

    Raises:
        VerifyAccessRequired.
    """
    require_verified(session, ctx.now())
    with ctx.db.transaction() as conn:
        account = accounts.by_id(conn, session.account_id)
        if account is None:
            raise NotSignedIn()
        existing = [p.credential_id for p in factors.passkeys_for(conn, session.account_id)]
        options = wa.registration_options(
            rp_id=ctx.rp_id,
            rp_name=ctx.issuer,
            user_handle=account.user_handle,
            username=account.username,
            display_name=account.display_name,
            exclude_credential_ids=existing,
        )
        _put_challenge(
            conn,
            ctx,
            session_key=session.token_hash,
            purpose="register",
            challenge=options.challenge,
            account_id=session.account_id,
        )
    return options.options


def _default_name(conn: Connection, account_id: int, aaguid: str) -> str:
    taken = factors.names(conn, account_id)
    provider = wa.provider_name(aaguid)
    if provider and provider not in taken:
        return provider[:64]
    n = factors.count(conn, account_id, type_="passkey") + 1
    while f"Passkey {n}" in taken:
        n += 1
    return f"Passkey {n}"


def register(
    ctx: Context, session: CurrentSession, *, name: str, credential: object, client: Client
) -> Added:
    """POST /factors/passkey: stored only after every check passes (WA-R01..R17).

    Raises:
        VerifyAccessRequired, InvalidRequest, NameTaken, PasskeyRegistrationRejected.
    """
    now = ctx.now()
    require_verified(session, now)
    wanted = clean_name(name) if name.strip() else None
    with ctx.db.transaction() as conn:
        taken = challenges.take(conn, session_key=session.token_hash, purpose="register", now=now)
    if taken is None or taken.account_id != session.account_id:
        raise PasskeyRegistrationRejected()
    verified = wa.verify_registration(
        credential=credential,
        expected_challenge=taken.challenge,
        expected_origin=ctx.origin,
        expected_rp_id=ctx.rp_id,
    )
    factor_id = new_id()

    def write(codes: list[NewCodes] | None) -> Added:
        with ctx.db.transaction() as conn:
            accounts.lock(conn, session.account_id)
            if factors.passkey_by_credential_id(conn, verified.credential_id) is not None:
                raise PasskeyRegistrationRejected()  # WA-R15: registered already, to anyone
            final_name = wanted or _default_name(conn, session.account_id, verified.aaguid)
            first = factors.count(conn, session.account_id) == 0
            factors.insert_passkey(
                conn,
                factor_id=factor_id,
                account_id=session.account_id,
                name=final_name,
                credential_id=verified.credential_id,
                public_key=verified.public_key,
                algorithm=verified.algorithm,
                sign_count=verified.sign_count,
                transports=verified.transports,
                aaguid=verified.aaguid,
                backup_eligible=verified.backup_eligible,
                backup_state=verified.backup_state,
                user_verified=verified.user_verified,
                now=now,
            )
            ended = added_events(
                conn,
                ctx,
                session,
                client=client,
                now=now,
                first=first,
                name=final_name,
                kind="passkey",
                factor_id=factor_id,
                codes=codes,
            )
            row = factors.get(conn, account_id=session.account_id, factor_id=factor_id)
        assert row is not None
        shown = [c.shown for c in codes] if first and codes is not None else None
        return Added(view_of(row), shown, ended)

    try:
        return with_codes_if_first(ctx, session.account_id, write)
    except IntegrityError as exc:
        with ctx.db.transaction() as conn:
            clash = factors.passkey_by_credential_id(conn, verified.credential_id) is not None
        if clash:
            raise PasskeyRegistrationRejected() from exc
        raise NameTaken() from exc


@dataclass(frozen=True)
class LoginOptions:
    options: dict[str, object]
    passwordless: bool


def login_options(ctx: Context, *, token: str | None, ceremony_key: str, client: Client) -> LoginOptions:
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
            _put_challenge(
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
        _put_challenge(
            conn,
            ctx,
            session_key=hash_token(ceremony_key),
            purpose="passwordless",
            challenge=opts.challenge,
            account_id=None,
        )
    return LoginOptions(opts.options, passwordless=True)


@dataclass(frozen=True)
class _Checked:
    factor_id: str
    account_id: int
    expected_sign_count: int
    assertion: wa.VerifiedAssertion
    failures: int


class _Refused(PasskeyRejected):
    """A refused assertion; ``failures`` is the account's count including it (0: nothing was counted)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures


@dataclass(frozen=True)
class _Prepared:
    """What the first transaction of an assertion found: the stored credential and the attempt count."""

    credential_id: bytes | None
    handle: bytes | None
    row: factors.PasskeyRow | None
    user_handle: bytes | None
    failures: int


def _prepare(
    conn: Connection, ctx: Context, *, credential: object, account_id: int | None, now: datetime
) -> _Prepared:
    """In the caller's transaction: count the attempt on the account's second-factor counter before anything
    is evaluated (a pending sign-in or verify access; a passwordless attempt moves no account's counter,
    H01) and look the credential up."""
    failures = 0
    if account_id is not None:
        failures = sf.reserve(conn, account_id=account_id, policy=SECOND_FACTOR, now=now)
    try:
        credential_id = wa.credential_id_of(credential)
        handle = wa.user_handle_of(credential)
    except PasskeyRejected:
        return _Prepared(None, None, None, None, failures)
    row = factors.passkey_by_credential_id(conn, credential_id)
    account = accounts.by_id(conn, row.account_id) if row is not None else None
    return _Prepared(credential_id, handle, row, account.user_handle if account else None, failures)


def passwordless_key(ip: str) -> str:
    """Passwordless assertions are counted per client address (H01); the challenge is single use."""
    return f"pk-ip:{ip}"


def _check_assertion(
    ctx: Context,
    *,
    credential: object,
    taken: challenges.Taken,
    prepared: _Prepared,
    account_id: int | None,
    require_uv: bool,
    client: Client,
) -> _Checked:
    """Every WA-A row: the credential was listed (A02) and belongs to the account (A03), its user handle
    (A04), then the signature and flags. Raises PasskeyRejected for all of them alike (SEC-06)."""
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
        raise _Refused(failures)
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
            record(
                conn,
                account_id=row.account_id,
                type_="passkey_counter_regressed",
                client=client,
                now=ctx.now(),
                detail={"factor_id": row.id, "stored": exc.stored, "received": exc.received},
                origin=ctx.origin,
            )
        raise _Refused(failures) from None
    except PasskeyRejected:
        raise _Refused(failures) from None
    return _Checked(row.id, row.account_id, row.sign_count, assertion, failures)


def _use(conn: Connection, checked: _Checked, now: datetime) -> None:
    """WA-A16: the record changes only after every check, and only if nobody used it meanwhile."""
    a = checked.assertion
    if not factors.record_passkey_use(
        conn,
        factor_id=checked.factor_id,
        expected_sign_count=checked.expected_sign_count,
        new_sign_count=a.new_sign_count,
        backup_state=a.backup_state,
        user_verified=a.user_verified,
        now=now,
    ):
        raise PasskeyRejected()


def login(
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
            prepared = _prepare(conn, ctx, credential=credential, account_id=account_id, now=now)
    if blocked is not None:
        raise TooManyAttempts(retry_after_seconds(blocked, now))
    if taken is None:
        raise PasskeyRejected()
    try:
        checked = _check_assertion(
            ctx,
            credential=credential,
            taken=taken,
            prepared=prepared,
            account_id=account_id,
            require_uv=pend is None,
            client=client,
        )
        with ctx.db.transaction() as conn:
            _use(conn, checked, now)
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
                    failures=exc.failures if isinstance(exc, _Refused) else 0,
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


def _password_step_done(session: CurrentSession, now: datetime) -> bool:
    return session.reauth_until is not None and session.reauth_until > now


def verify_options(ctx: Context, session: CurrentSession, *, client: Client) -> dict[str, object]:
    """POST /verify-access/passkey/options: user verification required unless the password was just given."""
    now = ctx.now()
    with ctx.db.transaction() as conn:
        edge_limit(conn, ctx, client, now)
        allow = [(p.credential_id, p.transports) for p in factors.passkeys_for(conn, session.account_id)]
        uv = "preferred" if _password_step_done(session, now) else "required"
        opts = wa.authentication_options(rp_id=ctx.rp_id, allow_credentials=allow, user_verification=uv)
        _put_challenge(
            conn,
            ctx,
            session_key=session.token_hash,
            purpose="verify",
            challenge=opts.challenge,
            account_id=session.account_id,
            allowed=[cid for cid, _ in allow],
        )
    return opts.options


def verify_access(
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
            prepared = _prepare(conn, ctx, credential=credential, account_id=session.account_id, now=now)
    if taken is None:
        raise PasskeyRejected()
    try:
        checked = _check_assertion(
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
                failures=exc.failures if isinstance(exc, _Refused) else 0,
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
        _use(conn, checked, now)
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
