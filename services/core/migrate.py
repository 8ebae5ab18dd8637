"""Run Alembic migrations programmatically (``labelfree db upgrade``, tests, the chart's hook Job)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from labelfree.core.settings import normalise_dsn

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", normalise_dsn(url).replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def current_heads(url: str | None = None) -> set[str]:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    from labelfree.core.settings import get_settings

    engine = create_engine(normalise_dsn(url) if url else get_settings().database_url)
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())
