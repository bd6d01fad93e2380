"""Alembic environment: one history for SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import context

import shared.privacy  # noqa: F401  (register every table on the shared metadata)
from shared.db import make_engine, metadata
from shared.settings import Settings

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings().database_url

engine = make_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
