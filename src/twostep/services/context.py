"""What every use case needs: the database, the clock, the hasher, the secret box and the site's identity."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from twostep.core.clock import Clock
from twostep.core.passwords import PasswordHasher
from twostep.core.secretbox import KeyRing, SecretBox
from twostep.services.metrics import Metrics, NoMetrics
from twostep.storage.db import Database

PENDING_LOGIN_TTL = timedelta(minutes=5)
SESSION_IDLE = timedelta(minutes=30)
SESSION_ABSOLUTE = timedelta(hours=12)
VERIFIED_ACCESS_TTL = timedelta(minutes=10)
TOTP_ENROLLMENT_TTL = timedelta(minutes=15)
CHALLENGE_TTL = timedelta(minutes=5)
# The automatic passkey upgrade is allowed this long after a password sign-in, once.
PASSKEY_UPGRADE_TTL = timedelta(minutes=5)
EMAIL_LINK_TTL = timedelta(hours=24)
INVITATION_TTL = timedelta(days=7)


@dataclass(frozen=True)
class Client:
    """Who is asking: the client address (after trusted-proxy resolution) and the browser."""

    ip: str
    user_agent: str


@dataclass
class Context:
    db: Database
    clock: Clock
    hasher: PasswordHasher
    box: SecretBox | KeyRing
    issuer: str
    origin: str
    rp_id: str
    # Sign-in ceremony requests per client address and minute (SEC-62); 0: no limit.
    rate_limit_per_minute: int = 0
    # HMAC key of the device cookies (H07), derived from the master key; random when not given.
    device_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    # The operator's counters (docs/operations.md); Prometheus in a server, nothing elsewhere.
    metrics: Metrics = field(default_factory=NoMetrics)
    # How long "Don't ask again on this browser" lasts, in days; 0 turns trusted browsers off.
    trusted_browser_days: int = 30
    # Who may create an account: "open", "invite" or "closed" (docs/api.md "Who may have an account").
    signup: str = "open"
    # Whom a locked-out person should ask, as the pages say it.
    operator_contact: str = "the administrator of this site"
    # The language of the pages and e-mails when neither the account nor the browser names one (issue 19).
    default_language: str = "en"

    def now(self) -> datetime:
        return self.clock.now()


def new_id() -> str:
    """An opaque, non-sequential identifier (factor ids, enrolment ids, session public ids)."""
    return secrets.token_urlsafe(16)


def new_session_token() -> tuple[str, str]:
    """A 256-bit session id and the SHA-256 under which it is stored."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
