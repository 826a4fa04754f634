"""invitations and e-mail verification tokens

The operators' invitations (`twostep invite`): single use, stored as the SHA-256 of the token only, with the
username and e-mail address they may fix and the groups the new account joins. And the single-use links that
verify an e-mail address (24 hours), also stored as hashes only.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import twostep.storage.types

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invitations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("groups", sa.Text(), nullable=False),
        sa.Column("created_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invitations")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_invitations_token_hash")),
    )
    op.create_table(
        "email_verifications",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("expires_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_email_verifications_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_email_verifications")),
    )
    op.create_index("ix_email_verifications_account", "email_verifications", ["account_id"], unique=False)
    op.create_index("ix_email_verifications_expires", "email_verifications", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_email_verifications_expires", table_name="email_verifications")
    op.drop_index("ix_email_verifications_account", table_name="email_verifications")
    op.drop_table("email_verifications")
    op.drop_table("invitations")
