"""The notification outbox: messages written in the transaction of their event, claimed by a worker with a
conditional UPDATE (a lease), marked sent; repeats of one kind to one account folded into one message (H13).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from twostep.storage.tables import outbox


@dataclass(frozen=True)
class OutboxRow:
    id: int
    recipient: str
    subject: str
    body: str
    message_id: str
    created_at: datetime
    attempts: int
    occurrences: int
    last_at: datetime | None
    last_ip: str | None
    last_user_agent: str | None
    since: datetime | None
    account_id: int | None = None


_ROW = (
    outbox.c.id,
    outbox.c.recipient,
    outbox.c.subject,
    outbox.c.body,
    outbox.c.message_id,
    outbox.c.created_at,
    outbox.c.attempts,
    outbox.c.occurrences,
    outbox.c.last_at,
    outbox.c.last_ip,
    outbox.c.last_user_agent,
    outbox.c.since,
    outbox.c.account_id,
)


@functools.lru_cache(maxsize=4)
def _fold_statement(dialect: str) -> Any:
    """INSERT the message, or fold it into the waiting message of the same account and kind: the unique
    ``coalesce_key`` makes the choice atomic across workers (PostgreSQL waits for a concurrent insert)."""
    t = outbox
    ins = postgresql.insert(t) if dialect == "postgresql" else sqlite.insert(t)
    return ins.on_conflict_do_update(
        index_elements=[t.c.coalesce_key],
        set_={
            "occurrences": t.c.occurrences + 1,
            "last_at": ins.excluded.last_at,
            "last_ip": ins.excluded.last_ip,
            "last_user_agent": ins.excluded.last_user_agent,
        },
    )


def queue(
    conn: Connection,
    *,
    recipient: str,
    subject: str,
    body: str,
    message_id: str,
    now: datetime,
    account_id: int,
    kind: str,
    ip: str,
    user_agent: str,
    window: timedelta,
) -> None:
    """Queue a message about an event of ``kind`` to ``account_id``. While an earlier message of that kind is
    still waiting, this event is counted in it instead; after one went out, the next waits until ``window``
    after it went, collecting the repeats until then. The first one is never held back."""
    previous = conn.execute(
        select(func.max(outbox.c.dispatched_at)).where(
            outbox.c.account_id == account_id,
            outbox.c.kind == kind,
            outbox.c.dispatched_at > now - window,
        )
    ).scalar()
    conn.execute(
        _fold_statement(conn.dialect.name),
        {
            "recipient": recipient,
            "subject": subject,
            "body": body,
            "message_id": message_id,
            "created_at": now,
            "attempts": 0,
            "next_attempt_at": now if previous is None else max(now, previous + window),
            "claimed_until": None,
            "sent_at": None,
            "last_error": None,
            "account_id": account_id,
            "kind": kind,
            "coalesce_key": f"{account_id}:{kind}",
            "occurrences": 1,
            "last_at": now,
            "last_ip": ip,
            "last_user_agent": user_agent,
            "since": previous,
            "dispatched_at": None,
        },
    )


def claim(conn: Connection, *, now: datetime, lease: timedelta, limit: int) -> list[OutboxRow]:
    """Lease up to ``limit`` due messages to this worker. Claiming ends the message's coalescing: a repeat
    after this starts a new message (held until the window after this one has passed)."""
    free = or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until <= now)
    due = and_(outbox.c.sent_at.is_(None), outbox.c.next_attempt_at <= now, free)
    ids = [r.id for r in conn.execute(select(outbox.c.id).where(due).order_by(outbox.c.id).limit(limit))]
    if not ids:
        return []
    # The condition is repeated on the row itself: of two workers, only one claims each message.
    rows = conn.execute(
        update(outbox)
        .where(outbox.c.id.in_(ids), due)
        .values(
            claimed_until=now + lease,
            attempts=outbox.c.attempts + 1,
            coalesce_key=None,
            dispatched_at=func.coalesce(
                outbox.c.dispatched_at, bindparam("b_now", now, type_=outbox.c.sent_at.type)
            ),
        )
        .returning(*_ROW)
    ).all()
    return [OutboxRow(**r._mapping) for r in rows]


def mark_sent(conn: Connection, *, message: int, now: datetime) -> None:
    conn.execute(update(outbox).where(outbox.c.id == message).values(sent_at=now))


def release(conn: Connection, *, messages: list[int]) -> None:
    """Give back claimed messages that were not tried (a worker stopping): due again at once, for any worker,
    and their claim not counted as an attempt."""
    if messages:
        conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(messages), outbox.c.sent_at.is_(None))
            .values(claimed_until=None, attempts=outbox.c.attempts - 1)
        )


def retry_later(conn: Connection, *, message: int, at: datetime, error: str) -> None:
    conn.execute(
        update(outbox)
        .where(outbox.c.id == message)
        .values(claimed_until=None, next_attempt_at=at, last_error=error[:500])
    )


def delete_sent_before(conn: Connection, *, before: datetime, limit: int) -> int:
    """At most ``limit`` messages sent before ``before``."""
    old = select(outbox.c.id).where(outbox.c.sent_at.is_not(None), outbox.c.sent_at < before).limit(limit)
    return int(conn.execute(delete(outbox).where(outbox.c.id.in_(old.scalar_subquery()))).rowcount)


def delete_undelivered_before(conn: Connection, *, before: datetime, limit: int) -> int:
    """At most ``limit`` messages still not delivered although written before ``before`` (given up on)."""
    old = select(outbox.c.id).where(outbox.c.sent_at.is_(None), outbox.c.created_at < before).limit(limit)
    return int(conn.execute(delete(outbox).where(outbox.c.id.in_(old.scalar_subquery()))).rowcount)


def backlog(conn: Connection, *, now: datetime) -> tuple[int, datetime | None]:
    """How many messages are not sent, and the earliest time at which one that is due was due."""
    depth = conn.execute(select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))).scalar()
    oldest = conn.execute(
        select(func.min(outbox.c.next_attempt_at)).where(
            outbox.c.sent_at.is_(None), outbox.c.next_attempt_at <= now
        )
    ).scalar()
    return int(depth or 0), oldest


def queue_single(
    conn: Connection,
    *,
    recipient: str,
    subject: str,
    body: str,
    message_id: str,
    now: datetime,
) -> None:
    """Queue a message that is never folded into another (a verification link): no account, no kind, no
    coalescing key (those columns only serve the folding of H13)."""
    conn.execute(
        outbox.insert().values(
            recipient=recipient,
            subject=subject,
            body=body,
            message_id=message_id,
            created_at=now,
            attempts=0,
            next_attempt_at=now,
            claimed_until=None,
            sent_at=None,
            last_error=None,
            account_id=None,
            kind=None,
            coalesce_key=None,
            occurrences=1,
            last_at=now,
            last_ip=None,
            last_user_agent=None,
            since=None,
            dispatched_at=None,
        )
    )


def detach_account(conn: Connection, account_id: int) -> None:
    """The account is deleted: its messages stay only to be delivered (and swept when sent), and nothing of a
    later account that gets the same id is folded into them or held back by them."""
    conn.execute(
        update(outbox)
        .where(outbox.c.account_id == account_id)
        .values(account_id=None, kind=None, coalesce_key=None)
    )
