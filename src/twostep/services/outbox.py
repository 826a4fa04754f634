"""Delivery of the notification outbox: SMTP (STARTTLS or TLS, with credentials) or .eml files.

Messages are written in the transaction of the event that caused them, so a crash or an SMTP outage
loses none. A worker claims due messages with a conditional UPDATE (a lease), sends them, and marks
them sent; failures are retried with backoff. Files are written under their Message-ID with O_EXCL,
so a message is written once; over SMTP the same Message-ID is reused on a retry after a crash.
"""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy import and_, or_, select, update

from twostep.services.context import Context
from twostep.storage.tables import outbox

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


def _message(mailer: Mailer, row: object) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = mailer.sender
    msg["To"] = row.recipient  # type: ignore[attr-defined]
    msg["Subject"] = row.subject  # type: ignore[attr-defined]
    msg["Message-ID"] = row.message_id  # type: ignore[attr-defined]
    msg["Date"] = format_datetime(row.created_at, usegmt=True)  # type: ignore[attr-defined]
    msg.set_content(row.body)  # type: ignore[attr-defined]
    return msg


def _claim(ctx: Context, now: datetime) -> list[object]:
    free = or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until <= now)
    due = and_(outbox.c.sent_at.is_(None), outbox.c.next_attempt_at <= now, free)
    with ctx.db.transaction() as conn:
        ids = [r.id for r in conn.execute(select(outbox.c.id).where(due).order_by(outbox.c.id).limit(BATCH))]
        if not ids:
            return []
        # The condition is repeated on the row itself: of two workers, only one claims each message.
        rows = conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(ids), due)
            .values(claimed_until=now + LEASE, attempts=outbox.c.attempts + 1)
            .returning(outbox)
        ).all()
    return list(rows)


def deliver_due(ctx: Context, mailer: Mailer) -> int:
    """Send what is due; returns how many were sent."""
    now = ctx.now()
    sent = 0
    for row in _claim(ctx, now):
        try:
            mailer.send(_message(mailer, row))
        except (OSError, smtplib.SMTPException) as exc:
            attempts = int(row.attempts)  # type: ignore[attr-defined]
            delay = min(3600, 5 * 2 ** min(attempts, 10))
            log.warning("notification not delivered yet (attempt %d): %s", attempts, type(exc).__name__)
            with ctx.db.transaction() as conn:
                conn.execute(
                    update(outbox)
                    .where(outbox.c.id == row.id)  # type: ignore[attr-defined]
                    .values(
                        claimed_until=None,
                        next_attempt_at=ctx.now() + timedelta(seconds=delay),
                        last_error=type(exc).__name__,
                    )
                )
            continue
        with ctx.db.transaction() as conn:
            conn.execute(update(outbox).where(outbox.c.id == row.id).values(sent_at=ctx.now()))  # type: ignore[attr-defined]
        sent += 1
    return sent
