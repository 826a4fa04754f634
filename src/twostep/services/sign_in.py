"""Sign-in: the password step, then the second step (authenticator app, recovery code or passkey), or a
passwordless passkey. Every successful sign-in ends in ``finish_sign_in``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from twostep.core import devices, oidc
from twostep.core import passkeys as wa
from twostep.core.errors import (
    AccountLocked,
    InvalidCode,
    NoPendingLogin,
    PasskeyRejected,
    TooManyAttempts,
    UnknownPasskey,
)
from twostep.core.events import EventType
from twostep.core.kinds import ChallengePurpose, FactorKind, Method
from twostep.services import regulator, trusted_browsers
from twostep.services import second_factor as sf
from twostep.services.audit import Audit
from twostep.services.context import (
    PASSKEY_UPGRADE_TTL,
    VERIFIED_ACCESS_TTL,
    Client,
    Context,
    hash_token,
    new_id,
)
from twostep.services.passwords import check_password
from twostep.services.regulator import Outcome
from twostep.services.sessions import create_active, create_pending, end, pending
from twostep.storage import accounts, challenges, factors, recovery
from twostep.storage import sessions as session_store
from twostep.storage.sessions import SessionRow


@dataclass(frozen=True)
class LoginResult:
    """``status`` is "signed_in" or "second_factor_required"; ``token`` is the new cookie value;
    ``device`` the new device cookie value after a password step (H07); ``trusted`` the new trusted-browser
    cookie value when this browser was just trusted."""

    status: str
    token: str
    methods: list[str]
    recovery_codes_remaining: int | None = None
    device: str | None = None
    trusted: str | None = None


def methods_for(kinds: set[str], recovery_remaining: int) -> list[str]:
    """The second-step methods of an account with these factor kinds (docs/api.md ``methods``)."""
    out: list[str] = [kind for kind in (FactorKind.TOTP, FactorKind.PASSKEY) if kind in kinds]
    if out and recovery_remaining > 0:
        out.append(Method.RECOVERY_CODE)
    return out


# Sign-ins whose first step was the password: they may grant the automatic passkey upgrade.
_PASSWORD_FIRST = frozenset({Method.TOTP, Method.RECOVERY_CODE, Method.TRUSTED_BROWSER})


def finish_sign_in(
    conn: Connection,
    audit: Audit,
    *,
    pending: SessionRow | None,
    method: Method,
    factor_id: str | None = None,
    verified_until: datetime | None = None,
    trusted_browser: str | None = None,
    passkey: wa.VerifiedAssertion | None = None,
    kinds: set[str] | None = None,
) -> str:
    """The one success path of every sign-in, in the caller's transaction: consume the pending sign-in (its
    public id passes to the session, so that the security log ties its attempts to it), create the session,
    reset the account's second-factor counter (when a second factor was used), record ``signed_in``.
    Returns the session's cookie value. ``kinds``: the kinds of factors of the account, when the caller
    read them already.

    Raises:
        NoPendingLogin: another request finished or ended this pending sign-in first.
        AccountLocked: an operator locked the account. (A session committed just after a lock never serves a
            request: a locked account's session is dead to ``authenticate``.)
    """
    if pending is None:
        if accounts.is_locked(conn, audit.account_id):
            raise AccountLocked()
    else:
        consumed = session_store.consume_pending(conn, token_hash=pending.token_hash, now=audit.now)
        if consumed is None:
            raise NoPendingLogin()
        if consumed.locked:
            raise AccountLocked()  # the caller's transaction rolls back: the pending sign-in stays as it was
    session_id = pending.public_id if pending is not None else new_id()
    upgrade = None
    if method in _PASSWORD_FIRST:
        # The automatic passkey upgrade (conditional create): an account with a second factor but no passkey
        # may have its password manager add one, once, in the next few minutes. Never the first factor (it
        # would turn two-step verification on with recovery codes nobody sees).
        if kinds is None:
            kinds = factors.kinds(conn, audit.account_id)
        if kinds and FactorKind.PASSKEY not in kinds:
            upgrade = audit.now + PASSKEY_UPGRADE_TTL
    token = create_active(
        conn,
        account_id=audit.account_id,
        now=audit.now,
        client=audit.client,
        second_factor=method.session_factor,
        verified_until=verified_until,
        public_id=session_id,
        trusted_browser=trusted_browser,
        passkey_upgrade_until=upgrade,
        amr=oidc.format_amr(
            oidc.amr_for(
                method,
                synced_passkey=passkey.backup_eligible if passkey is not None else True,
                user_verified=passkey.user_verified if passkey is not None else False,
            )
        ),
    )
    if method.is_second_factor:
        regulator.settle(conn, regulator.second_factor(audit.account_id), outcome=Outcome.SUCCEEDED)
    audit.record(
        conn,
        EventType.SIGNED_IN,
        method=method,
        factor_id=factor_id,
        session=session_id,
        trusted_browser=trusted_browser,
    )
    return token


def password_step(
    ctx: Context,
    *,
    username: str,
    password: str,
    client: Client,
    current_token: str | None,
    device: str | None = None,
    trusted: str | None = None,
) -> LoginResult:
    """POST /login: sign in, or open a pending sign-in that owes a second factor (5 minutes).

    ``device`` is the browser's device cookie; the result's ``device`` is its new value (H07). ``trusted``
    is the browser's trusted-browser cookie: a live trust of this account skips the second step (one factor),
    except when this browser signs in again from a session that the trust made (a `two_factor` rule asked for
    the second factor).

    Raises:
        TooManyAttempts, InvalidCredentials, Busy: see check_password.
    """
    account = check_password(ctx, username=username, password=password, client=client, device=device)
    remembered = devices.remember_device(
        key=ctx.device_key, cookie=device, username=account.username, password_hash=account.password_hash
    )
    now = ctx.now()
    with ctx.db.transaction() as conn:
        # Signing in again from a session that a trusted browser signed in (a `two_factor` application asked
        # for the second factor) asks for the second step: the trust would otherwise lead back to itself.
        current = (
            session_store.get(conn, token_hash=hash_token(current_token))
            if current_token and len(current_token) <= 128
            else None
        )
        again_after_trust = (
            current is not None and current.account_id == account.id and current.trusted_browser is not None
        )
        end(conn, ctx, token=current_token, now=now)
        kinds = factors.kinds(conn, account.id)
        if not kinds:
            audit = Audit(ctx, account.id, client, now)
            token = finish_sign_in(conn, audit, pending=None, method=Method.PASSWORD)
            return LoginResult("signed_in", token, [], device=remembered)
        trust = (
            None
            if again_after_trust
            else trusted_browsers.live_trust(conn, ctx, account_id=account.id, cookie=trusted, now=now)
        )
        if trust is not None:
            audit = Audit(ctx, account.id, client, now)
            token = finish_sign_in(
                conn, audit, pending=None, method=Method.TRUSTED_BROWSER, trusted_browser=trust
            )
            return LoginResult("signed_in", token, [], device=remembered)
        methods = methods_for(kinds, recovery.remaining(conn, account.id))
        token = create_pending(conn, account_id=account.id, now=now, client=client)
    return LoginResult("second_factor_required", token, methods, device=remembered)


def _failed(
    conn: Connection,
    audit: Audit,
    pend: SessionRow,
    method: Method,
    failures: int,
    *,
    replay: bool = False,
    **detail: object,
) -> None:
    """A failed second step; the first failure of a pending sign-in is told to the owner (SEC-07)."""
    if replay:
        audit.record(conn, EventType.TOTP_REPLAY, notify=False, method=method)
    first = session_store.mark_alerted(conn, token_hash=pend.token_hash)
    audit.second_factor_failed(
        conn, EventType.SECOND_FACTOR_FAILED, failures=failures, notify=first, method=method, **detail
    )


def _trusted(
    conn: Connection, ctx: Context, audit: Audit, trust_browser: bool, cookie: str | None
) -> str | None:
    """After a second step: trust this browser when asked ("trust_browser"); the new cookie value or None."""
    return trusted_browsers.trust(conn, ctx, audit, cookie=cookie) if trust_browser else None


def totp_step(
    ctx: Context,
    *,
    token: str | None,
    code: str,
    client: Client,
    trust_browser: bool = False,
    trusted: str | None = None,
) -> LoginResult:
    """POST /login/totp: finish a pending sign-in with a code from an authenticator app; ``trust_browser``
    trusts this browser (``trusted`` is its current trusted-browser cookie).

    Raises:
        NoPendingLogin, TooManyAttempts, InvalidCode (wrong, replayed, or from a removed factor).
    """
    now = ctx.now()
    # One transaction: the attempt is counted (and, on PostgreSQL, the account's counter row locked)
    # before the code is evaluated; a failure is recorded and committed before the error is raised.
    edge = regulator.edge(ctx, client)
    with ctx.db.transaction() as conn:
        regulator.reserve(conn, edge, now=now)
        pend = pending(conn, token=token, now=now)
        audit = Audit(ctx, pend.account_id, client, now)
        failures = regulator.reserve(conn, regulator.second_factor(pend.account_id), now=now)
        cookie: str | None = None
        apps, kinds = factors.totp_and_kinds(conn, pend.account_id)
        try:
            match = sf.match_totp(ctx, apps, code, now)
            sf.consume_totp(conn, match, now)
        except InvalidCode as exc:
            _failed(conn, audit, pend, Method.TOTP, failures, replay=isinstance(exc, sf.Replay))
            new_token = None
        else:
            new_token = finish_sign_in(
                conn, audit, pending=pend, method=Method.TOTP, factor_id=match.factor_id, kinds=kinds
            )
            cookie = _trusted(conn, ctx, audit, trust_browser, trusted)
    if new_token is None:
        raise InvalidCode()
    return LoginResult("signed_in", new_token, [], trusted=cookie)


def recovery_step(
    ctx: Context,
    *,
    token: str | None,
    code: str,
    client: Client,
    trust_browser: bool = False,
    trusted: str | None = None,
) -> LoginResult:
    """POST /login/recovery-code: finish a pending sign-in with a recovery code; access counts as verified.

    Raises:
        NoPendingLogin, TooManyAttempts, InvalidCode.
    """
    now = ctx.now()
    edge = regulator.edge(ctx, client)
    with ctx.db.transaction() as conn:
        regulator.reserve(conn, edge, now=now)
        pend = pending(conn, token=token, now=now)
        counter = regulator.second_factor(pend.account_id, recovery_code=True)
        failures = regulator.reserve(conn, counter, now=now)
        candidate = sf.find_recovery(conn, account_id=pend.account_id, code=code)
    audit = Audit(ctx, pend.account_id, client, now)
    try:
        candidate = sf.check_recovery(candidate)
        with ctx.db.transaction() as conn:
            sf.consume_recovery(conn, candidate, now)
            remaining = recovery.remaining(conn, pend.account_id)
            audit.record(conn, EventType.RECOVERY_CODE_USED, remaining=remaining)
            new_token = finish_sign_in(
                conn,
                audit,
                pending=pend,
                method=Method.RECOVERY_CODE,
                verified_until=now + VERIFIED_ACCESS_TTL,
            )
            cookie = _trusted(conn, ctx, audit, trust_browser, trusted)
    except InvalidCode:
        with ctx.db.transaction() as conn:
            _failed(conn, audit, pend, Method.RECOVERY_CODE, failures)
        raise InvalidCode() from None
    return LoginResult("signed_in", new_token, [], recovery_codes_remaining=remaining, trusted=cookie)


@dataclass(frozen=True)
class LoginOptions:
    options: dict[str, object]
    passwordless: bool


def passkey_options(ctx: Context, *, token: str | None, ceremony_key: str, client: Client) -> LoginOptions:
    """POST /login/passkey/options: the pending user's passkeys, or a discoverable request (UV required)."""
    now = ctx.now()
    edge = regulator.edge(ctx, client)
    with ctx.db.transaction() as conn:
        regulator.reserve(conn, edge, now=now)
        pend = session_store.get_pending(conn, token_hash=hash_token(token), now=now) if token else None
        if pend is not None:
            allow = sf.allow_list(conn, pend.account_id)
            opts = wa.authentication_options(
                rp_id=ctx.rp_id, allow_credentials=allow, user_verification="preferred"
            )
            sf.put_challenge(
                conn,
                ctx,
                session_key=pend.token_hash,
                purpose=ChallengePurpose.LOGIN,
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
            purpose=ChallengePurpose.PASSWORDLESS,
            challenge=opts.challenge,
            account_id=None,
        )
    return LoginOptions(opts.options, passwordless=True)


def passkey_step(
    ctx: Context,
    *,
    token: str | None,
    ceremony_key: str | None,
    credential: object,
    client: Client,
    trust_browser: bool = False,
    trusted: str | None = None,
) -> LoginResult:
    """POST /login/passkey: the second step of a pending sign-in, or a passwordless sign-in. ``trust_browser``
    trusts this browser after a second step (a passwordless sign-in has no second step to skip: ignored).

    Raises:
        PasskeyRejected (also for a missing or used challenge), TooManyAttempts.
    """
    now = ctx.now()
    pend, taken, prepared = _take_challenge(ctx, token, ceremony_key, credential, client, now)
    try:
        new_token, cookie = _passkey_signed_in(
            ctx, pend, token, credential, taken, prepared, client, now, trust_browser, trusted
        )
        return LoginResult("signed_in", new_token, [], trusted=cookie)
    except PasskeyRejected as exc:
        failures = exc.failures if isinstance(exc, sf.Refused) else 0
        with ctx.db.transaction() as conn:
            if pend is not None:
                audit = Audit(ctx, pend.account_id, client, now)
                _failed(conn, audit, pend, Method.PASSKEY, failures, session=pend.public_id)
            elif prepared.row is not None:
                # The account whose credential was named sees the attempt in its security log (H01); no
                # e-mail: anyone who saw the credential id can cause it, and it proves nothing about the
                # password.
                Audit(ctx, prepared.row.account_id, client, now).record(
                    conn,
                    EventType.PASSKEY_SIGN_IN_FAILED,
                    notify=False,
                    method=Method.PASSKEY_PASSWORDLESS,
                    factor_id=prepared.row.id,
                )
        if pend is None and prepared.row is None and prepared.credential_id is not None:
            # No account has this credential (removed, or never registered here): the page tells the password
            # manager (signalUnknownCredential). It tells a stranger nothing about any account.
            raise UnknownPasskey() from None
        raise PasskeyRejected() from None


def _take_challenge(
    ctx: Context,
    token: str | None,
    ceremony_key: str | None,
    credential: object,
    client: Client,
    now: datetime,
) -> tuple[SessionRow | None, challenges.Taken, sf.PreparedAssertion]:
    """The first transaction of a passkey step: the pending sign-in (if any), its challenge taken (single
    use), the attempt counted and the credential looked up.

    Raises:
        PasskeyRejected: no challenge to take.
        TooManyAttempts: the address or the account must wait; a passwordless challenge is spent even then.
    """
    refused: TooManyAttempts | None = None
    prepared: sf.PreparedAssertion | None = None
    edge = regulator.edge(ctx, client)
    with ctx.db.transaction() as conn:
        regulator.reserve(conn, edge, now=now)
        pend = session_store.get_pending(conn, token_hash=hash_token(token), now=now) if token else None
        if pend is not None:
            taken = challenges.take(
                conn, session_key=pend.token_hash, purpose=ChallengePurpose.LOGIN, now=now
            )
        elif ceremony_key:
            key = hash_token(ceremony_key)
            taken = challenges.take(conn, session_key=key, purpose=ChallengePurpose.PASSWORDLESS, now=now)
        else:
            taken = None
        if taken is not None and pend is None:
            # Counted before anything is evaluated, on the address only: a stranger naming someone's
            # credential id must not move that account's counter (H01).
            try:
                regulator.reserve(conn, regulator.passwordless(client.ip), now=now)
            except TooManyAttempts as exc:
                refused = exc
        if taken is not None and refused is None:
            account_id = pend.account_id if pend is not None else None
            prepared = sf.prepare_assertion(conn, credential=credential, account_id=account_id, now=now)
    if refused is not None:
        raise refused
    if taken is None or prepared is None:
        raise PasskeyRejected()
    return pend, taken, prepared


def _passkey_signed_in(
    ctx: Context,
    pend: SessionRow | None,
    token: str | None,
    credential: object,
    taken: challenges.Taken,
    prepared: sf.PreparedAssertion,
    client: Client,
    now: datetime,
    trust_browser: bool,
    trusted: str | None,
) -> tuple[str, str | None]:
    """The assertion checked, the passkey's counter moved and the sign-in finished, or PasskeyRejected.
    Returns the session's cookie value and the new trusted-browser cookie value (or None)."""
    checked = sf.check_assertion(
        ctx,
        credential=credential,
        taken=taken,
        prepared=prepared,
        account_id=pend.account_id if pend is not None else None,
        require_uv=pend is None,
        client=client,
        now=now,
    )
    with ctx.db.transaction() as conn:
        sf.use_passkey(conn, checked, now, Audit(ctx, checked.account_id, client, now))
        if pend is None:
            if token:
                session_store.delete_one(conn, token_hash=hash_token(token))
            regulator.settle(conn, regulator.passwordless(client.ip), outcome=Outcome.SUCCEEDED)
        method = Method.PASSKEY if pend is not None else Method.PASSKEY_PASSWORDLESS
        audit = Audit(ctx, checked.account_id, client, now)
        try:
            new_token = finish_sign_in(
                conn,
                audit,
                pending=pend,
                method=method,
                factor_id=checked.factor_id,
                passkey=checked.assertion,
            )
        except NoPendingLogin:
            raise PasskeyRejected() from None
        cookie = _trusted(conn, ctx, audit, trust_browser and pend is not None, trusted)
        return new_token, cookie


def sweep_abandoned(ctx: Context) -> int:
    """End expired pending sign-ins; each one never told about gives one event and e-mail (SEC-07)."""
    now = ctx.now()
    with ctx.db.transaction() as conn:
        gone = session_store.take_abandoned(conn, now=now)
        for row in gone:
            if not row.alerted:
                audit = Audit(ctx, row.account_id, Client(row.ip, row.user_agent), now)
                audit.record(conn, EventType.SECOND_FACTOR_ABANDONED)
    return len(gone)
