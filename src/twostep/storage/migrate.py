"""Schema migrations with Alembic, driven from code (no alembic.ini needed).

Alembic is imported only by the functions that migrate: a serving worker checks the revision with one
query and does not carry Alembic (and Mako) in its memory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

_MIGRATIONS = Path(__file__).parent / "migrations"


def _config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def head_revision() -> str:
    """The newest revision: migrations are numbered 0001, 0002, ... and each revises the one before."""
    numbers = [
        m.group(1) for p in (_MIGRATIONS / "versions").glob("*.py") if (m := re.match(r"(\d{4})_", p.name))
    ]
    return max(numbers)


def current_revision(conn: Connection) -> str | None:
    try:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except DBAPIError:
        return None


def upgrade(engine: Engine) -> None:
    """Bring the schema up to date."""
    from alembic import command

    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def is_up_to_date(engine: Engine) -> bool:
    with engine.connect() as conn:
        return current_revision(conn) == head_revision()


def live_revision(conn: Connection) -> str | None:
    """The schema's revision, after a statement that fails when the database cannot answer (readiness):
    ``current_revision`` alone reads a lost connection as "no schema"."""
    conn.execute(text("SELECT 1"))
    return current_revision(conn)
