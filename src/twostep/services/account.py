"""The account: sign-up, its password, and its security log."""

from __future__ import annotations

import unicodedata

from sqlalchemy.exc import IntegrityError

from twostep import i18n
from twostep.core.errors import InvalidRequest, SignupClosed, TwostepError, UsernameTaken
from twostep.core.events import EventType
from twostep.core.names import normalize_username
from twostep.core.passkeys import generate_user_handle
from twostep.core.passwords import MAX_INPUT_CHARS, check_password_policy
from twostep.i18n import N_
from twostep.services import regulator, trusted_browsers
from twostep.services.audit import Audit
from twostep.services.context import Client, Context, hash_token
from twostep.services.email import normalize_email, send_link
from twostep.services.passwords import check_password
from twostep.services.sessions import CurrentSession, require_verified
from twostep.storage import accounts, events, invitations, sessions
from twostep.storage import groups as group_store
from twostep.storage.events import EventRow
from twostep.storage.invitations import InvitationRow


def sign_up(
    ctx: Context,
    *,
    username: str,
    password: str,
    email: str | None,
    client: Client,
    invite: str | None = None,
) -> str:
    """Create an account and return its normalized username.

    Every sign-up path comes through here, so the per-address limit (SEC-62) cannot be skipped (H02). A
    taken username is refused before any hash, after as long as a hash takes, so that taken and free names
    cost the attacker the same time and the server no argon2 work (H02).

    The sign-up policy (``ctx.signup``) decides who may: "closed" nobody, "invite" only with ``invite``, the
    token of a usable invitation ("open": anyone, and an invitation's groups when one is given). The
    invitation is consumed by a conditional UPDATE in the transaction that inserts the account and its
    groups: of racing sign-ups with one invitation exactly one makes an account, and a failure leaves the
    invitation unused and no account.

    Raises:
        SignupClosed: sign-up is closed, needs an invitation, or the invitation is used, expired or unknown.
        InvalidRequest: a malformed username or e-mail address, or not the invitation's username or address.
        WeakPassword: the password policy of security.md §0.1 refused the password.
        TooManyAttempts: this address sent too many sign-in ceremony requests this minute.
        UsernameTaken: someone has that username.
        Busy: too many password hashes in this worker (H03).
    """
    normalized = normalize_username(username)
    invite = invite or None
    if normalized is None:
        raise InvalidRequest(
            N_("A username has 3 to 64 characters: letters, digits and . _ @ + - (no spaces)."),
            field="username",
        )
    email = normalize_email(email)
    if len(password) > MAX_INPUT_CHARS:
        check_password_policy(password[: MAX_INPUT_CHARS + 1], username=normalized)
    check_password_policy(password, username=normalized)
    now = ctx.now()
    refused: TwostepError | None = None
    invitation: InvitationRow | None = None
    edge = regulator.edge(ctx, client)
    with ctx.db.transaction() as conn:
        # Counted first, whatever happens next: the same per-address limit on every sign-up path (H02).
        regulator.reserve(conn, edge, now=now)
        if ctx.signup == "closed":
            refused = SignupClosed("closed")
        elif invite is not None:
            invitation = invitations.usable(conn, token_hash=hash_token(invite), now=now)
            if invitation is None:
                refused = SignupClosed("invitation_invalid")
        elif ctx.signup != "open":
            refused = SignupClosed("invitation_required")
        if refused is None and invitation is not None:
            refused = _against_invitation(invitation, normalized, email)
        taken = refused is None and accounts.by_username(conn, normalized) is not None
    if refused is not None:
        raise refused
    if invitation is not None and invitation.email is not None:
        email = invitation.email
    if taken:
        ctx.hasher.pause_like_hash()
        raise UsernameTaken()
    password_hash = ctx.hasher.hash(password)
    display = unicodedata.normalize("NFKC", username)
    try:
        with ctx.db.transaction() as conn:
            groups: tuple[str, ...] = ()
            if invite is not None:
                used = invitations.consume(conn, token_hash=hash_token(invite), now=now)
                if used is None:
                    refused = SignupClosed("invitation_invalid")
                    raise _Rollback()
                groups = used.groups
            account_id = accounts.insert(
                conn,
                username=normalized,
                display_name=display,
                password_hash=password_hash,
                email=email,
                user_handle=generate_user_handle(),
                now=now,
            )
            if groups:
                group_store.add(conn, account_id, groups, now=now)
            Audit(ctx, account_id, client, now).record(
                conn,
                EventType.ACCOUNT_CREATED,
                invited=True if invite is not None else None,
                groups=list(groups) or None,
            )
            if email is not None:
                send_link(conn, ctx, account_id=account_id, display_name=display, email=email, now=now)
    except _Rollback:
        assert refused is not None
        raise refused from None
    except IntegrityError as exc:
        # Two sign-ups of one free name at once: the unique constraint decides (one account).
        raise UsernameTaken() from exc
    return normalized


def invitation_for(ctx: Context, token: str) -> InvitationRow | None:
    """The invitation of this token while it can be used (for the sign-up page), else None."""
    if not token:
        return None
    with ctx.db.transaction() as conn:
        return invitations.usable(conn, token_hash=hash_token(token), now=ctx.now())


class _Rollback(Exception):
    """Leaves a transaction without writing anything of it."""


def _against_invitation(invitation: InvitationRow, username: str, email: str | None) -> TwostepError | None:
    """What refuses this sign-up under the invitation: another username, or another address, than the one it
    fixes."""
    if invitation.username is not None and username != invitation.username:
        return InvalidRequest(
            N_("This invitation is for the username %(username)s; sign up with that username."),
            field="username",
            params={"username": invitation.username},
        )
    if invitation.email is not None and email is not None and email.casefold() != invitation.email.casefold():
        return InvalidRequest(
            N_("This invitation is for the address %(email)s; leave it as it is."),
            field="email",
            params={"email": invitation.email},
        )
    return None


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
