"""Delivery of the notification outbox: SMTP (STARTTLS or TLS, with credentials) or .eml files.

Messages are written in the transaction of the event that caused them, so a crash or an SMTP outage
loses none. A worker claims due messages with a conditional UPDATE (a lease), sends them, and marks
them sent; failures are retried with backoff. Files are written under their Message-ID with O_EXCL,
so a message is written once; over SMTP the same Message-ID is reused on a retry after a crash.
"""

from __future__ import annotations

import gettext
import logging
import os
import smtplib
import ssl
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy import Connection

from twostep import i18n
from twostep.services.context import Context
from twostep.services.metrics import FAILED, SENT
from twostep.storage import accounts, outbox
from twostep.storage.outbox import OutboxRow

log = logging.getLogger("twostep.outbox")
LEASE = timedelta(seconds=60)
BATCH = 20


@dataclass(frozen=True)
class Mailer:
    """Where messages go: an SMTP URL, or the outbox folder when there is none."""

    smtp_url: str | None
    sender: str
    folder: Path

    def sender_address(self) -> str:
        return parseaddr(self.sender)[1] or self.sender

    def send(self, message: EmailMessage) -> None:
        if self.smtp_url:
            self._smtp(message)
        else:
            self._file(message)

    def _file(self, message: EmailMessage) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = "".join(c if c.isalnum() else "_" for c in str(message["Message-ID"])) + ".eml"
        try:
            fd = os.open(self.folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return  # written before a crash: once is enough
        with os.fdopen(fd, "wb") as out:
            out.write(bytes(message))

    def _smtp(self, message: EmailMessage) -> None:
        assert self.smtp_url is not None
        url = urlsplit(self.smtp_url)
        host = url.hostname or "localhost"
        context = ssl.create_default_context()
        if url.scheme == "smtps":
            client: smtplib.SMTP = smtplib.SMTP_SSL(host, url.port or 465, timeout=10, context=context)
        else:
            client = smtplib.SMTP(host, url.port or 25, timeout=10)
        with client:
            client.ehlo()
            if url.scheme == "smtp+starttls" or (url.scheme == "smtp" and client.has_extn("starttls")):
                client.starttls(context=context)
                client.ehlo()
            if url.username:
                client.login(unquote(url.username), unquote(url.password or ""))
            # sendmail with the bytes as generated (send_message would escape body lines starting "From "),
            # with CRLF line ends: smtplib sends bytes as they are.
            raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
            client.sendmail(self.sender_address(), [str(message["To"])], raw)


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def summary_lines(row: OutboxRow, t: gettext.NullTranslations | None = None) -> list[str]:
    """What a message that stands for several events of one kind adds (H13): how many, since when, and the
    last one's time and client. Nothing for a message of one event. In the language of ``t`` (the
    account's, issue 19); English without."""
    t = t or gettext.NullTranslations()
    _ = t.gettext
    n = row.occurrences
    if row.since is None and n <= 1:
        return []
    times = _("once") if n == 1 else t.ngettext("%(num)d time", "%(num)d times", n) % {"num": n}
    if row.since is not None:
        lines = [
            _(
                "This message sums up repeats: this happened %(times)s since our last message about it, "
                "which was sent at %(when)s. We send at most one message of a kind every 15 minutes."
            )
            % {"times": times, "when": _when(row.since)},
        ]
    else:
        lines = [
            _("This happened %(times)s in all. We send at most one message of a kind every 15 minutes.")
            % {"times": times}
        ]
    if n > 1 and row.last_at is not None:
        lines.append(
            _(
                "The details below are of the first time; the last time was at %(when)s, from client address "
                "%(ip)s, browser %(browser)s. Your security log lists each one."
            )
            % {
                "when": _when(row.last_at),
                "ip": row.last_ip or _("unknown"),
                "browser": row.last_user_agent or _("unknown"),
            }
        )
    return lines


def _body(row: OutboxRow, t: gettext.NullTranslations | None = None) -> str:
    """The stored text, with the summary of repeats after the line that says what happened."""
    extra = summary_lines(row, t)
    if not extra:
        return row.body
    lines = row.body.split("\n")
    at = lines.index("", 2) if "" in lines[2:] else len(lines)  # the end of the "what happened" paragraph
    return "\n".join([*lines[:at], "", *extra, *lines[at:]])


def _message(mailer: Mailer, row: OutboxRow, t: gettext.NullTranslations | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = mailer.sender
    msg["To"] = row.recipient
    msg["Subject"] = row.subject
    msg["Message-ID"] = row.message_id
    msg["Date"] = format_datetime(row.created_at, usegmt=True)
    msg.set_content(_body(row, t))
    return msg


def _language(conn: Connection, account_id: int | None, default: str) -> str:
    account = accounts.by_id(conn, account_id) if account_id is not None else None
    return account.language if account is not None and account.language in i18n.LANGUAGES else default


def deliver_due(ctx: Context, mailer: Mailer, stop: threading.Event | None = None) -> int:
    """Send what is due; returns how many were sent. ``stop`` set (the server is shutting down) ends the round
    between two messages: the message being sent is finished and marked sent, the ones not tried yet are
    given back, so that none is lost or sent twice."""
    now = ctx.now()
    sent = 0
    with ctx.db.transaction() as conn:
        claimed = outbox.claim(conn, now=now, lease=LEASE, limit=BATCH)
        # The summary of repeats is written now, in the account's language like the rest (issue 19).
        languages = {row.id: _language(conn, row.account_id, ctx.default_language) for row in claimed}
    for index, row in enumerate(claimed):
        if stop is not None and stop.is_set():
            with ctx.db.transaction() as conn:
                outbox.release(conn, messages=[r.id for r in claimed[index:]])
            break
        try:
            mailer.send(_message(mailer, row, i18n.translations(languages[row.id])))
        except (OSError, smtplib.SMTPException) as exc:
            delay = min(3600, 5 * 2 ** min(row.attempts, 10))
            log.warning("notification not delivered yet (attempt %d): %s", row.attempts, type(exc).__name__)
            ctx.metrics.delivery(FAILED)
            with ctx.db.transaction() as conn:
                outbox.retry_later(
                    conn, message=row.id, at=ctx.now() + timedelta(seconds=delay), error=type(exc).__name__
                )
            continue
        with ctx.db.transaction() as conn:
            outbox.mark_sent(conn, message=row.id, now=ctx.now())
        ctx.metrics.delivery(SENT)
        sent += 1
    return sent


@dataclass(frozen=True)
class Backlog:
    """The outbox as the operator sees it: messages not yet sent, and how long the most overdue one has
    waited past its time (0 when none is due)."""

    depth: int
    overdue_seconds: float


def backlog(ctx: Context) -> Backlog:
    """Two cheap aggregates (an index covers ``sent_at, next_attempt_at``); no writer lock."""
    now = ctx.now()
    with ctx.db.read() as conn:
        depth, oldest_due = outbox.backlog(conn, now=now)
    overdue = 0.0 if oldest_due is None else max(0.0, (now - oldest_due).total_seconds())
    return Backlog(depth, overdue)
