"""Attempt counters with backoff, made atomic by the database.

An attempt is counted *before* it is evaluated (one conditional upsert), so that parallel guesses
cannot evaluate more than the policy allows (SEC-27); success resets the count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, case, delete, literal, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from twostep.core.throttle import Backoff
from twostep.storage.tables import throttles


@dataclass(frozen=True)
class Reservation:
    """``blocked_until`` is None when the attempt may be evaluated; ``failures`` counts it already."""

    blocked_until: datetime | None
    failures: int


def reserve_attempt(conn: Connection, *, key: str, policy: Backoff, now: datetime) -> Reservation:
    """Count one attempt for ``key`` in advance, unless ``key`` must wait."""
    t = throttles
    new_failures: Any = t.c.failures + 1
    if policy.forget_after is not None:
        new_failures = case((t.c.updated_at < now - policy.forget_after, 1), else_=t.c.failures + 1)
    ladder = [
        (new_failures == policy.free + i, literal(now + timedelta(seconds=delay), t.c.next_at.type))
        for i, delay in enumerate(policy.delays())
    ]
    next_at = case(
        (new_failures < policy.free, literal(None, t.c.next_at.type)),
        *ladder,
        else_=literal(now + timedelta(seconds=policy.max_delay), t.c.next_at.type),
    )
    first_next_at = None if policy.free > 1 else now + timedelta(seconds=policy.delays()[0])
    allowed = or_(t.c.next_at.is_(None), t.c.next_at <= now)
    if policy.cap is not None:
        allowed = allowed & (t.c.failures < policy.cap)
    values = {"key": key, "failures": 1, "next_at": first_next_at, "updated_at": now}
    ins = (postgresql.insert(t) if conn.dialect.name == "postgresql" else sqlite.insert(t)).values(values)
    stmt = ins.on_conflict_do_update(
        index_elements=[t.c.key],
        set_={"failures": new_failures, "next_at": next_at, "updated_at": now},
        where=allowed,
    ).returning(t.c.failures)
    counted = conn.execute(stmt).scalar()
    if counted is not None:
        return Reservation(None, int(counted))
    row = conn.execute(select(t.c.next_at, t.c.failures).where(t.c.key == key)).one()
    if policy.cap is not None and row.failures >= policy.cap:
        return Reservation(max(row.next_at or now, now + timedelta(seconds=policy.max_delay)), row.failures)
    return Reservation(row.next_at or now, int(row.failures))


def refund_attempt(conn: Connection, *, key: str) -> None:
    """Undo one reservation without clearing earlier failures (used for per-address counters).

    The reservation may have started a wait; the attempt it counted was allowed, so any wait before it
    had passed already: clearing ``next_at`` restores that state.
    """
    conn.execute(
        throttles.update()
        .where(throttles.c.key == key, throttles.c.failures > 0)
        .values(failures=throttles.c.failures - 1, next_at=None)
    )


def reset(conn: Connection, *, key: str) -> None:
    """Success: forget the consecutive failures of ``key``."""
    conn.execute(delete(throttles).where(throttles.c.key == key))


def failures(conn: Connection, *, key: str) -> int:
    value = conn.execute(select(throttles.c.failures).where(throttles.c.key == key)).scalar()
    return int(value or 0)
