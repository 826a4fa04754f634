"""Trusted browsers (docs/api.md "Trusted browsers"): "Don't ask again on this browser" at the second step.

A trust is a server-side record referenced by a cookie that holds random tokens (up to five accounts per
browser); only each token's SHA-256 is stored. After a correct password, a live trust of *that* account
skips the second step: the session is then a one-factor session (``second_factor`` None, ``trusted_browser``
set). The cookie alone signs nothing in. Every trust of an account is revoked by a change of its factors,
its password, or turning two-step verification off.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from twostep.core.errors import NotFound
from twostep.core.events import EventType
from twostep.services.audit import Audit
from twostep.services.context import Client, Context, hash_token, new_id
from twostep.services.sessions import CurrentSession
from twostep.storage import trusted_browsers as store

# A browser remembers the trust of at most this many accounts (the newest first).
MAX_ACCOUNTS = 5
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
MAX_COOKIE_CHARS = MAX_ACCOUNTS * 44


def tokens_of(cookie: str | None) -> list[str]:
    """The well-formed tokens of a trusted-browser cookie (anything else in it is ignored)."""
    if not cookie or len(cookie) > MAX_COOKIE_CHARS:
        return []
    return [t for t in cookie.split(".") if _TOKEN.fullmatch(t)][:MAX_ACCOUNTS]


def live_trust(
    conn: Connection, ctx: Context, *, account_id: int, cookie: str | None, now: datetime
) -> str | None:
    """The id of a live trust of this account named by the cookie (marked used), or None; always None when
    the operator turned trusted browsers off (``trusted_browser_days = 0``)."""
    if ctx.trusted_browser_days <= 0:
        return None
    hashes = [hash_token(t) for t in tokens_of(cookie)]
    return store.use(conn, account_id=account_id, token_hashes=hashes, now=now)


def trust(conn: Connection, ctx: Context, audit: Audit, *, cookie: str | None) -> str | None:
    """Trust this browser for the audit's account (after a second step, in its transaction): a new record, its
    event, and the new cookie value (the new token first, older ones kept up to MAX_ACCOUNTS). None when the
    feature is off."""
    days = ctx.trusted_browser_days
    if days <= 0:
        return None
    token = secrets.token_urlsafe(32)
    browser_id = new_id()
    store.insert(
        conn,
        browser_id=browser_id,
        account_id=audit.account_id,
        token_hash=hash_token(token),
        now=audit.now,
        expires_at=audit.now + timedelta(days=days),
        ip=audit.client.ip,
        user_agent=audit.client.user_agent,
    )
    audit.record(conn, EventType.BROWSER_TRUSTED, notify=False, trusted_browser=browser_id, days=days)
    return ".".join([token, *tokens_of(cookie)][:MAX_ACCOUNTS])


def revoke_all(conn: Connection, audit: Audit, *, reason: str) -> int:
    """Revoke every trust of the audit's account (a factor, password or two-step change), in the caller's
    transaction; one event when any was live."""
    n = store.revoke_all(conn, account_id=audit.account_id, now=audit.now)
    if n:
        audit.record(conn, EventType.TRUSTED_BROWSERS_REVOKED, notify=False, browsers=n, reason=reason)
    return n


@dataclass(frozen=True)
class TrustedBrowserView:
    id: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    ip: str
    user_agent: str
    current: bool


def list_trusted(
    ctx: Context, session: CurrentSession, *, cookie: str | None = None
) -> list[TrustedBrowserView]:
    """GET /trusted-browsers: the account's live trusts; ``current`` marks the one this browser holds."""
    now = ctx.now()
    mine = {hash_token(t) for t in tokens_of(cookie)}
    with ctx.db.transaction() as conn:
        rows = store.list_live(conn, account_id=session.account_id, now=now)
        held = (
            set(store.ids_of(conn, account_id=session.account_id, token_hashes=list(mine))) if mine else set()
        )
    return [
        TrustedBrowserView(r.id, r.created_at, r.expires_at, r.last_used_at, r.ip, r.user_agent, r.id in held)
        for r in rows
    ]


def revoke(ctx: Context, session: CurrentSession, browser_id: str, client: Client) -> None:
    """DELETE /trusted-browsers/{id}: this browser asks for the second step again.

    Raises:
        NotFound: no live trust of this account has that id.
    """
    now = ctx.now()
    with ctx.db.transaction() as conn:
        if not store.revoke_one(conn, account_id=session.account_id, browser_id=browser_id[:64], now=now):
            raise NotFound()
        Audit(ctx, session.account_id, client, now).record(
            conn,
            EventType.TRUSTED_BROWSERS_REVOKED,
            notify=False,
            browsers=1,
            trusted_browser=browser_id[:64],
        )


def revoke_every(ctx: Context, session: CurrentSession, client: Client) -> int:
    """DELETE /trusted-browsers: every browser of the account asks for the second step again."""
    with ctx.db.transaction() as conn:
        return revoke_all(conn, Audit(ctx, session.account_id, client, ctx.now()), reason="revoked")
