"""Server-side sessions: only the SHA-256 of the cookie value is stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, bindparam, delete, exists, select, update

from twostep.core.kinds import SessionKind
from twostep.storage import groups
from twostep.storage.db import Database, first, run
from twostep.storage.tables import accounts, factors, sessions


@dataclass(frozen=True)
class SessionRow:
    token_hash: str
    public_id: str
    account_id: int
    kind: str
    created_at: datetime
    signed_in_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    second_factor: str | None
    verified_until: datetime | None
    reauth_until: datetime | None
    alerted: bool
    ip: str
    user_agent: str
    # The trusted browser whose trust skipped the second step of this sign-in (one factor), if any.
    trusted_browser: str | None = None
    # The automatic passkey upgrade may happen once until then (after a password sign-in).
    passkey_upgrade_until: datetime | None = None
    # What the sign-in (and verify access since) did, RFC 8176 values space-separated; when the user last
    # authenticated. NULL for sessions made before migration 0008.
    amr: str | None = None
    authenticated_at: datetime | None = None


_COLUMNS = (
    sessions.c.token_hash,
    sessions.c.public_id,
    sessions.c.account_id,
    sessions.c.kind,
    sessions.c.created_at,
    sessions.c.signed_in_at,
    sessions.c.last_seen_at,
    sessions.c.expires_at,
    sessions.c.second_factor,
    sessions.c.verified_until,
    sessions.c.reauth_until,
    sessions.c.alerted,
    sessions.c.ip,
    sessions.c.user_agent,
    sessions.c.trusted_browser,
    sessions.c.passkey_upgrade_until,
    sessions.c.amr,
    sessions.c.authenticated_at,
)


# The statements of the sign-in hot path are built once, with bound parameters (bench/README.md).
_INSERT = sessions.insert()
_LIVE_PENDING = (
    sessions.c.token_hash == bindparam("b_hash"),
    sessions.c.kind == SessionKind.PENDING,
    sessions.c.expires_at > bindparam("b_now"),
)
_GET_PENDING = select(*_COLUMNS).where(*_LIVE_PENDING)
# It also says whether an operator locked the account since (one statement where it was two, issue 16).
_CONSUME_PENDING = (
    delete(sessions)
    .where(*_LIVE_PENDING)
    .returning(
        sessions.c.account_id,
        select(accounts.c.locked_at).where(accounts.c.id == sessions.c.account_id).scalar_subquery(),
    )
)
# One read per request (docs/api.md "Speed" of forward authentication): the session, its account's names, the
# e-mail address and groups, and whether the account has a second factor (H04: a session without one is then
# not signed in). Liveness is judged by the caller, so that a dead session can be deleted when seen (H08).
# Only the columns a request needs (not kind, created_at, alerted, ip, user_agent): every column is converted.
_LOOKUP_SESSION = (
    sessions.c.token_hash,
    sessions.c.public_id,
    sessions.c.account_id,
    sessions.c.signed_in_at,
    sessions.c.last_seen_at,
    sessions.c.expires_at,
    sessions.c.second_factor,
    sessions.c.verified_until,
    sessions.c.reauth_until,
    sessions.c.trusted_browser,
    sessions.c.passkey_upgrade_until,
    sessions.c.amr,
    sessions.c.authenticated_at,
)
_LOOKUP = (
    select(
        *_LOOKUP_SESSION,
        accounts.c.username,
        accounts.c.display_name,
        accounts.c.email,
        accounts.c.email_verified_at.is_not(None).label("email_verified"),
        accounts.c.locked_at.is_not(None).label("locked"),
        accounts.c.language,
        groups.aggregated(sessions.c.account_id).label("groups"),
        exists().where(factors.c.account_id == sessions.c.account_id).label("has_factor"),
    )
    .select_from(sessions.join(accounts, accounts.c.id == sessions.c.account_id))
    .where(sessions.c.token_hash == bindparam("b_hash"), sessions.c.kind == SessionKind.ACTIVE)
)
# Forward authentication's read (issue 13, F1): only what its answer needs, for every request to every
# protected application; the flags are computed by the database, and two timestamps are converted.
_ACCESS = (
    select(
        sessions.c.last_seen_at,
        sessions.c.expires_at,
        sessions.c.second_factor,
        sessions.c.trusted_browser,
        accounts.c.username,
        accounts.c.email,
        accounts.c.email_verified_at.is_not(None).label("email_verified"),
        accounts.c.locked_at.is_not(None).label("locked"),
        accounts.c.language,
        groups.aggregated(sessions.c.account_id).label("groups"),
        exists().where(factors.c.account_id == sessions.c.account_id).label("has_factor"),
    )
    .select_from(sessions.join(accounts, accounts.c.id == sessions.c.account_id))
    .where(sessions.c.token_hash == bindparam("b_hash"), sessions.c.kind == SessionKind.ACTIVE)
)
# last_seen_at is written at most once a minute per session: only when it is older than b_before.
_SEEN = (
    update(sessions)
    .where(
        sessions.c.token_hash == bindparam("b_hash"),
        sessions.c.kind == SessionKind.ACTIVE,
        sessions.c.last_seen_at < bindparam("b_before"),
    )
    .values(last_seen_at=bindparam("b_seen", type_=sessions.c.last_seen_at.type))
)
_DEAD = delete(sessions).where(
    sessions.c.token_hash == bindparam("b_hash"),
    sessions.c.kind == SessionKind.ACTIVE,
    (sessions.c.expires_at <= bindparam("b_now")) | (sessions.c.last_seen_at <= bindparam("b_idle")),
)


def insert(conn: Connection, row: SessionRow) -> None:
    run(conn, _INSERT, row.__dict__)


@dataclass(slots=True)
class Found:
    """A signed-in session as ``lookup_active`` reads it, with what the request needs of its account (a
    record of the read, made for every request: slots, not frozen, which costs twice as much to make)."""

    token_hash: str
    public_id: str
    account_id: int
    signed_in_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    second_factor: str | None
    verified_until: datetime | None
    reauth_until: datetime | None
    trusted_browser: str | None
    passkey_upgrade_until: datetime | None
    amr: str | None
    authenticated_at: datetime | None
    username: str
    display_name: str
    has_factor: bool
    email: str | None
    email_verified: bool
    groups: tuple[str, ...]
    # An operator locked the account: its sessions were deleted with the lock, and one that a sign-in racing
    # the lock committed just after it is dead when it is first seen.
    locked: bool
    # The language the holder chose in the pages' menu (issue 19); None: none stored.
    language: str | None


def lookup_statement() -> Select[Any]:
    """The statement of ``lookup_active`` (for bench/floor_app.py's check that its floor sends the same)."""
    return _LOOKUP


def lookup_active(db: Database, *, token_hash: str) -> Found | None:
    """The signed-in session of this hash and its account, in one statement; None when there is none.

    It is not judged here: the caller compares its ends with the clock, and deletes it when dead
    (``delete_dead``), marks activity (``mark_seen``) at most once a minute. The read of every request: it
    runs on the driver itself (``Database.read_row``).
    """
    return _found(db.read_row(_LOOKUP, {"b_hash": token_hash}))


async def lookup_active_async(db: Database, *, token_hash: str) -> Found | None:
    """``lookup_active`` for the event loop (forward authentication): PostgreSQL's asyncio driver."""
    return _found(await db.read_row_async(_LOOKUP, {"b_hash": token_hash}))


def _found(values: dict[str, Any] | None) -> Found | None:
    return None if values is None else Found(**_typed(values))


def _typed(values: dict[str, Any]) -> dict[str, Any]:
    """A lookup's row as its record's fields: the groups split, the flags as booleans (SQLite gives 0/1)."""
    flags = {key: bool(values[key]) for key in ("email_verified", "locked", "has_factor")}
    return {**values, **flags, "groups": groups.split(values["groups"])}


@dataclass(slots=True)
class Access:
    """A signed-in session as forward authentication reads it (``access_lookup_async``)."""

    last_seen_at: datetime
    expires_at: datetime
    second_factor: str | None
    trusted_browser: str | None
    username: str
    email: str | None
    email_verified: bool
    locked: bool
    language: str | None
    groups: tuple[str, ...]
    has_factor: bool


def access_statement() -> Select[Any]:
    """The statement of ``access_lookup_async`` (bench/floor_app.py checks that its floor sends the same)."""
    return _ACCESS


async def access_lookup_async(db: Database, *, token_hash: str) -> Access | None:
    """What forward authentication needs of the signed-in session of this hash, in one statement, in the
    event loop; None when there is none. Judged by the caller, as ``lookup_active``'s result is."""
    values = await db.read_row_async(_ACCESS, {"b_hash": token_hash})
    return None if values is None else Access(**_typed(values))


def delete_dead(conn: Connection, *, token_hash: str, now: datetime, idle_cutoff: datetime) -> bool:
    """Delete this session if it is idle too long or past its end (H08: once dead it stays dead, even if
    the clock steps back). True when it was deleted."""
    result = conn.execute(_DEAD, {"b_hash": token_hash, "b_now": now, "b_idle": idle_cutoff})
    return result.rowcount == 1


def mark_seen(conn: Connection, *, token_hash: str, now: datetime, before: datetime) -> bool:
    """Record activity on this session, only if its last-seen time is older than ``before``."""
    result = conn.execute(_SEEN, {"b_hash": token_hash, "b_before": before, "b_seen": now})
    return result.rowcount == 1


def end_password_only(conn: Connection, *, account_id: int, keep_hash: str, second_factor: str) -> int:
    """The account's first second factor was added in the session ``keep_hash`` (H04): every other signed-in
    session without a second factor ends, and this one counts as having used ``second_factor``.
    Returns how many ended."""
    ended = conn.execute(
        delete(sessions).where(
            sessions.c.account_id == account_id,
            sessions.c.kind == SessionKind.ACTIVE,
            sessions.c.second_factor.is_(None),
            sessions.c.token_hash != keep_hash,
        )
    ).rowcount
    conn.execute(
        update(sessions)
        .where(sessions.c.token_hash == keep_hash, sessions.c.second_factor.is_(None))
        .values(second_factor=second_factor)
    )
    return int(ended)


def get(conn: Connection, *, token_hash: str) -> SessionRow | None:
    row = conn.execute(select(*_COLUMNS).where(sessions.c.token_hash == token_hash)).first()
    return None if row is None else SessionRow(**row._mapping)


def get_pending(conn: Connection, *, token_hash: str, now: datetime) -> SessionRow | None:
    row = first(conn, _GET_PENDING, {"b_hash": token_hash, "b_now": now})
    return None if row is None else SessionRow(*row)


@dataclass(frozen=True, slots=True)
class Consumed:
    """A pending sign-in taken by this request (``consume_pending``)."""

    account_id: int
    # An operator locked the account after the password step.
    locked: bool


def consume_pending(conn: Connection, *, token_hash: str, now: datetime) -> Consumed | None:
    """Single use of a pending sign-in: DELETE ... RETURNING decides which request gets it; None when
    another request took it first, or it expired."""
    row = first(conn, _CONSUME_PENDING, {"b_hash": token_hash, "b_now": now})
    return None if row is None else Consumed(int(row[0]), row[1] is not None)


def step_up(
    conn: Connection,
    *,
    old_hash: str,
    new_hash: str,
    now: datetime,
    verified_until: datetime | None,
    reauth_until: datetime | None,
    amr: str | None = None,
) -> bool:
    """Give an active session a new id and new verify-access state; the old id stops working at once.
    With ``amr`` (a verification), the session's method references and authentication time are set too."""
    values: dict[str, object] = {
        "token_hash": new_hash,
        "verified_until": verified_until,
        "reauth_until": reauth_until,
        "last_seen_at": now,
    }
    if amr is not None:
        values["amr"] = amr
        values["authenticated_at"] = now
    result = conn.execute(
        update(sessions)
        .where(sessions.c.token_hash == old_hash, sessions.c.kind == SessionKind.ACTIVE)
        .values(**values)
    )
    return result.rowcount == 1


def mark_alerted(conn: Connection, *, token_hash: str) -> bool:
    """True once per pending sign-in: the first failed second step is the one that is notified."""
    result = conn.execute(
        update(sessions)
        .where(sessions.c.token_hash == token_hash, sessions.c.alerted.is_(False))
        .values(alerted=True)
    )
    return result.rowcount == 1


@dataclass(frozen=True)
class AbandonedRow:
    """An expired pending sign-in, removed: whose, whether its owner was told already, and its client."""

    account_id: int
    alerted: bool
    ip: str
    user_agent: str


def take_abandoned(conn: Connection, *, now: datetime) -> list[AbandonedRow]:
    """Remove expired pending sign-ins and return them."""
    rows = conn.execute(
        delete(sessions)
        .where(sessions.c.kind == SessionKind.PENDING, sessions.c.expires_at <= now)
        .returning(sessions.c.account_id, sessions.c.alerted, sessions.c.ip, sessions.c.user_agent)
    ).all()
    return [AbandonedRow(r.account_id, bool(r.alerted), r.ip, r.user_agent) for r in rows]


def delete_one(conn: Connection, *, token_hash: str) -> SessionRow | None:
    row = conn.execute(
        delete(sessions).where(sessions.c.token_hash == token_hash).returning(*_COLUMNS)
    ).first()
    return None if row is None else SessionRow(**row._mapping)


def list_active(
    conn: Connection, *, account_id: int, now: datetime, idle_cutoff: datetime
) -> list[SessionRow]:
    rows = conn.execute(
        select(*_COLUMNS)
        .where(
            sessions.c.account_id == account_id,
            sessions.c.kind == SessionKind.ACTIVE,
            sessions.c.expires_at > now,
            sessions.c.last_seen_at > idle_cutoff,
        )
        .order_by(sessions.c.created_at.desc())
    ).all()
    return [SessionRow(**r._mapping) for r in rows]


def delete_by_public_id(conn: Connection, *, account_id: int, public_id: str) -> bool:
    result = conn.execute(
        delete(sessions).where(sessions.c.account_id == account_id, sessions.c.public_id == public_id)
    )
    return result.rowcount == 1


def delete_others(conn: Connection, *, account_id: int, keep_hash: str) -> int:
    result = conn.execute(
        delete(sessions).where(sessions.c.account_id == account_id, sessions.c.token_hash != keep_hash)
    )
    return int(result.rowcount)


def delete_expired_active(conn: Connection, *, now: datetime, idle_cutoff: datetime, limit: int) -> int:
    """At most ``limit`` signed-in sessions past their end or idle too long (pending sign-ins are taken by
    ``take_abandoned``, which records each one)."""
    dead = (
        select(sessions.c.token_hash)
        .where(
            sessions.c.kind == SessionKind.ACTIVE,
            (sessions.c.expires_at <= now) | (sessions.c.last_seen_at <= idle_cutoff),
        )
        .limit(limit)
    )
    result = conn.execute(delete(sessions).where(sessions.c.token_hash.in_(dead.scalar_subquery())))
    return int(result.rowcount)


def take_passkey_upgrade(conn: Connection, *, token_hash: str, now: datetime) -> bool:
    """Use this session's grant of an automatic passkey upgrade: once, and only before it ends (a conditional
    UPDATE decides between concurrent requests)."""
    result = conn.execute(
        update(sessions)
        .where(
            sessions.c.token_hash == token_hash,
            sessions.c.kind == SessionKind.ACTIVE,
            sessions.c.passkey_upgrade_until > now,
        )
        .values(passkey_upgrade_until=None)
    )
    return result.rowcount == 1


def delete_all(conn: Connection, *, account_id: int) -> int:
    """Every session of the account, signed in or pending (an operator's lock)."""
    return int(conn.execute(delete(sessions).where(sessions.c.account_id == account_id)).rowcount)
