"""Every authenticated request (forward authentication above all) is one read in the common case: a session's
last-seen time is written at most once a minute, and the idle limit still holds to within that minute
(docs/api.md "Protecting applications", issue 13). SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from tests.support.services import signed_up, with_totp
from twostep.core.clock import SettableClock
from twostep.core.errors import NotSignedIn
from twostep.services.context import Context, hash_token
from twostep.services.sessions import SEEN_EVERY, authenticate
from twostep.storage.tables import sessions


@contextmanager
def statements(ctx: Context) -> Iterator[list[str]]:
    """The SQL statements (their first word) sent while the block runs, transaction bounds excluded."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        word = statement.lstrip().split(None, 1)[0].upper()
        if word not in ("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA"):
            seen.append(word)

    event.listen(ctx.db.engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(ctx.db.engine, "before_cursor_execute", before)


def last_seen(ctx: Context, token: str) -> Any:
    with ctx.db.transaction() as conn:
        return conn.execute(
            select(sessions.c.last_seen_at).where(sessions.c.token_hash == hash_token(token))
        ).scalar()


def test_a_request_within_a_minute_of_the_last_write_is_one_read(ctx: Context, clock: SettableClock) -> None:
    user = with_totp(ctx, clock)
    written = last_seen(ctx, user.token)
    clock.set(written + SEEN_EVERY - timedelta(seconds=5))
    with statements(ctx) as sent:
        for _ in range(5):
            session = authenticate(ctx, user.token)
    assert sent == ["SELECT"] * 5, sent
    assert session.username == user.username and session.used_second_factor
    assert session.account_has_second_factor
    assert last_seen(ctx, user.token) == written


def test_last_seen_is_written_once_it_is_a_minute_old(ctx: Context, clock: SettableClock) -> None:
    user = signed_up(ctx)
    written = last_seen(ctx, user.token)
    clock.advance(SEEN_EVERY.total_seconds() + 1)
    with statements(ctx) as sent:
        authenticate(ctx, user.token)
        authenticate(ctx, user.token)
    assert sent == ["SELECT", "UPDATE", "SELECT"], sent
    assert last_seen(ctx, user.token) > written


def test_H08_the_idle_limit_holds_to_within_the_minute_and_a_dead_session_is_deleted_when_seen(
    ctx: Context, clock: SettableClock
) -> None:
    user = signed_up(ctx)
    # Used 50 s after its last write: not written again, so it is idle from that write.
    clock.advance(50)
    authenticate(ctx, user.token)
    clock.advance(30 * 60 - 50 + 1)  # 30 min and 1 s after the write, 29 min 11 s after the last use
    with statements(ctx) as sent, pytest.raises(NotSignedIn):
        authenticate(ctx, user.token)
    assert sent == ["SELECT", "DELETE"], sent
    # Deleted: stepping the clock back does not revive it.
    clock.advance(-3600)
    with pytest.raises(NotSignedIn):
        authenticate(ctx, user.token)
    assert last_seen(ctx, user.token) is None


def test_an_unknown_cookie_is_one_read_and_no_write(ctx: Context) -> None:
    with statements(ctx) as sent, pytest.raises(NotSignedIn):
        authenticate(ctx, "A" * 43)
    assert sent == ["SELECT"]
