"""Readiness (GET /readyz): the database answers, its schema is the one this code needs, the key works.

Its messages are read by load balancers and operators, as the logs are: English, not in the catalogues.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from twostep.core.errors import Unavailable
from twostep.core.secretbox import SecretBoxError
from twostep.services.context import Context
from twostep.storage import migrate


@dataclass(frozen=True)
class NotReady:
    """Why the server should not be sent requests: ``reason`` is "database", "schema" or "key"."""

    reason: str
    message: str


@functools.cache
def _head() -> str:
    return migrate.head_revision()


_PROBE_AAD = b"twostep:readiness-probe"


def readiness(ctx: Context) -> NotReady | None:
    """None when ready. Takes no writer lock and writes nothing; the caller bounds how long it may take."""
    try:
        with ctx.db.read() as conn:
            revision = migrate.live_revision(conn)
    except Unavailable:
        return NotReady("database", "The database cannot be reached.")
    if revision != _head():
        return NotReady(
            "schema",
            f"The database schema is at revision {revision or 'none'}, not {_head()}: run `twostep migrate`.",
        )
    try:
        if ctx.box.open(ctx.box.seal(b"probe", aad=_PROBE_AAD), aad=_PROBE_AAD) != b"probe":
            return NotReady("key", "The secret-encryption key does not work.")
    except SecretBoxError:
        return NotReady("key", "The secret-encryption key does not work.")
    return None
