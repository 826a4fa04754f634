"""Security events and the e-mails some of them cause, written in the caller's transaction."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection

from twostep.services.context import Client
from twostep.storage import accounts, events, outbox

# H13: at most one message of a kind to an account in this time; repeats are counted into the next one.
COALESCE_WINDOW = timedelta(minutes=15)

# SEC-55: the events that are told to the account holder by e-mail.
NOTIFIED: dict[str, str] = {
    "two_factor_enabled": "Two-step verification was turned on",
    "two_factor_disabled": "Two-step verification was turned off",
    "factor_added": "A second factor was added to your account",
    "factor_removed": "A second factor was removed from your account",
    "recovery_codes_regenerated": "New recovery codes were made for your account",
    "recovery_code_used": "A recovery code was used to sign in to your account",
    "password_changed": "Your password was changed",
    "second_factor_locked": "Sign-in to your account is paused after too many wrong codes",
    "second_factor_failed": "Someone entered your password but not your second factor",
    "second_factor_abandoned": "Someone entered your password but did not finish signing in",
}

_WHAT: dict[str, str] = {
    "two_factor_enabled": "Two-step verification was turned on for your account: a second factor was added, "
    "and signing in now takes your password and a second factor.",
    "two_factor_disabled": "Two-step verification was turned off for your account. "
    "Your account is now protected by your password alone.",
    "factor_added": "A new second factor was added to your account.",
    "factor_removed": "A second factor was removed from your account.",
    "recovery_codes_regenerated": "A new set of recovery codes was made. The old codes no longer work.",
    "recovery_code_used": "Someone signed in to your account with your password and a recovery code.",
    "password_changed": "The password of your account was changed. Other sessions were signed out.",
    "second_factor_locked": "Sign-in to your account is paused for a while after too many wrong codes.",
    "second_factor_failed": "Someone signed in with your correct password, then entered a wrong code "
    "or passkey for the second step.",
    "second_factor_abandoned": "Someone signed in with your correct password, then did not complete "
    "the second step.",
}


def record(
    conn: Connection,
    *,
    account_id: int,
    type_: str,
    client: Client,
    now: datetime,
    detail: dict[str, Any] | None = None,
    origin: str = "",
    notify: bool = True,
) -> None:
    """Append a security event; queue its e-mail when the event is one of SEC-55 and there is an address."""
    detail = detail or {}
    events.insert(
        conn,
        account_id=account_id,
        type_=type_,
        at=now,
        ip=client.ip,
        user_agent=client.user_agent,
        detail=detail,
    )
    if notify and type_ in NOTIFIED:
        account = accounts.by_id(conn, account_id)
        if account is not None and account.email:
            _queue(conn, account=account, type_=type_, client=client, now=now, detail=detail, origin=origin)


def _what(type_: str, detail: dict[str, Any]) -> list[str]:
    """What happened, in the words of the message; one action gives one message that says all of it (H13)."""
    if type_ == "two_factor_disabled" and detail.get("reason") == "last factor removed":
        lines = [
            "The last second factor of your account was removed, so two-step verification was turned off. "
            "Your account is now protected by your password alone."
        ]
    else:
        lines = [_WHAT[type_]]
    name = detail.get("factor_name")
    if isinstance(name, str):
        lines.append(f"Factor: {name}")
    ended = detail.get("other_sessions_ended")
    if type_ == "two_factor_enabled" and isinstance(ended, int):
        if ended:
            lines.append(
                f"{ended} other session{'s' if ended != 1 else ''} signed in with the password alone "
                f"{'were' if ended != 1 else 'was'} signed out."
            )
        else:
            lines.append("No other session was signed in with the password alone.")
    return lines


def _queue(
    conn: Connection,
    *,
    account: accounts.AccountRow,
    type_: str,
    client: Client,
    now: datetime,
    detail: dict[str, Any],
    origin: str,
) -> None:
    assert account.email is not None
    lines = [f"Hello {account.display_name},", "", *_what(type_, detail)]
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
        subject=NOTIFIED[type_],
        body="\n".join(lines) + "\n",
        message_id=f"<{secrets.token_hex(16)}@{domain}>",
        now=now,
        account_id=account.id,
        kind=type_,
        ip=client.ip,
        user_agent=client.user_agent,
        window=COALESCE_WINDOW,
    )


def http_date(now: datetime) -> str:
    return format_datetime(now, usegmt=True)
