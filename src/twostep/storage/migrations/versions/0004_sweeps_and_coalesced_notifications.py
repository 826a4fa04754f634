"""sweeps and coalesced notifications

Indexes for the sweep of expired state (H08); outbox columns that fold repeated notifications of one kind
to one account into one message with a count (H13).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import twostep.storage.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("account_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("kind", sa.String(length=48), nullable=True))
        batch_op.add_column(sa.Column("coalesce_key", sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column("occurrences", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(
            sa.Column("last_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("last_ip", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("last_user_agent", sa.String(length=512), nullable=True))
        batch_op.add_column(
            sa.Column("since", twostep.storage.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("dispatched_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_unique_constraint(batch_op.f("uq_outbox_coalesce_key"), ["coalesce_key"])
        batch_op.create_index("ix_outbox_account_kind", ["account_id", "kind"], unique=False)
    with op.batch_alter_table("challenges", schema=None) as batch_op:
        batch_op.create_index("ix_challenges_expires", ["expires_at"], unique=False)
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index("ix_sessions_expires", ["expires_at"], unique=False)
        batch_op.create_index("ix_sessions_last_seen", ["last_seen_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_sessions_last_seen")
        batch_op.drop_index("ix_sessions_expires")
    with op.batch_alter_table("challenges", schema=None) as batch_op:
        batch_op.drop_index("ix_challenges_expires")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_account_kind")
        batch_op.drop_constraint(batch_op.f("uq_outbox_coalesce_key"), type_="unique")
        batch_op.drop_column("dispatched_at")
        batch_op.drop_column("since")
        batch_op.drop_column("last_user_agent")
        batch_op.drop_column("last_ip")
        batch_op.drop_column("last_at")
        batch_op.drop_column("occurrences")
        batch_op.drop_column("coalesce_key")
        batch_op.drop_column("kind")
        batch_op.drop_column("account_id")
