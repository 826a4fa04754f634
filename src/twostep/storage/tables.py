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
    # RFC 8176 method references of what this session's sign-in (and later verify access) did,
    # space-separated (the OpenID Connect `amr`); NULL for sessions older than migration 0008.
    Column("amr", String(64), nullable=True),
    # When the user last authenticated in this session (sign-in or verify access): `auth_time`.
    Column("authenticated_at", UTCDateTime, nullable=True),
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

# --- OpenID Connect provider (docs/oidc.md) -------------------------------------------------------------

# Clients registered by the operator (`twostep client add`). Lists are JSON arrays of strings.
oidc_clients = Table(
    "oidc_clients",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(100), nullable=False),
    # SHA-256 hex of the 32-byte random secret; NULL for a public client (PKCE, no secret).
    Column("secret_hash", String(64), nullable=True),
    Column("redirect_uris", Text, nullable=False),
    Column("post_logout_redirect_uris", Text, nullable=False),
    # "one_factor" | "two_factor"
    Column("policy", String(16), nullable=False),
    Column("users", Text, nullable=False),
    Column("groups", Text, nullable=False),
    # The ID token signature: "RS256" or "ES256".
    Column("signing_alg", String(8), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# One authorization of a client by an account: what the user authenticated with, and the family of every
# code and token issued from it (a replayed code or a reused refresh token revokes the whole family).
oidc_grants = Table(
    "oidc_grants",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("client_id", String(64), ForeignKey("oidc_clients.id", ondelete="CASCADE"), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("scope", Text, nullable=False),
    Column("nonce", String(512), nullable=True),
    Column("auth_time", UTCDateTime, nullable=False),
    Column("amr", String(64), nullable=False),
    Column("acr", String(8), nullable=False),
    # The session that authorized it (RP-initiated logout names it through the ID token's `sid`).
    Column("session_id", String(32), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    # The end of the last refresh token's life; the sweep removes the grant after it.
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_oidc_grants_account", "account_id"),
    Index("ix_oidc_grants_expires", "expires_at"),
)

# Authorization codes, 60 s, single use: ``used_at`` is set by one conditional UPDATE ... RETURNING, and the
# row stays until it expires so that a replay is recognised and revokes the grant.
oidc_codes = Table(
    "oidc_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("grant_id", String(32), ForeignKey("oidc_grants.id", ondelete="CASCADE"), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("code_challenge", String(128), nullable=True),
    Column("code_challenge_method", String(8), nullable=True),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
    Index("ix_oidc_codes_expires", "expires_at"),
)

# Access and refresh tokens, stored as SHA-256 hex. A refresh token works once (rotation).
oidc_tokens = Table(
    "oidc_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("grant_id", String(32), ForeignKey("oidc_grants.id", ondelete="CASCADE"), nullable=False),
    Column("access_hash", String(64), nullable=False, unique=True),
    Column("access_expires_at", UTCDateTime, nullable=False),
    Column("refresh_hash", String(64), nullable=True, unique=True),
    Column("refresh_expires_at", UTCDateTime, nullable=True),
    Column("refresh_used_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_oidc_tokens_grant", "grant_id"),
)

# ID token signing keys; the private key (PEM) is sealed with the secret box (aad names the row).
oidc_signing_keys = Table(
    "oidc_signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("alg", String(8), nullable=False),
    Column("private_key", LargeBinary, nullable=False),
    # The public JWK (JSON), as published in the JWKS.
    Column("public_jwk", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # It signs from this time on (published in the JWKS from created_at).
    Column("active_from", UTCDateTime, nullable=False),
    # When a newer key took over; it stays in the JWKS until ``drop_after``.
    Column("retired_at", UTCDateTime, nullable=True),
    Column("drop_after", UTCDateTime, nullable=True),
)

# Authorization requests waiting for the browser to sign in (10 minutes); the validated parameters as JSON.
oidc_pending = Table(
    "oidc_pending",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("params", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_oidc_pending_expires", "expires_at"),
)
