"""The account: sign-up, its password, and its security log."""

from __future__ import annotations

import re
import unicodedata

from sqlalchemy.exc import IntegrityError

from twostep import i18n
from twostep.core.errors import InvalidRequest, UsernameTaken
from twostep.core.events import EventType
from twostep.core.names import normalize_username
from twostep.core.passkeys import generate_user_handle
from twostep.core.passwords import MAX_INPUT_CHARS, check_password_policy
from twostep.i18n import N_
from twostep.services import regulator, trusted_browsers
from twostep.services.audit import Audit
from twostep.services.context import Client, Context
from twostep.services.passwords import check_password
from twostep.services.sessions import CurrentSession, require_verified
from twostep.storage import accounts, events, sessions
from twostep.storage.events import EventRow

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def sign_up(ctx: Context, *, username: str, password: str, email: str | None, client: Client) -> str:
    """Create an account and return its normalized username.

    Every sign-up path comes through here, so the per-address limit (SEC-62) cannot be skipped (H02). A
    taken username is refused before any hash, after as long as a hash takes, so that taken and free names
    cost the attacker the same time and the server no argon2 work (H02).

    Raises:
        InvalidRequest: a malformed username or e-mail address.
        WeakPassword: the password policy of security.md §0.1 refused the password.
        TooManyAttempts: this address sent too many sign-in ceremony requests this minute.
        UsernameTaken: someone has that username.
        Busy: too many password hashes in this worker (H03).
    """
    normalized = normalize_username(username)
    if normalized is None:
        raise InvalidRequest(
            N_("A username has 3 to 64 characters: letters, digits and . _ @ + - (no spaces)."),
            field="username",
        )
    if email is not None:
        email = email.strip()
        if email == "":
            email = None
        elif len(email) > 254 or not _EMAIL.fullmatch(email):
            raise InvalidRequest(N_("That e-mail address does not look right."), field="email")
    if len(password) > MAX_INPUT_CHARS:
        check_password_policy(password[: MAX_INPUT_CHARS + 1], username=normalized)
    check_password_policy(password, username=normalized)
    now = ctx.now()
    with ctx.db.transaction() as conn:
        regulator.reserve(conn, regulator.edge(ctx, client), now=now)
        taken = accounts.by_username(conn, normalized) is not None
    if taken:
        ctx.hasher.pause_like_hash()
        raise UsernameTaken()
    password_hash = ctx.hasher.hash(password)
    display = unicodedata.normalize("NFKC", username)
    try:
        with ctx.db.transaction() as conn:
            account_id = accounts.insert(
                conn,
                username=normalized,
                display_name=display,
                password_hash=password_hash,
                email=email,
                user_handle=generate_user_handle(),
                now=now,
            )
            Audit(ctx, account_id, client, now).record(conn, EventType.ACCOUNT_CREATED)
    except IntegrityError as exc:
        # Two sign-ups of one free name at once: the unique constraint decides (one account).
        raise UsernameTaken() from exc
    return normalized


def change_password(
    ctx: Context, session: CurrentSession, *, current_password: str, new_password: str, client: Client
) -> None:
    """POST /password: verify access and the current password; every other session of the account ends.

    Raises:
        VerifyAccessRequired, TooManyAttempts, InvalidCredentials (a counted password failure), WeakPassword.
    """
    require_verified(session, ctx.now())
    check_password(
        ctx, username=session.username, password=current_password, client=client, known_browser=True
    )
    check_password_policy(new_password, username=session.username)
    new_hash = ctx.hasher.hash(new_password)
    now = ctx.now()
    with ctx.db.transaction() as conn:
        accounts.set_password_hash(conn, session.account_id, new_hash)
        ended = sessions.delete_others(conn, account_id=session.account_id, keep_hash=session.token_hash)
        audit = Audit(ctx, session.account_id, client, now)
        audit.record(conn, EventType.PASSWORD_CHANGED, other_sessions_ended=ended)
        trusted_browsers.revoke_all(conn, audit, reason="password changed")


def security_log(ctx: Context, session: CurrentSession, *, limit: int = 200) -> list[EventRow]:
    """GET /security-events, newest first; details never hold a secret (codes, passwords and session ids are
    never recorded)."""
    with ctx.db.transaction() as conn:
        return events.list_for(conn, session.account_id, limit=limit)


def set_language(ctx: Context, session: CurrentSession, language: str) -> None:
    """Store the language the holder chose in the menu; the pages and e-mails use it (issue 19).

    Raises:
        InvalidRequest: not one of twostep's languages.
    """
    if language not in i18n.LANGUAGES:
        raise InvalidRequest(N_("Choose one of the languages of the menu."), field="language")
    with ctx.db.transaction() as conn:
        accounts.set_language(conn, session.account_id, language)
