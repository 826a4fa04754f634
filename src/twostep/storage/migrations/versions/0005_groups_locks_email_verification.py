"""groups, locks and e-mail verification

The operators' part of the second round: the groups an operator puts accounts in (a table, one row per
membership), the time an account was locked, and the time its e-mail address was verified.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import twostep.storage.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("locked_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("email_verified_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=True)
        )
    op.create_table(
        "account_groups",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("added_at", twostep.storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_account_groups_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "name", name=op.f("pk_account_groups")),
    )
    op.create_index("ix_account_groups_name", "account_groups", ["name"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_account_groups_name", table_name="account_groups")
    op.drop_table("account_groups")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("email_verified_at")
        batch_op.drop_column("locked_at")
