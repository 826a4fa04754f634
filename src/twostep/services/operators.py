"""What an operator does from the command line (`twostep invite`, `twostep user ...`), one transaction each.

An operator decides who has an account: invites, locks, unlocks, deletes, puts accounts in groups. An
operator never removes a factor, turns two-step verification off or reads a secret: nothing here does (the
views below carry the kinds and names of factors, never a secret, hash or code). Each action on an account is
a security event of that account; lock, delete and group changes are told to its holder by e-mail.

Its messages are for the operator at the command line, which speaks English: they are built with f-strings
and are not in the catalogues (issue 19). No web page or API answer calls this module (a sign-up that an
invitation refuses is services.account's, and is translated).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from twostep.core.errors import InvalidRequest, NotFound, UsernameTaken
from twostep.core.events import EventType
from twostep.core.names import normalize_group, normalize_username
from twostep.services.audit import Audit
from twostep.services.context import INVITATION_TTL, Client, Context, hash_token
from twostep.services.email import normalize_email
from twostep.services.regulator import second_factor
from twostep.storage import accounts, events, factors, invitations, outbox, sessions, throttle
from twostep.storage import groups as group_store
from twostep.storage.accounts import AccountRow

# The client of an operator's action, as the account's security log shows it.
OPERATOR = Client(ip="operator", user_agent="twostep command line")


class UnknownUser(NotFound):
    def __init__(self, username: str) -> None:
        super().__init__(f"There is no user named {username!r}.")


@dataclass(frozen=True)
class Invitation:
    url: str
    username: str | None
    email: str | None
    groups: tuple[str, ...]
    expires_at: datetime


@dataclass(frozen=True)
class FactorView:
    kind: str
    name: str


@dataclass(frozen=True)
class UserView:
    username: str
    email: str | None
    email_verified: bool
    groups: tuple[str, ...]
    two_step: bool
    factors: tuple[FactorView, ...]
    created_at: datetime | None
    last_sign_in: datetime | None
    locked_at: datetime | None


def group_names(raw: list[str]) -> list[str]:
    """The normalised group names.

    Raises:
        InvalidRequest: a name is not 1 to 64 letters, digits and . _ @ + - (no spaces or control characters).
    """
    out: list[str] = []
    for name in raw:
        normalized = normalize_group(name)
        if normalized is None:
            raise InvalidRequest(
                f"{name!r} is not a group name: 1 to 64 letters, digits and . _ @ + - (no spaces).",
                field="group",
            )
        out.append(normalized)
    return sorted(set(out))


def invite(
    ctx: Context,
    *,
    username: str | None = None,
    email: str | None = None,
    groups: list[str] | None = None,
    expires: timedelta = INVITATION_TTL,
) -> Invitation:
    """A new invitation; its URL (``<origin>/signup?invite=<token>``) is the only place the token appears.

    Raises:
        InvalidRequest: a malformed username, address or group name, or a duration that is not positive.
        UsernameTaken: the username is someone's already.
    """
    fixed: str | None = None
    if username is not None:
        fixed = normalize_username(username)
        if fixed is None:
            raise InvalidRequest(
                f"{username!r} is not a username: 3 to 64 letters, digits and . _ @ + - (no spaces).",
                field="username",
            )
    address = normalize_email(email)
    names = group_names(groups or [])
    if expires <= timedelta(0):
        raise InvalidRequest("An invitation must last some time.")
    now = ctx.now()
    token = secrets.token_urlsafe(32)
    with ctx.db.transaction() as conn:
        if fixed is not None and accounts.by_username(conn, fixed) is not None:
            raise UsernameTaken(f"The username {fixed!r} is taken.")
        invitations.create(
            conn,
            token_hash=hash_token(token),
            username=fixed,
            email=address,
            groups=names,
            now=now,
            expires_at=now + expires,
        )
    return Invitation(f"{ctx.origin}/signup?invite={token}", fixed, address, tuple(names), now + expires)


def _account(conn: Connection, username: str) -> AccountRow:
    normalized = normalize_username(username)
    account = accounts.by_username(conn, normalized) if normalized else None
    if account is None:
        raise UnknownUser(username)
    return account


def list_users(ctx: Context) -> list[UserView]:
    with ctx.db.transaction() as conn:
        return [_view(conn, account) for account in accounts.all_accounts(conn)]


def show_user(ctx: Context, username: str) -> UserView:
    """Raises: UnknownUser."""
    with ctx.db.transaction() as conn:
        return _view(conn, _account(conn, username))


def _view(conn: Connection, account: AccountRow) -> UserView:
    rows = factors.list_for(conn, account.id)
    return UserView(
        username=account.username,
        email=account.email,
        email_verified=account.email_verified_at is not None,
        groups=tuple(group_store.of_account(conn, account.id)),
        two_step=bool(rows),
        factors=tuple(FactorView(row.type, row.name) for row in rows),
        created_at=account.created_at,
        last_sign_in=events.last_at(conn, account.id, EventType.SIGNED_IN),
        locked_at=account.locked_at,
    )


def lock(ctx: Context, username: str) -> int | None:
    """Lock the account and end every one of its sessions, in one transaction; returns how many sessions
    ended, or None when it was locked already.

    Raises: UnknownUser.
    """
    now = ctx.now()
    with ctx.db.transaction() as conn:
        account = _account(conn, username)
        if not accounts.set_locked(conn, account.id, now):
            return None
        ended = sessions.delete_all(conn, account_id=account.id)
        Audit(ctx, account.id, OPERATOR, now).record(conn, EventType.OPERATOR_LOCKED, sessions_ended=ended)
    return ended


def unlock(ctx: Context, username: str) -> bool:
    """Unlock the account; False when it was not locked.

    Raises: UnknownUser.
    """
    now = ctx.now()
    with ctx.db.transaction() as conn:
        account = _account(conn, username)
        if not accounts.set_locked(conn, account.id, None):
            return False
        Audit(ctx, account.id, OPERATOR, now).record(conn, EventType.OPERATOR_UNLOCKED)
    return True


def delete(ctx: Context, username: str) -> str:
    """Delete the account and everything of it, in one transaction; the e-mail that tells its holder is
    queued first, and stays in the outbox only until it is delivered. Returns the username.

    Raises: UnknownUser.
    """
    now = ctx.now()
    with ctx.db.transaction() as conn:
        account = _account(conn, username)
        Audit(ctx, account.id, OPERATOR, now).record(conn, EventType.OPERATOR_DELETED)
        outbox.detach_account(conn, account.id)
        # Counters keyed by the account's id (SQLite may give the id to a later account).
        throttle.delete_key(conn, key=second_factor(account.id).key)
        accounts.delete_account(conn, account.id)
    return account.username


@dataclass(frozen=True)
class GroupChange:
    username: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    groups: tuple[str, ...]


def change_groups(ctx: Context, username: str, *, add: list[str], remove: list[str]) -> GroupChange:
    """Put the account in the groups of ``add`` and take it out of those of ``remove``.

    Raises: UnknownUser, InvalidRequest (a malformed group name, or one both added and removed).
    """
    to_add, to_remove = group_names(add), group_names(remove)
    both = set(to_add) & set(to_remove)
    if both:
        raise InvalidRequest(f"{', '.join(sorted(both))}: both added and removed.", field="group")
    now = ctx.now()
    with ctx.db.transaction() as conn:
        account = _account(conn, username)
        added = group_store.add(conn, account.id, to_add, now=now)
        removed = group_store.remove(conn, account.id, to_remove)
        now_in = group_store.of_account(conn, account.id)
        if added or removed:
            Audit(ctx, account.id, OPERATOR, now).record(
                conn, EventType.OPERATOR_GROUPS_CHANGED, added=added, removed=removed, groups=now_in
            )
    return GroupChange(account.username, tuple(added), tuple(removed), tuple(now_in))
