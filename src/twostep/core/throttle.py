"""Backoff policies (security.md §0.7): a few free failures, then waits that double up to a cap."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Backoff:
    """After ``free`` consecutive failures each further attempt waits ``first_delay`` seconds,
    doubling up to ``max_delay``; with ``cap`` set, no attempt at all once that many failures."""

    free: int
    first_delay: int = 30
    max_delay: int = 3600
    cap: int | None = None
    forget_after: timedelta | None = None

    def delays(self) -> list[int]:
        """The waits after failure number free, free+1, ... until the cap is reached."""
        out: list[int] = []
        delay = self.first_delay
        while delay < self.max_delay:
            out.append(delay)
            delay *= 2
        return out


def retry_after_seconds(next_at: datetime, now: datetime) -> int:
    """Whole seconds until ``next_at`` (at least 1) for the Retry-After header."""
    return max(1, math.ceil((next_at - now).total_seconds()))


# Second factors and verify access share one counter per account (SEC-26, SEC-29).
SECOND_FACTOR = Backoff(free=5, cap=100)
# Recovery codes share that counter but stay usable past the cap of 100 (NIST "disable" → recovery).
RECOVERY = Backoff(free=5)
# Passwords (H07): per username (known or not, so no account enumeration) *and* client address, the usual
# backoff; per username from every address, a ceiling far above it that a browser which signed in to the
# account before (a device cookie) does not meet; and per client address over every username.
PASSWORD_USER_ADDRESS = Backoff(free=5, forget_after=timedelta(hours=24))
PASSWORD_USER = Backoff(free=100, forget_after=timedelta(days=30))
PASSWORD_ADDRESS = Backoff(free=20, forget_after=timedelta(hours=24))
# Passwordless passkey sign-in (H01): per client address, never per account.
PASSKEY_ADDRESS = Backoff(free=20, forget_after=timedelta(hours=24))

# Counters that anonymous requests create (any username, any address) forget their failures after a quiet
# period, so that the sweep can delete a row once it is as good as absent (H08). The account-wide counter
# of second factors ("mfa:<id>") never forgets: it ends only by a success or with its account.
FORGETTING: dict[str, Backoff] = {
    "pw-ip:": PASSWORD_ADDRESS,
    "pw-user-ip:": PASSWORD_USER_ADDRESS,
    "pw-user:": PASSWORD_USER,
    "pk-ip:": PASSKEY_ADDRESS,
}
