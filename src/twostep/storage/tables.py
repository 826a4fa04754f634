"""The schema, as SQLAlchemy Core tables. Alembic migrations under migrations/ create it."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from twostep.storage.types import UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    # NFKC + casefold: the identity. `display_name` keeps what the person typed.
    Column("username", String(64), nullable=False, unique=True),
    Column("display_name", String(64), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("email", String(254), nullable=True),
    # WebAuthn user handle: 64 random bytes, no personal data.
    Column("user_handle", LargeBinary(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    # Set by `twostep user lock`: no sign-in, passkey sign-in or verify access until unlocked.
    Column("locked_at", UTCDateTime, nullable=True),
    # When the holder followed the verification link sent to `email`; NULL until then.
    Column("email_verified_at", UTCDateTime, nullable=True),
    # The language chosen in the pages' menu ("en", "sl", "de"); NULL: none stored (issue 19).
    Column("language", String(16), nullable=True),
)

# Groups an operator put an account in (forward-auth rules, OpenID Connect `groups`, `Remote-Groups`).
account_groups = Table(
    "account_groups",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    # core.names.normalize_group: word characters and . @ + - only, so a comma never appears in one.
    Column("name", String(64), primary_key=True),
    Column("added_at", UTCDateTime, nullable=False),
    Index("ix_account_groups_name", "name"),
)

# Attempt counters, one row per key ("pw-user:<name>", "pw-ip:<addr>", "mfa:<account id>").
throttles = Table(
    "throttles",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("next_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

sessions = Table(
    "sessions",
    metadata,
    # SHA-256 of the cookie value; the value itself is never stored.
    Column("token_hash", String(64), primary_key=True),
    # An opaque id for GET/DELETE /sessions/{id}; not the token.
    Column("public_id", String(32), nullable=False, unique=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    # "pending": password accepted, second factor owed; "active": signed in.
    Column("kind", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("signed_in_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("second_factor", String(16), nullable=True),
    Column("verified_until", UTCDateTime, nullable=True),
    # Verify access: password accepted, second factor still owed until this time.
    Column("reauth_until", UTCDateTime, nullable=True),
    # A pending sign-in whose owner was already told that the second factor failed.
    Column("alerted", Boolean, nullable=False, default=False),
    Column("ip", String(64), nullable=False),
    Column("user_agent", String(512), nullable=False),
    # The public id of the trusted browser whose trust skipped the second step (one factor); NULL otherwise.
    Column("trusted_browser", String(32), nullable=True),
    # Until when this session may add a passkey without verify access, once (the automatic passkey upgrade
    # right after a password sign-in); NULL: not granted, or used.
    Column("passkey_upgrade_until", UTCDateTime, nullable=True),
    Index("ix_sessions_account", "account_id"),
    # The sweep of dead sessions (H08).
    Index("ix_sessions_expires", "expires_at"),
    Index("ix_sessions_last_seen", "last_seen_at"),
)

factors = Table(
    "factors",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("type", String(16), nullable=False),
    Column("name", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=True),
    # TOTP: the secret sealed with AES-GCM (aad names the row), and the last accepted time step.
    Column("totp_secret", LargeBinary, nullable=True),
    Column("totp_last_step", BigInteger, nullable=True),
    # Passkeys.
    Column("credential_id", LargeBinary(1023), nullable=True, unique=True),
    Column("public_key", LargeBinary, nullable=True),
    Column("algorithm", Integer, nullable=True),
    Column("sign_count", BigInteger, nullable=True),
    Column("transports", Text, nullable=True),
    Column("aaguid", String(36), nullable=True),
    Column("backup_eligible", Boolean, nullable=True),
    Column("backup_state", Boolean, nullable=True),
    Column("user_verified", Boolean, nullable=True),
    UniqueConstraint("account_id", "name", name="uq_factors_account_name"),
    Index("ix_factors_account", "account_id"),
)

totp_enrollments = Table(
    "totp_enrollments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("secret", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_totp_enrollments_account", "account_id"),
)

recovery_codes = Table(
    "recovery_codes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    # The first two characters of the code, in clear, so one attempt costs one slow hash.
    Column("selector", String(8), nullable=False),
    Column("code_hash", String(255), nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
    UniqueConstraint("account_id", "selector", name="uq_recovery_codes_account_selector"),
)

# WebAuthn challenges: single use (DELETE ... RETURNING), 5 minutes, bound to the session.
challenges = Table(
    "challenges",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("session_key", String(64), nullable=False),
    Column("purpose", String(24), nullable=False),
    Column("challenge", LargeBinary(64), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=True),
    Column("expires_at", UTCDateTime, nullable=False),
    # The credential ids an authentication challenge listed in allowCredentials (WA-A02), hex, comma-joined.
    Column("allowed", Text, nullable=True),
    Index("ix_challenges_session", "session_key", "purpose"),
    Index("ix_challenges_expires", "expires_at"),
)

security_events = Table(
    "security_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("type", String(48), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("ip", String(64), nullable=False),
    Column("user_agent", String(512), nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_security_events_account", "account_id", "id"),
)

# Durable outbox of notification e-mails, delivered by the server with retries.
outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("recipient", String(254), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("message_id", String(200), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("claimed_until", UTCDateTime, nullable=True),
    Column("sent_at", UTCDateTime, nullable=True),
    Column("last_error", String(500), nullable=True),
    # Coalescing (H13): at most one message of a kind to an account per 15 minutes, with a count.
    # The account and the event type the message is about (NULL: never coalesced).
    Column("account_id", Integer, nullable=True),
    Column("kind", String(48), nullable=True),
    # "<account id>:<kind>" while the message is waiting and may still take repeats; NULL once a worker has
    # claimed it. Unique, so that an INSERT ... ON CONFLICT folds a repeat into it in every worker.
    Column("coalesce_key", String(80), nullable=True, unique=True),
    # How many events this message tells of (1 + repeats folded in), and the last one's time and client.
    Column("occurrences", Integer, nullable=False, server_default="1"),
    Column("last_at", UTCDateTime, nullable=True),
    Column("last_ip", String(64), nullable=True),
    Column("last_user_agent", String(512), nullable=True),
    # A summary of repeats: when the previous message of this kind went out (it waits 15 minutes after it).
    Column("since", UTCDateTime, nullable=True),
    # When a worker first claimed it: the start of the next 15 minutes of this kind.
    Column("dispatched_at", UTCDateTime, nullable=True),
    Index("ix_outbox_due", "sent_at", "next_attempt_at"),
    Index("ix_outbox_account_kind", "account_id", "kind"),
)

# Per-address request counts of the sign-in ceremonies, one row per address and minute (SEC-62).
rate_windows = Table(
    "rate_windows",
    metadata,
    Column("key", String(120), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_rate_windows_expires", "expires_at"),
)

# Trusted browsers (docs/api.md "Trusted browsers"): after a correct password, the cookie of one of these,
# unexpired and not revoked, for the same account, skips the second step. Only the SHA-256 of the cookie's
# random token is stored.
trusted_browsers = Table(
    "trusted_browsers",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    # The browser and address when it was trusted.
    Column("ip", String(64), nullable=False),
    Column("user_agent", String(512), nullable=False),
    Index("ix_trusted_browsers_account", "account_id"),
    Index("ix_trusted_browsers_expires", "expires_at"),
)

# Invitations of `twostep invite`: single use (a conditional UPDATE of used_at in the sign-up's transaction).
invitations = Table(
    "invitations",
    metadata,
    Column("id", Integer, primary_key=True),
    # SHA-256 of the token in the link; the token itself is never stored.
    Column("token_hash", String(64), nullable=False, unique=True),
    # The username and e-mail address the invitation fixes (NULL: the invited person chooses).
    Column("username", String(64), nullable=True),
    Column("email", String(254), nullable=True),
    # The groups the new account joins: a JSON list of names (core.names.normalize_group).
    Column("groups", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
)

# Single-use links that verify an e-mail address (24 hours); taken by DELETE ... RETURNING.
email_verifications = Table(
    "email_verifications",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    # The address the link was sent to: it verifies the account's address only while that is still it.
    Column("email", String(254), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_email_verifications_account", "account_id"),
    Index("ix_email_verifications_expires", "expires_at"),
)
