"""Anti-automation at the edge: a per-address limit on sign-in ceremony requests (SEC-62).

It adds to the per-account counters of the sign-in steps and never replaces them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection

from twostep.core.errors import TooManyAttempts
from twostep.core.throttle import retry_after_seconds
from twostep.services.context import Client, Context
from twostep.storage import ratelimit

WINDOW = 60


def edge_limit(conn: Connection, ctx: Context, client: Client, now: datetime) -> None:
    """Count this ceremony request in the first transaction of its use case.

    Raises:
        TooManyAttempts: this address sent more than the configured number in this minute.
    """
    per_minute = ctx.rate_limit_per_minute
    if per_minute <= 0:
        return
    start = int(now.timestamp()) // WINDOW * WINDOW
    ends = datetime.fromtimestamp(start + WINDOW, UTC)
    count = ratelimit.hit(conn, key=f"{client.ip}:{start}", expires_at=ends)
    if count > per_minute:
        raise TooManyAttempts(
            retry_after_seconds(ends, now), "Too many requests from your address. Wait a minute."
        )
