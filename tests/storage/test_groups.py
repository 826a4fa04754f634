"""Group memberships (a table, not a string column): added, removed, and read with the session in the same
statement that forward authentication and GET /session use, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from tests.support.services import signed_up
from twostep.services.context import Context
from twostep.storage import accounts, groups
from twostep.storage.tables import account_groups
from twostep.storage.tables import accounts as accounts_table


def test_groups_are_added_once_removed_and_seen_by_the_session(ctx: Context) -> None:
    user = signed_up(ctx)
    assert user.session(ctx).groups == ()
    with ctx.db.transaction() as conn:
        row = accounts.by_username(conn, user.username)
        assert row is not None
        assert groups.add(conn, row.id, ["staff", "admins", "staff"], now=ctx.now()) == ["admins", "staff"]
        assert groups.add(conn, row.id, ["admins", "ops"], now=ctx.now()) == ["ops"]
    session = user.session(ctx)
    assert session.groups == ("admins", "ops", "staff")
    assert session.email is None and session.email_verified is False
    with ctx.db.transaction() as conn:
        assert groups.remove(conn, row.id, ["ops", "nobody"]) == ["ops"]
        assert groups.of_account(conn, row.id) == ["admins", "staff"]
    assert user.session(ctx).groups == ("admins", "staff")


def test_an_accounts_groups_go_with_it(ctx: Context) -> None:
    user = signed_up(ctx)
    with ctx.db.transaction() as conn:
        row = accounts.by_username(conn, user.username)
        assert row is not None
        groups.add(conn, row.id, ["admins"], now=ctx.now())
        conn.execute(accounts_table.delete().where(accounts_table.c.id == row.id))
        left = conn.execute(select(account_groups).where(account_groups.c.account_id == row.id)).all()
    assert left == []
