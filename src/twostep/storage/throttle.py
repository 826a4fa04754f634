"""Attempt counters with backoff, made atomic by the database.

An attempt is counted *before* it is evaluated (one conditional upsert), so that parallel guesses
cannot evaluate more than the policy allows (SEC-27); success resets the count.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, case, delete, null, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from twostep.core.throttle import Backoff
from twostep.storage.db import first, run
from twostep.storage.tables import throttles


@dataclass(frozen=True)
class Reservation:
    """``blocked_until`` is None when the attempt may be evaluated; ``failures`` counts it already."""

    blocked_until: datetime | None
    failures: int


@functools.lru_cache(maxsize=32)
def _reserve_statement(dialect: str, policy: Backoff) -> Any:
    """The upsert for one policy, built once: the times are bound parameters (it is on the hot path)."""
    t = throttles
    when = t.c.next_at.type
    new_failures: Any = t.c.failures + 1
    if policy.forget_after is not None:
        new_failures = case(
            (t.c.updated_at < bindparam("forget_before", type_=when), 1), else_=t.c.failures + 1
        )
    ladder = [
        (new_failures == policy.free + i, bindparam(f"wait_{i}", type_=when))
        for i in range(len(policy.delays()))
    ]
    next_at = case(
        (new_failures < policy.free, null()),
        *ladder,
        else_=bindparam("wait_max", type_=when),
    )
    allowed = or_(t.c.next_at.is_(None), t.c.next_at <= bindparam("now", type_=when))
    if policy.cap is not None:
        allowed = allowed & (t.c.failures < policy.cap)
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    ins = insert(t).values(
        key=bindparam("key"),
        failures=1,
        next_at=bindparam("first_next_at", type_=when),
        updated_at=bindparam("now", type_=when),
    )
    return ins.on_conflict_do_update(
        index_elements=[t.c.key],
        set_={"failures": new_failures, "next_at": next_at, "updated_at": bindparam("now", type_=when)},
        where=allowed,
    ).returning(t.c.failures)


def reserve_attempt(conn: Connection, *, key: str, policy: Backoff, now: datetime) -> Reservation:
    """Count one attempt for ``key`` in advance, unless ``key`` must wait."""
    delays = policy.delays()
    params: dict[str, object] = {
        "key": key,
        "now": now,
        "first_next_at": None if policy.free > 1 else now + timedelta(seconds=delays[0]),
        "wait_max": now + timedelta(seconds=policy.max_delay),
        **{f"wait_{i}": now + timedelta(seconds=d) for i, d in enumerate(delays)},
    }
    if policy.forget_after is not None:
        params["forget_before"] = now - policy.forget_after
    counted = first(conn, _reserve_statement(conn.dialect.name, policy), params)
    if counted is not None:
        return Reservation(None, int(counted[0]))
    row = conn.execute(select(throttles.c.next_at, throttles.c.failures).where(throttles.c.key == key)).one()
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


_RESET = delete(throttles).where(throttles.c.key == bindparam("b_key"))


def reset(conn: Connection, *, key: str) -> None:
    """Success: forget the consecutive failures of ``key``."""
    run(conn, _RESET, {"b_key": key})


def failures(conn: Connection, *, key: str) -> int:
    value = conn.execute(select(throttles.c.failures).where(throttles.c.key == key)).scalar()
    return int(value or 0)


def delete_forgotten(conn: Connection, *, prefix: str, before: datetime, limit: int) -> int:
    """At most ``limit`` counters of ``prefix`` untouched since ``before`` (H08): as good as absent."""
    dead = (
        select(throttles.c.key)
        .where(throttles.c.key.startswith(prefix, autoescape=True), throttles.c.updated_at < before)
        .limit(limit)
    )
    return int(conn.execute(delete(throttles).where(throttles.c.key.in_(dead.scalar_subquery()))).rowcount)


def delete_key(conn: Connection, *, key: str) -> None:
    """Forget the counter ``key`` (an account that is deleted: its id may be given again on SQLite)."""
    conn.execute(throttles.delete().where(throttles.c.key == key))
