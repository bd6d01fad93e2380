"""The alembic history runs up and down on both databases and builds the tables the code uses."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

import services.lifecycle.tables
import services.scoring.tables  # noqa: F401  (registers the tables on the metadata)
from shared.db import make_engine, metadata
from shared.migrate import downgrade, upgrade


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrations_create_every_table_the_code_declares(db_url: str) -> None:
    assert _tables(db_url) == set(metadata.tables) | {"alembic_version"}


def test_migrations_downgrade_and_upgrade_again(db_url: str) -> None:
    downgrade(db_url, "base")
    assert _tables(db_url) == {"alembic_version"}
    upgrade(db_url)
    assert _tables(db_url) == set(metadata.tables) | {"alembic_version"}


def test_migrations_match_the_declared_tables_column_by_column(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()
