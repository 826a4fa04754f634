"""Migrations: the revision a worker checks is Alembic's head, and the schema matches the tables."""

from __future__ import annotations

from alembic.config import Config
from alembic.script import ScriptDirectory

from twostep.storage import migrate
from twostep.storage.db import Database


def test_head_revision_is_alembics_head() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrate._MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == migrate.head_revision()


def test_migrated_database_is_up_to_date_and_matches_the_tables(db: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from twostep.storage.tables import metadata

    assert migrate.is_up_to_date(db.engine)
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
