"""The e-mails that some security events cause (SEC-55), queued in the transaction of their event."""

from __future__ import annotations

import gettext
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import Connection

from twostep import i18n
from twostep.core.events import EventType
from twostep.i18n import N_
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
        N_("Two-step verification was turned on"),
        N_(
            "Two-step verification was turned on for your account: a second factor was added, "
            "and signing in now takes your password and a second factor."
        ),
    ),
    EventType.TWO_FACTOR_DISABLED: Notice(
        N_("Two-step verification was turned off"),
        N_(
            "Two-step verification was turned off for your account. "
            "Your account is now protected by your password alone."
        ),
    ),
    EventType.FACTOR_ADDED: Notice(
        N_("A second factor was added to your account"),
        N_("A new second factor was added to your account."),
    ),
    EventType.FACTOR_REMOVED: Notice(
        N_("A second factor was removed from your account"),
        N_("A second factor was removed from your account."),
    ),
    EventType.RECOVERY_CODES_REGENERATED: Notice(
        N_("New recovery codes were made for your account"),
        N_("A new set of recovery codes was made. The old codes no longer work."),
    ),
    EventType.RECOVERY_CODE_USED: Notice(
        N_("A recovery code was used to sign in to your account"),
        N_("Someone signed in to your account with your password and a recovery code."),
    ),
    EventType.PASSWORD_CHANGED: Notice(
        N_("Your password was changed"),
        N_("The password of your account was changed. Other sessions were signed out."),
    ),
    EventType.SECOND_FACTOR_LOCKED: Notice(
        N_("Sign-in to your account is paused after too many wrong codes"),
        N_("Sign-in to your account is paused for a while after too many wrong codes."),
    ),
    EventType.SECOND_FACTOR_FAILED: Notice(
        N_("Someone entered your password but not your second factor"),
        N_(
            "Someone signed in with your correct password, then entered a wrong code "
            "or passkey for the second step."
        ),
    ),
    EventType.PASSKEY_ADDED_AUTOMATICALLY: Notice(
        N_("Your password manager added a passkey to your account"),
        N_(
            "Right after you signed in with your password, your password manager created a passkey for your "
            "account, and it now works as a second factor. If this was not you, remove it and change your "
            "password."
        ),
    ),
    EventType.SECOND_FACTOR_ABANDONED: Notice(
        N_("Someone entered your password but did not finish signing in"),
        N_("Someone signed in with your correct password, then did not complete the second step."),
    ),
    EventType.OPERATOR_LOCKED: Notice(
        N_("Your account was locked by the operator"),
        N_(
            "The operator of this site locked your account: every session was signed out, and signing in is "
            "refused until they unlock it."
        ),
    ),
    EventType.OPERATOR_GROUPS_CHANGED: Notice(
        N_("The groups of your account were changed"),
        N_("The operator of this site changed the groups your account is in."),
    ),
    EventType.OPERATOR_DELETED: Notice(
        N_("Your account was deleted by the operator"),
        N_("The operator of this site deleted your account, with its second factors and its security log."),
    ),
    EventType.EMAIL_CHANGED: Notice(
        N_("The e-mail address of your account was changed"),
        N_("The e-mail address of your account was changed. Security messages now go to the new address."),
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
    default_language: str = i18n.SOURCE,
) -> None:
    """Queue the e-mail of ``event`` when it is one of SEC-55 and the account has an address."""
    notice = NOTIFIED.get(event)
    if notice is None:
        return
    account = accounts.by_id(conn, account_id)
    if account is None or not account.email:
        return
    # In the account's language (issue 19): its stored choice, else the operator's default_language.
    language = account.language if account.language in i18n.LANGUAGES else default_language
    t = i18n.translations(language)
    _ = t.gettext
    lines = [_("Hello %(name)s,") % {"name": account.display_name}, "", *_what(t, event, detail)]
    lines += [
        "",
        # The locale's format with the zone named, then the same instant in ISO 8601 (unambiguous in a reply).
        _("When: %(when)s") % {"when": i18n.format_datetime(now, language)}
        + f" ({now.strftime('%Y-%m-%d %H:%M:%S')} UTC)",
        _("Client address: %(ip)s") % {"ip": client.ip},
        _("Browser: %(browser)s") % {"browser": client.user_agent or _("unknown")},
        "",
        _("If this was you, there is nothing to do."),
        _(
            "If it was not you: sign in, change your password, review your second factors and end your other "
            "sessions at %(url)s. If you cannot sign in any more, reply to this message to reach the "
            "operator of this service."
        )
        % {"url": f"{origin}/settings/two-step"},
        "",
        _(
            "This message was sent by twostep. It never contains codes or passwords, and no one from support "
            "will ever ask you for them."
        ),
    ]
    domain = urlsplit(origin).hostname or "twostep.local"
    outbox.queue(
        conn,
        recipient=account.email,
        subject=_(notice.subject),
        body="\n".join(lines) + "\n",
        message_id=f"<{secrets.token_hex(16)}@{domain}>",
        now=now,
        account_id=account.id,
        kind=event,
        ip=client.ip,
        user_agent=client.user_agent,
        window=COALESCE_WINDOW,
    )


def _what(t: gettext.NullTranslations, event: EventType, detail: Mapping[str, object]) -> list[str]:
    """What happened, in the words of the message; one action gives one message that says all of it (H13)."""
    _ = t.gettext
    if event is EventType.TWO_FACTOR_DISABLED and detail.get("reason") == "last factor removed":
        lines = [
            _(
                "The last second factor of your account was removed, so two-step verification was turned "
                "off. Your account is now protected by your password alone."
            )
        ]
    else:
        lines = [_(NOTIFIED[event].text)]
    name = detail.get("factor_name")
    if isinstance(name, str):
        lines.append(_("Factor: %(name)s") % {"name": name})
    for key, label in (
        ("added", N_("Groups joined")),
        ("removed", N_("Groups left")),
        ("groups", N_("Groups now")),
    ):
        value = detail.get(key)
        if event is EventType.OPERATOR_GROUPS_CHANGED and isinstance(value, list):
            lines.append(
                _("%(label)s: %(groups)s")
                % {"label": _(label), "groups": ", ".join(str(v) for v in value) or _("(none)")}
            )
    ended = detail.get("other_sessions_ended")
    if event is EventType.TWO_FACTOR_ENABLED and isinstance(ended, int):
        if ended:
            lines.append(
                t.ngettext(
                    "%(num)d other session signed in with the password alone was signed out.",
                    "%(num)d other sessions signed in with the password alone were signed out.",
                    ended,
                )
                % {"num": ended}
            )
        else:
            lines.append(_("No other session was signed in with the password alone."))
    return lines
