"""The database of a running twostep, read directly: white-box checks of "nothing changed" and of race
outcomes, with SQL of the tests' own (never the code under test)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, text

from tests.support.server import Target


def database_url(server: Target) -> str:
    if server.database_url:
        return server.database_url
    return f"sqlite:///{server.data_dir / 'twostep.sqlite3'}"


def db_rows(server: Target, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = create_engine(database_url(server))
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def account_id(server: Target, username: str) -> int:
    rows = db_rows(server, "SELECT id FROM accounts WHERE username = :u", u=username.casefold())
    assert len(rows) == 1, rows
    return int(rows[0][0])


def account_snapshot(server: Target, username: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row that belongs to the account, in the tables a sensitive change could touch."""
    aid = account_id(server, username)
    queries = {
        "accounts": "SELECT username, password_hash, email FROM accounts WHERE id = :a",
        "factors": "SELECT id, type, name, totp_secret, totp_last_step, credential_id FROM factors"
        " WHERE account_id = :a ORDER BY id",
        "recovery_codes": "SELECT id, selector, code_hash, used_at FROM recovery_codes"
        " WHERE account_id = :a ORDER BY id",
        "totp_enrollments": "SELECT id, secret, expires_at FROM totp_enrollments"
        " WHERE account_id = :a ORDER BY id",
        "sessions": "SELECT public_id, kind FROM sessions WHERE account_id = :a ORDER BY public_id",
    }
    return {name: db_rows(server, sql, a=aid) for name, sql in queries.items()}


def mfa_failures(server: Target, username: str) -> int:
    rows = db_rows(
        server, "SELECT failures FROM throttles WHERE key = :k", k=f"mfa:{account_id(server, username)}"
    )
    return int(rows[0][0]) if rows else 0
