"""trusted browsers

The trusted_browsers table (docs/api.md "Trusted browsers": a browser that skips the second step after a
correct password), the session's record of a sign-in that skipped it that way (one factor), and the
session's grant of an automatic passkey upgrade right after a password sign-in.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import twostep.storage.types

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trusted_browsers",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("user_agent", sa.String(length=512), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_trusted_browsers_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trusted_browsers")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_trusted_browsers_token_hash")),
    )
    with op.batch_alter_table("trusted_browsers", schema=None) as batch_op:
        batch_op.create_index("ix_trusted_browsers_account", ["account_id"], unique=False)
        batch_op.create_index("ix_trusted_browsers_expires", ["expires_at"], unique=False)
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trusted_browser", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column(
                "passkey_upgrade_until", twostep.storage.types.UTCDateTime(timezone=True), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("passkey_upgrade_until")
        batch_op.drop_column("trusted_browser")
    with op.batch_alter_table("trusted_browsers", schema=None) as batch_op:
        batch_op.drop_index("ix_trusted_browsers_expires")
        batch_op.drop_index("ix_trusted_browsers_account")
    op.drop_table("trusted_browsers")
