from sqlalchemy import create_engine, inspect

from labelfree.core.migrate import current_heads, downgrade, upgrade
from labelfree.core.settings import normalise_dsn

TABLES = {"projects", "runs", "jobs", "images", "boxes", "models", "datasets", "surveys", "detection_results"}


def _tables(url):
    engine = create_engine(normalise_dsn(url))
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_migrations_up_and_down_on_postgres(tmp_pg_url):
    upgrade(tmp_pg_url)
    assert TABLES <= _tables(tmp_pg_url)
    assert current_heads(tmp_pg_url)
    downgrade(tmp_pg_url)
    assert _tables(tmp_pg_url) == set()
    upgrade(tmp_pg_url)
    assert TABLES <= _tables(tmp_pg_url)


def test_migrations_up_and_down_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    assert TABLES <= _tables(url)
    downgrade(url)
    assert _tables(url) == set()
