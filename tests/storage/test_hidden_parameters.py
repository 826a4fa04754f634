"""H09: a database error never carries the statement's bound parameters (a password hash, an e-mail address)
into its text, and so never into a log line or a traceback, on SQLite and on PostgreSQL."""

from __future__ import annotations

import logging
import secrets
import traceback
from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError

from twostep.storage import accounts
from twostep.storage.db import Database, make_engine


def _insert(db: Database, *, username: str, password_hash: str, email: str) -> None:
    with db.transaction() as conn:
        accounts.insert(
            conn,
            username=username,
            display_name=username,
            password_hash=password_hash,
            email=email,
            user_handle=secrets.token_bytes(64),
            now=datetime.now(UTC),
        )


def _everything_said_about(exc: BaseException, caplog: pytest.LogCaptureFixture) -> str:
    """The exception as a log line with its traceback, as web/errors.py writes an unexpected error."""
    logging.getLogger("twostep.test").error("unexpected error", exc_info=exc)
    return "\n".join([str(exc), repr(exc), "".join(traceback.format_exception(exc)), caplog.text])


def test_H09_a_constraint_violation_does_not_show_the_password_hash(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    username = f"h09_{secrets.token_hex(4)}"
    marker_hash = f"$argon2id$v=19$m=8,t=1,p=1$H09MARKER{secrets.token_hex(8)}"
    marker_email = f"h09.{secrets.token_hex(4)}@example.org"
    _insert(db, username=username, password_hash="first", email="first@example.org")
    with pytest.raises(IntegrityError) as caught:
        _insert(db, username=username, password_hash=marker_hash, email=marker_email)
    said = _everything_said_about(caught.value, caplog)
    assert "INSERT INTO accounts" in said  # the statement is still there to debug with
    assert marker_hash not in said and "H09MARKER" not in said
    assert marker_email not in said


def test_H09_a_value_postgresql_refuses_is_not_shown_either(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL refuses NUL in text (SQLite stores it); the error names the problem, not the values."""
    db = Database(make_engine(postgres_url, pool_size=1))
    marker_hash = f"H09MARKER{secrets.token_hex(8)}"
    try:
        with pytest.raises(DBAPIError) as caught:
            _insert(db, username=f"h09_{secrets.token_hex(4)}", password_hash=marker_hash, email="\x00@b.org")
    finally:
        db.dispose()
    said = _everything_said_about(caught.value, caplog)
    assert "NUL" in said
    assert "H09MARKER" not in said
