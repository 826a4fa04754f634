"""The e-mail address: verification links (single use, 24 hours) and changing the address (POST /email).

Every new address (at sign-up, from an invitation, by POST /email) gets a message with a link to
``/verify-email?token=...``; the page there has a button that posts the token back, so that a mail scanner
fetching the link does not use it. The token is stored only as its SHA-256; it verifies the account's address
only while that is still the address it was sent to. Until then notifications still go to the address.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import Connection

from twostep import i18n
from twostep.core.errors import InvalidRequest, LinkInvalid
from twostep.core.events import EventType
from twostep.i18n import N_
from twostep.services.audit import Audit
from twostep.services.context import EMAIL_LINK_TTL, Client, Context, hash_token
from twostep.services.sessions import CurrentSession, require_verified
from twostep.storage import accounts, email_verifications, outbox

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def normalize_email(email: str | None) -> str | None:
    """The address trimmed, or None for none.

    Raises:
        InvalidRequest: it does not look like an address.
    """
    if email is None:
        return None
    email = email.strip()
    if email == "":
        return None
    if len(email) > 254 or not _EMAIL.fullmatch(email):
        raise InvalidRequest(N_("That e-mail address does not look right."), field="email")
    return email


def _message_id(origin: str) -> str:
    return f"<{secrets.token_hex(16)}@{urlsplit(origin).hostname or 'twostep.local'}>"


def send_link(
    conn: Connection, ctx: Context, *, account_id: int, display_name: str, email: str, now: datetime
) -> None:
    """Store a new verification link for ``email`` and queue the message that carries it, in the caller's
    transaction."""
    token = secrets.token_urlsafe(32)
    email_verifications.create(
        conn,
        token_hash=hash_token(token),
        account_id=account_id,
        email=email,
        expires_at=now + EMAIL_LINK_TTL,
    )
    # In the account's language (issue 19), else the operator's default_language.
    stored = accounts.by_id(conn, account_id)
    language = stored.language if stored is not None and stored.language in i18n.LANGUAGES else None
    _ = i18n.translations(language or ctx.default_language).gettext
    body = "\n".join(
        [
            _("Hello %(name)s,") % {"name": display_name},
            "",
            _("This address was given for the account %(name)s at %(origin)s.")
            % {"name": display_name, "origin": ctx.origin},
            _(
                "To confirm that it is yours, open this link within 24 hours and press the button on the "
                "page:"
            ),
            "",
            f"{ctx.origin}/verify-email?token={token}",
            "",
            _("If you did not expect this message, ignore it: the address stays unconfirmed."),
            "",
            _("This message was sent by twostep."),
        ]
    )
    outbox.queue_single(
        conn,
        recipient=email,
        subject=_("Confirm your e-mail address"),
        body=body + "\n",
        message_id=_message_id(ctx.origin),
        now=now,
    )


def verify(ctx: Context, *, token: str, client: Client, account_id: int | None = None) -> None:
    """Use a verification link (once): the account's address is verified if it is still the one the link was
    sent to. With ``account_id`` (the API, for a signed-in session), only a link of that account is used.

    Raises:
        LinkInvalid: the link was used, expired or never existed, is another account's, or the address
            changed since; nothing is used up.
    """
    now = ctx.now()
    changed = False
    with ctx.db.transaction() as conn:
        taken = email_verifications.take(conn, token_hash=hash_token(token), now=now) if token else None
        if taken is not None and account_id is not None and taken.account_id != account_id:
            raise LinkInvalid()  # rolls the take back: the link stays usable by its account
        if taken is not None:
            owner = taken.account_id
            if email_verifications.mark_verified(conn, account_id=owner, email=taken.email, now=now):
                Audit(ctx, owner, client, now).record(conn, EventType.EMAIL_VERIFIED)
                return
            changed = True
    if changed:
        raise LinkInvalid(N_("This link was for an address that is no longer the account's address."))
    raise LinkInvalid()


def change_email(ctx: Context, session: CurrentSession, *, email: str, client: Client) -> None:
    """POST /email: a new address (verify access), not verified until its link is followed; the former
    address is told, the new one gets the link.

    Raises:
        VerifyAccessRequired, InvalidRequest.
    """
    now = ctx.now()
    require_verified(session, now)
    new = normalize_email(email)
    if new is None:
        raise InvalidRequest(N_("Give an e-mail address."), field="email")
    with ctx.db.transaction() as conn:
        account = accounts.by_id(conn, session.account_id)
        if account is None:
            return
        audit = Audit(ctx, account.id, client, now)
        # Recorded (and told) while the account still has its former address: the message goes there.
        audit.record(conn, EventType.EMAIL_CHANGED, session=session.public_id)
        accounts.set_email(conn, account.id, new)
        email_verifications.forget_account(conn, account.id)
        send_link(conn, ctx, account_id=account.id, display_name=account.display_name, email=new, now=now)
