"""Server-side sessions: whose cookie it is, and the step-ups that rotate its id (SEC-04, SEC-48..51)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import Connection

from twostep.core.errors import NoPendingLogin, NotFound, NotSignedIn, VerifyAccessRequired
from twostep.core.events import EventType
from twostep.core.kinds import SessionKind
from twostep.services.audit import Audit
from twostep.services.context import (
    PENDING_LOGIN_TTL,
    SESSION_ABSOLUTE,
    SESSION_IDLE,
    Client,
    Context,
    hash_token,
    new_id,
    new_session_token,
)
from twostep.storage import sessions as store
from twostep.storage.sessions import SessionRow

# The values of sessions.second_factor that mean the sign-in used a second factor.
SECOND_FACTOR_KINDS: Final = frozenset({"totp", "passkey", "recovery_code"})


@dataclass(frozen=True)
class CurrentSession:
    """A signed-in session, as the request that presented its cookie sees it."""

    token_hash: str
    public_id: str
    account_id: int
    username: str
    display_name: str
    signed_in_at: datetime
    second_factor: str | None
    verified_until: datetime | None
    reauth_until: datetime | None
    groups: tuple[str, ...] = ()
    email: str | None = None
    email_verified: bool = False
    account_has_second_factor: bool = False
    # Set when a trusted browser skipped the second step of this sign-in (docs/api.md "Trusted browsers").
    trusted_browser: str | None = None
    # Until when this session may add a passkey once without verify access (the automatic upgrade).
    passkey_upgrade_until: datetime | None = None
    # The language the holder chose in the menu (issue 19); None: none stored.
    language: str | None = None

    # The one place that says whether this session's sign-in used a second factor (access rules'
    # two_factor policy, OpenID acr): a trusted browser's sign-in, which skipped the second step, did not.
    @property
    def used_second_factor(self) -> bool:
        return self.second_factor in SECOND_FACTOR_KINDS

    # RFC 8176 values of what this session's sign-in and verifications did (OpenID Connect `amr`), and the
    # time of the last of them (`auth_time`).
    amr: str | None = None
    authenticated_at: datetime | None = None

    @property
    def auth_time(self) -> datetime:
        return self.authenticated_at or self.signed_in_at

    def access_verified(self, now: datetime) -> bool:
        return self.verified_until is not None and self.verified_until > now


def create_active(
    conn: Connection,
    *,
    account_id: int,
    now: datetime,
    client: Client,
    second_factor: str | None,
    verified_until: datetime | None = None,
    public_id: str | None = None,
    trusted_browser: str | None = None,
    passkey_upgrade_until: datetime | None = None,
    amr: str | None = None,
) -> str:
    """Insert a signed-in session and return its cookie value; a finished pending sign-in passes its
    ``public_id`` on, so that the security log ties the attempts of one sign-in to the session it made."""
    token, token_hash = new_session_token()
    store.insert(
        conn,
        SessionRow(
            token_hash=token_hash,
            public_id=public_id or new_id(),
            account_id=account_id,
            kind=SessionKind.ACTIVE,
            created_at=now,
            signed_in_at=now,
            last_seen_at=now,
            expires_at=now + SESSION_ABSOLUTE,
            second_factor=second_factor,
            verified_until=verified_until,
            reauth_until=None,
            alerted=False,
            ip=client.ip,
            user_agent=client.user_agent,
            trusted_browser=trusted_browser,
            passkey_upgrade_until=passkey_upgrade_until,
            amr=amr,
            authenticated_at=now,
        ),
    )
    return token


def create_pending(conn: Connection, *, account_id: int, now: datetime, client: Client) -> str:
    """Insert a pending sign-in (password accepted, second factor owed) and return its cookie value."""
    token, token_hash = new_session_token()
    store.insert(
        conn,
        SessionRow(
            token_hash=token_hash,
            public_id=new_id(),
            account_id=account_id,
            kind=SessionKind.PENDING,
            created_at=now,
            signed_in_at=now,
            last_seen_at=now,
            expires_at=now + PENDING_LOGIN_TTL,
            second_factor=None,
            verified_until=None,
            reauth_until=None,
            alerted=False,
            ip=client.ip,
            user_agent=client.user_agent,
        ),
    )
    return token


# A signed-in session's last-seen time is written at most this often (docs/api.md, forward authentication):
# every request reads, about one a minute per session writes. The idle limit holds to within this much.
SEEN_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class Lookup:
    """What one read found for a cookie (``look_up``), and the write it still owes (``settle``)."""

    session: CurrentSession | None
    token_hash: str = ""
    # "seen": last_seen_at is older than SEEN_EVERY; "dead": idle or past its end (H08); "h04": no second
    # factor while the account has one; "locked": an operator locked the account. None: nothing to write.
    owes: str | None = None


def look_up(ctx: Context, token: str | None) -> Lookup:
    """The read half of ``authenticate``: one SELECT, never a write (the caller runs ``settle``, which a
    caller in the event loop can hand to a thread). Raises: nothing but Unavailable."""
    if not token or len(token) > 128:
        return Lookup(None)
    token_hash = hash_token(token)
    return judged(ctx, token_hash, store.lookup_active(ctx.db, token_hash=token_hash))


async def look_up_async(ctx: Context, token: str | None) -> Lookup:
    """``look_up`` in the event loop, with no thread hand-off on either database (forward authentication)."""
    if not token or len(token) > 128:
        return Lookup(None)
    token_hash = hash_token(token)
    return judged(ctx, token_hash, await store.lookup_active_async(ctx.db, token_hash=token_hash))


def owed(found: store.Found | store.Access, now: datetime) -> str | None:
    """The write a session read now owes (``Lookup.owes``): "dead" (idle or past its end, H08), "locked",
    "h04" (no second factor while its account has one), "seen" (its last-seen time is SEEN_EVERY old), or
    None. Only a session that owes nothing or "seen" is signed in."""
    if found.expires_at <= now or found.last_seen_at <= now - SESSION_IDLE:
        return "dead"
    if found.locked:
        return "locked"
    # A session whose second step a trusted browser skipped is signed in, as one factor (used_second_factor
    # is False); any other session without a second factor of an account that has one is not (H04).
    if found.second_factor is None and found.trusted_browser is None and found.has_factor:
        return "h04"
    return "seen" if found.last_seen_at <= now - SEEN_EVERY else None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who forward authentication is asked about: a signed-in session that owes no write (``caller_of``)."""

    username: str
    groups: tuple[str, ...]
    email: str | None  # only a verified address
    used_second_factor: bool
    account_has_second_factor: bool
    trusted_browser: bool
    language: str | None

    @classmethod
    def of(cls, session: CurrentSession) -> Caller:
        return cls(
            username=session.username,
            groups=session.groups,
            email=session.email if session.email_verified else None,
            used_second_factor=session.used_second_factor,
            account_has_second_factor=session.account_has_second_factor,
            trusted_browser=session.trusted_browser is not None,
            language=session.language,
        )


async def caller_of(ctx: Context, token: str | None) -> Caller | None:
    """Forward authentication's common case, in the event loop: the signed-in session of ``token`` when it
    owes no write, from one read of only what the answer needs. None when there is none, and when it owes a
    write (dead, locked, H04, or its once-a-minute last-seen time): ``look_up`` and ``settle`` then answer.
    Raises: Unavailable."""
    if not token or len(token) > 128:
        return None
    found = await store.access_lookup_async(ctx.db, token_hash=hash_token(token))
    if found is None or owed(found, ctx.now()) is not None:
        return None
    return Caller(
        username=found.username,
        groups=found.groups,
        email=found.email if found.email_verified else None,
        used_second_factor=found.second_factor in SECOND_FACTOR_KINDS,
        account_has_second_factor=found.has_factor,
        trusted_browser=found.trusted_browser is not None,
        language=found.language,
    )


def judged(ctx: Context, token_hash: str, found: store.Found | None) -> Lookup:
    """What the session read for ``token_hash`` means now: signed in, or dead, locked, or without the
    second factor its account has (H04), with the write owed."""
    if found is None:
        return Lookup(None, token_hash)
    owes = owed(found, ctx.now())
    if owes not in (None, "seen"):
        return Lookup(None, token_hash, owes)
    session = CurrentSession(
        token_hash=found.token_hash,
        public_id=found.public_id,
        account_id=found.account_id,
        username=found.username,
        display_name=found.display_name,
        signed_in_at=found.signed_in_at,
        second_factor=found.second_factor,
        verified_until=found.verified_until,
        reauth_until=found.reauth_until,
        groups=found.groups,
        email=found.email,
        email_verified=found.email_verified,
        account_has_second_factor=found.has_factor,
        trusted_browser=found.trusted_browser,
        passkey_upgrade_until=found.passkey_upgrade_until,
        amr=found.amr,
        authenticated_at=found.authenticated_at,
        language=found.language,
    )
    return Lookup(session, token_hash, owes)


def settle(ctx: Context, lookup: Lookup) -> None:
    """The write half of ``authenticate``, when ``look_up`` says one is owed: the last-seen time (at most
    once a minute), or the deletion of a dead session (H08) or of a password-only one (H04)."""
    if lookup.owes is None:
        return
    now = ctx.now()
    with ctx.db.transaction() as conn:
        if lookup.owes == "seen":
            store.mark_seen(conn, token_hash=lookup.token_hash, now=now, before=now - SEEN_EVERY)
        elif lookup.owes == "dead":
            store.delete_dead(conn, token_hash=lookup.token_hash, now=now, idle_cutoff=now - SESSION_IDLE)
        else:
            store.delete_one(conn, token_hash=lookup.token_hash)


def authenticate(ctx: Context, token: str | None) -> CurrentSession:
    """The signed-in session of this cookie; idle and absolute limits are checked here, server-side.

    One read in the common case; ``last_seen_at`` is written only when it is older than ``SEEN_EVERY``.
    A session found dead is deleted at once (H08). A session without a second factor of an account that has
    one is not signed in, and is ended too (H04): adding the first factor ends such sessions, and this check
    keeps forward authentication and every other route closed to one that slipped past (a sign-in that raced
    with the enrolment).

    Raises:
        NotSignedIn: no cookie, an unknown, ended, expired or pending session.
    """
    lookup = look_up(ctx, token)
    settle(ctx, lookup)
    if lookup.session is None:
        raise NotSignedIn()
    return lookup.session


def pending(conn: Connection, *, token: str | None, now: datetime) -> SessionRow:
    """The pending sign-in of this cookie.

    Raises:
        NoPendingLogin: none, or it expired.
    """
    if not token or len(token) > 128:
        raise NoPendingLogin()
    row = store.get_pending(conn, token_hash=hash_token(token), now=now)
    if row is None:
        raise NoPendingLogin()
    return row


def step_up(
    conn: Connection,
    ctx: Context,
    session: CurrentSession,
    *,
    verified_until: datetime | None,
    reauth_until: datetime | None,
    amr: str | None = None,
) -> str:
    """A new id for this signed-in session at a step up (SEC-04); the old id stops working at once.

    Raises:
        NotSignedIn: the session ended meanwhile.
    """
    token, token_hash = new_session_token()
    if not store.step_up(
        conn,
        old_hash=session.token_hash,
        new_hash=token_hash,
        now=ctx.now(),
        verified_until=verified_until,
        reauth_until=reauth_until,
        amr=amr,
    ):
        raise NotSignedIn()
    return token


def require_verified(session: CurrentSession, now: datetime) -> None:
    """Raises:
    VerifyAccessRequired: access was not verified in this session within the last 10 minutes.
    """
    if not session.access_verified(now):
        raise VerifyAccessRequired()


def end(conn: Connection, ctx: Context, *, token: str | None, now: datetime) -> None:
    """Destroy the session of this cookie (signed in or pending), server-side.

    A pending sign-in ended before its owner was told of it counts as abandoned (SEC-07): logging out
    does not hide it.
    """
    if not token or len(token) > 128:
        return
    row = store.delete_one(conn, token_hash=hash_token(token))
    if row is not None and row.kind == SessionKind.PENDING and not row.alerted:
        audit = Audit(ctx, row.account_id, Client(row.ip, row.user_agent), now)
        audit.record(conn, EventType.SECOND_FACTOR_ABANDONED, session=row.public_id)


def logout(ctx: Context, token: str | None) -> None:
    """POST /logout: destroy this cookie's session, server-side."""
    with ctx.db.transaction() as conn:
        end(conn, ctx, token=token, now=ctx.now())


@dataclass(frozen=True)
class SessionView:
    id: str
    current: bool
    created_at: datetime
    last_seen_at: datetime
    ip: str
    user_agent: str


def list_sessions(ctx: Context, session: CurrentSession) -> list[SessionView]:
    now = ctx.now()
    with ctx.db.transaction() as conn:
        rows = store.list_active(conn, account_id=session.account_id, now=now, idle_cutoff=now - SESSION_IDLE)
    return [
        SessionView(
            r.public_id, r.token_hash == session.token_hash, r.created_at, r.last_seen_at, r.ip, r.user_agent
        )
        for r in rows
    ]


def end_session(ctx: Context, session: CurrentSession, public_id: str, client: Client) -> None:
    """End one of the account's sessions (verify access).

    Raises:
        VerifyAccessRequired, NotFound.
    """
    now = ctx.now()
    require_verified(session, now)
    with ctx.db.transaction() as conn:
        if not store.delete_by_public_id(conn, account_id=session.account_id, public_id=public_id[:64]):
            raise NotFound()
        Audit(ctx, session.account_id, client, now).record(
            conn, EventType.SESSION_ENDED, session=public_id[:64]
        )


def end_other_sessions(ctx: Context, session: CurrentSession, client: Client) -> int:
    """End every session of the account but this one (verify access).

    Raises:
        VerifyAccessRequired.
    """
    now = ctx.now()
    require_verified(session, now)
    with ctx.db.transaction() as conn:
        ended = store.delete_others(conn, account_id=session.account_id, keep_hash=session.token_hash)
        Audit(ctx, session.account_id, client, now).record(conn, EventType.OTHER_SESSIONS_ENDED, count=ended)
    return ended
