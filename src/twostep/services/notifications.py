"""The e-mails that some security events cause (SEC-55), queued in the transaction of their event."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import Connection

from twostep.core.events import EventType
from twostep.services.context import Client
from twostep.storage import accounts, outbox

# H13: at most one message of a kind to an account in this time; repeats are counted into the next one.
COALESCE_WINDOW = timedelta(minutes=15)


@dataclass(frozen=True)
class Notice:
    """The e-mail of one kind of event: its subject, and the sentence that says what happened."""

    subject: str
    text: str


# SEC-55: the events that are told to the account holder by e-mail, and no other.
NOTIFIED: dict[EventType, Notice] = {
    EventType.TWO_FACTOR_ENABLED: Notice(
        "Two-step verification was turned on",
        "Two-step verification was turned on for your account: a second factor was added, "
        "and signing in now takes your password and a second factor.",
    ),
    EventType.TWO_FACTOR_DISABLED: Notice(
        "Two-step verification was turned off",
        "Two-step verification was turned off for your account. "
        "Your account is now protected by your password alone.",
    ),
    EventType.FACTOR_ADDED: Notice(
        "A second factor was added to your account",
        "A new second factor was added to your account.",
    ),
    EventType.FACTOR_REMOVED: Notice(
        "A second factor was removed from your account",
        "A second factor was removed from your account.",
    ),
    EventType.RECOVERY_CODES_REGENERATED: Notice(
        "New recovery codes were made for your account",
        "A new set of recovery codes was made. The old codes no longer work.",
    ),
    EventType.RECOVERY_CODE_USED: Notice(
        "A recovery code was used to sign in to your account",
        "Someone signed in to your account with your password and a recovery code.",
    ),
    EventType.PASSWORD_CHANGED: Notice(
        "Your password was changed",
        "The password of your account was changed. Other sessions were signed out.",
    ),
    EventType.SECOND_FACTOR_LOCKED: Notice(
        "Sign-in to your account is paused after too many wrong codes",
        "Sign-in to your account is paused for a while after too many wrong codes.",
    ),
    EventType.SECOND_FACTOR_FAILED: Notice(
        "Someone entered your password but not your second factor",
        "Someone signed in with your correct password, then entered a wrong code "
        "or passkey for the second step.",
    ),
    EventType.PASSKEY_ADDED_AUTOMATICALLY: Notice(
        "Your password manager added a passkey to your account",
        "Right after you signed in with your password, your password manager created a passkey for your "
        "account, and it now works as a second factor. If this was not you, remove it and change your "
        "password.",
    ),
    EventType.SECOND_FACTOR_ABANDONED: Notice(
        "Someone entered your password but did not finish signing in",
        "Someone signed in with your correct password, then did not complete the second step.",
    ),
    EventType.OPERATOR_LOCKED: Notice(
        "Your account was locked by the operator",
        "The operator of this site locked your account: every session was signed out, and signing in is "
        "refused until they unlock it.",
    ),
    EventType.OPERATOR_GROUPS_CHANGED: Notice(
        "The groups of your account were changed",
        "The operator of this site changed the groups your account is in.",
    ),
    EventType.OPERATOR_DELETED: Notice(
        "Your account was deleted by the operator",
        "The operator of this site deleted your account, with its second factors and its security log.",
    ),
    EventType.EMAIL_CHANGED: Notice(
        "The e-mail address of your account was changed",
        "The e-mail address of your account was changed. Security messages now go to the new address.",
    ),
}


def queue(
    conn: Connection,
    origin: str,
    account_id: int,
    client: Client,
    now: datetime,
    event: EventType,
    detail: Mapping[str, object],
) -> None:
    """Queue the e-mail of ``event`` when it is one of SEC-55 and the account has an address."""
    notice = NOTIFIED.get(event)
    if notice is None:
        return
    account = accounts.by_id(conn, account_id)
    if account is None or not account.email:
        return
    lines = [f"Hello {account.display_name},", "", *_what(event, detail)]
    lines += [
        "",
        f"When: {now.strftime('%Y-%m-%d %H:%M:%S')} UTC",
        f"Client address: {client.ip}",
        f"Browser: {client.user_agent or 'unknown'}",
        "",
        "If this was you, there is nothing to do.",
        "If it was not you: sign in, change your password, review your second factors and end your other "
        f"sessions at {origin}/settings/two-step. If you cannot sign in any more, reply to this message "
        "to reach the operator of this service.",
        "",
        "This message was sent by twostep. It never contains codes or passwords, and no one from support "
        "will ever ask you for them.",
    ]
    domain = urlsplit(origin).hostname or "twostep.local"
    outbox.queue(
        conn,
        recipient=account.email,
        subject=notice.subject,
        body="\n".join(lines) + "\n",
        message_id=f"<{secrets.token_hex(16)}@{domain}>",
        now=now,
        account_id=account.id,
        kind=event,
        ip=client.ip,
        user_agent=client.user_agent,
        window=COALESCE_WINDOW,
    )


def _what(event: EventType, detail: Mapping[str, object]) -> list[str]:
    """What happened, in the words of the message; one action gives one message that says all of it (H13)."""
    if event is EventType.TWO_FACTOR_DISABLED and detail.get("reason") == "last factor removed":
        lines = [
            "The last second factor of your account was removed, so two-step verification was turned off. "
            "Your account is now protected by your password alone."
        ]
    else:
        lines = [NOTIFIED[event].text]
    name = detail.get("factor_name")
    if isinstance(name, str):
        lines.append(f"Factor: {name}")
    for key, label in (("added", "Groups joined"), ("removed", "Groups left"), ("groups", "Groups now")):
        value = detail.get(key)
        if event is EventType.OPERATOR_GROUPS_CHANGED and isinstance(value, list):
            lines.append(f"{label}: {', '.join(str(v) for v in value) or '(none)'}")
    ended = detail.get("other_sessions_ended")
    if event is EventType.TWO_FACTOR_ENABLED and isinstance(ended, int):
        if ended:
            lines.append(
                f"{ended} other session{'s' if ended != 1 else ''} signed in with the password alone "
                f"{'were' if ended != 1 else 'was'} signed out."
            )
        else:
            lines.append("No other session was signed in with the password alone.")
    return lines
