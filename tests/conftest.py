"""Shared fixtures: real databases (SQLite, and PostgreSQL when TWOSTEP_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.support import IN_CI, require_or_skip
from twostep.core import guards
from twostep.core.clock import SettableClock
from twostep.core.passwords import TEST_PROFILE, PasswordHasher
from twostep.core.secretbox import SecretBox, generate_key
from twostep.services.context import Context
from twostep.storage import migrate
from twostep.storage.db import Database, make_engine

PG_URL = os.environ.get("TWOSTEP_TEST_POSTGRES_URL")

# H06: the whole suite runs with the check that no argon2id call runs inside a write transaction.
os.environ[guards.ENV_SWITCH] = "1"
guards.enforce(True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of its own for this test run, migrated, dropped at the end."""
    if not PG_URL:
        require_or_skip("PostgreSQL (TWOSTEP_TEST_POSTGRES_URL)")
    assert PG_URL is not None
    base = make_url(PG_URL)
    name = f"twostep_t_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        if IN_CI:
            raise
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    url = base.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = :n AND pid <> pg_backend_pid()"
            ),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """Each storage- and service-level test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "twostep.sqlite3"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(make_engine(db_url, pool_size=5))
    yield database
    database.dispose()


@pytest.fixture
def clock() -> SettableClock:
    return SettableClock(datetime.now(UTC))


@pytest.fixture
def ctx(db: Database, clock: SettableClock) -> Context:
    return Context(
        db=db,
        clock=clock,
        hasher=PasswordHasher(**TEST_PROFILE),
        box=SecretBox(generate_key()),
        issuer="twostep",
        origin="http://localhost:8000",
        rp_id="localhost",
    )
