"""OpenID Connect provider

Clients, grants (the family of codes and tokens of one authorization), single-use codes, access and refresh
tokens (hashed), sealed signing keys, authorization requests waiting for a sign-in; and on sessions what the
sign-in did (`amr`) and when the user last authenticated.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import twostep.storage.types

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oidc_clients",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=True),
        sa.Column("redirect_uris", sa.Text(), nullable=False),
        sa.Column("post_logout_redirect_uris", sa.Text(), nullable=False),
        sa.Column("policy", sa.String(length=16), nullable=False),
        sa.Column("users", sa.Text(), nullable=False),
        sa.Column("groups", sa.Text(), nullable=False),
        sa.Column("signing_alg", sa.String(length=8), nullable=False),
        sa.Column("created_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oidc_clients")),
    )
    op.create_table(
        "oidc_pending",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("params", sa.Text(), nullable=False),
        sa.Column("created_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oidc_pending")),
    )
    with op.batch_alter_table("oidc_pending", schema=None) as batch_op:
        batch_op.create_index("ix_oidc_pending_expires", ["expires_at"], unique=False)

    op.create_table(
        "oidc_signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("alg", sa.String(length=8), nullable=False),
        sa.Column("private_key", sa.LargeBinary(), nullable=False),
        sa.Column("public_jwk", sa.Text(), nullable=False),
        sa.Column("created_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("active_from", twostep.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("retired_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("drop_after", twostep.storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_oidc_signing_keys")),
    )
    op.create_table(
        "oidc_grants",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("nonce", sa.String(length=512), nullable=True),
        sa.Column("auth_time", twostep.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("amr", sa.String(length=64), nullable=False),
        sa.Column("acr", sa.String(length=8), nullable=False),
        sa.Column("session_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("expires_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_oidc_grants_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["oidc_clients.id"],
            name=op.f("fk_oidc_grants_client_id_oidc_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oidc_grants")),
    )
    with op.batch_alter_table("oidc_grants", schema=None) as batch_op:
        batch_op.create_index("ix_oidc_grants_account", ["account_id"], unique=False)
        batch_op.create_index("ix_oidc_grants_expires", ["expires_at"], unique=False)

    op.create_table(
        "oidc_codes",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("grant_id", sa.String(length=32), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("code_challenge", sa.String(length=128), nullable=True),
        sa.Column("code_challenge_method", sa.String(length=8), nullable=True),
        sa.Column("expires_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["grant_id"],
            ["oidc_grants.id"],
            name=op.f("fk_oidc_codes_grant_id_oidc_grants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("code_hash", name=op.f("pk_oidc_codes")),
    )
    with op.batch_alter_table("oidc_codes", schema=None) as batch_op:
        batch_op.create_index("ix_oidc_codes_expires", ["expires_at"], unique=False)

    op.create_table(
        "oidc_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("grant_id", sa.String(length=32), nullable=False),
        sa.Column("access_hash", sa.String(length=64), nullable=False),
        sa.Column("access_expires_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("refresh_hash", sa.String(length=64), nullable=True),
        sa.Column("refresh_expires_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("refresh_used_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["grant_id"],
            ["oidc_grants.id"],
            name=op.f("fk_oidc_tokens_grant_id_oidc_grants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oidc_tokens")),
        sa.UniqueConstraint("access_hash", name=op.f("uq_oidc_tokens_access_hash")),
        sa.UniqueConstraint("refresh_hash", name=op.f("uq_oidc_tokens_refresh_hash")),
    )
    with op.batch_alter_table("oidc_tokens", schema=None) as batch_op:
        batch_op.create_index("ix_oidc_tokens_grant", ["grant_id"], unique=False)

    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("amr", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("authenticated_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("authenticated_at")
        batch_op.drop_column("amr")

    with op.batch_alter_table("oidc_tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_oidc_tokens_grant")

    op.drop_table("oidc_tokens")
    with op.batch_alter_table("oidc_codes", schema=None) as batch_op:
        batch_op.drop_index("ix_oidc_codes_expires")

    op.drop_table("oidc_codes")
    with op.batch_alter_table("oidc_grants", schema=None) as batch_op:
        batch_op.drop_index("ix_oidc_grants_expires")
        batch_op.drop_index("ix_oidc_grants_account")

    op.drop_table("oidc_grants")
    op.drop_table("oidc_signing_keys")
    with op.batch_alter_table("oidc_pending", schema=None) as batch_op:
        batch_op.drop_index("ix_oidc_pending_expires")

    op.drop_table("oidc_pending")
    op.drop_table("oidc_clients")
