"""The account's security log (GET /security-events)."""

from __future__ import annotations

from twostep.services.context import Context
from twostep.services.sessions import CurrentSession
from twostep.storage import events
from twostep.storage.events import EventRow


def list_events(ctx: Context, session: CurrentSession, *, limit: int = 200) -> list[EventRow]:
    """Newest first; details never hold a secret (codes, passwords and session ids are never recorded)."""
    with ctx.db.transaction() as conn:
        return events.list_for(conn, session.account_id, limit=limit)
