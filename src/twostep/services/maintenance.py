"""The sweep of expired state (H08): every worker runs it on its maintenance schedule.

Each item is a bounded DELETE of rows that are dead by their own columns, in a transaction of its own, so
that one sweep never holds the write lock for long, and two workers sweeping at once only find less to do.
Expired pending sign-ins are not swept here: `sign_in.sweep_abandoned` takes them with their event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Connection

from twostep.core.throttle import FORGETTING
from twostep.services import oidc
from twostep.services.context import SESSION_IDLE, Context
from twostep.storage import (
    challenges,
    email_verifications,
    enrollments,
    invitations,
    outbox,
    ratelimit,
    sessions,
    throttle,
    trusted_browsers,
)

log = logging.getLogger("twostep.maintenance")

BATCH = 500
# A round deletes at most BATCH * MAX_BATCHES rows of each kind; the next round goes on.
MAX_BATCHES = 20
# Sent notifications are kept a while (they hold the start of the next 15 minutes of their kind, H13).
SENT_KEPT = timedelta(days=7)
# A notification that could not be delivered for this long is given up on.
UNDELIVERABLE_AFTER = timedelta(days=7)
# Invitations are kept this long after they expired or were used (`twostep user show` may be asked why a
# link no longer works), then forgotten.
INVITATIONS_KEPT = timedelta(days=7)


def _batched(ctx: Context, step: Callable[[Connection], int]) -> int:
    total = 0
    for _ in range(MAX_BATCHES):
        with ctx.db.transaction() as conn:
            n = step(conn)
        total += n
        if n < BATCH:
            break
    return total


def _forget(prefix: str, before: datetime) -> Callable[[Connection], int]:
    return lambda conn: throttle.delete_forgotten(conn, prefix=prefix, before=before, limit=BATCH)


def sweep(ctx: Context) -> dict[str, int]:
    """Delete expired WebAuthn challenges, dead signed-in sessions, expired TOTP enrolments, expired or
    revoked trusted browsers, ended rate-limit windows, attempt counters their policy has forgotten, expired
    e-mail links, invitations a week after they expired or were used,
    notifications sent over a week ago and those undeliverable for a week. Returns the counts."""
    now = ctx.now()
    idle_cutoff = now - SESSION_IDLE
    done = {
        "challenges": _batched(ctx, lambda c: challenges.delete_expired(c, now=now, limit=BATCH)),
        "sessions": _batched(
            ctx, lambda c: sessions.delete_expired_active(c, now=now, idle_cutoff=idle_cutoff, limit=BATCH)
        ),
        "totp_enrollments": _batched(ctx, lambda c: enrollments.delete_expired(c, now=now, limit=BATCH)),
        "trusted_browsers": _batched(ctx, lambda c: trusted_browsers.delete_dead(c, now=now, limit=BATCH)),
        "rate_windows": _batched(ctx, lambda c: ratelimit.delete_expired(c, now=now, limit=BATCH)),
        "outbox_sent": _batched(
            ctx, lambda c: outbox.delete_sent_before(c, before=now - SENT_KEPT, limit=BATCH)
        ),
        "email_links": _batched(ctx, lambda c: email_verifications.delete_expired(c, now=now, limit=BATCH)),
        "invitations": _batched(
            ctx, lambda c: invitations.delete_expired(c, before=now - INVITATIONS_KEPT, limit=BATCH)
        ),
        "outbox_undeliverable": _batched(
            ctx, lambda c: outbox.delete_undelivered_before(c, before=now - UNDELIVERABLE_AFTER, limit=BATCH)
        ),
    }
    # OpenID Connect: expired codes, grants (with their tokens), waiting requests and retired signing keys.
    done["oidc"] = oidc.sweep(ctx)
    for prefix, policy in FORGETTING.items():
        assert policy.forget_after is not None
        before = now - policy.forget_after
        done[f"throttles {prefix}"] = _batched(ctx, _forget(prefix, before))
    if done["outbox_undeliverable"]:
        log.warning(
            "gave up on %d notification(s) not delivered within %d days",
            done["outbox_undeliverable"],
            UNDELIVERABLE_AFTER.days,
        )
    return done
