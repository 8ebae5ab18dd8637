"""Test session wiring: a fresh Postgres database and Redis db per session, set up
before any labelfree module reads Settings.

Postgres and Redis must be running (``.ci/run`` starts them); a test never skips
because a server is down.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

PG_ADMIN = os.environ.get("LABELFREE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_BASE = os.environ.get("LABELFREE_TEST_REDIS", "redis://127.0.0.1:6379")
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

_TAG = f"lf_test_{os.getpid()}"
_TMP = Path(tempfile.mkdtemp(prefix="labelfree-tests-"))
_REDIS_DB = 1 + os.getpid() % 15


def _admin_exec(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(PG_ADMIN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def _pg_url(name: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0]
    return f"{base}/{name}"


os.environ.update({
    "LABELFREE_PROFILE": "cluster",
    "LABELFREE_ENVIRONMENT": "test",
    "LABELFREE_DATA_DIR": str(_TMP / "data"),
    "LABELFREE_DATABASE_URL": _pg_url(_TAG),
    "LABELFREE_BROKER_URL": f"{REDIS_BASE}/{_REDIS_DB}",
    "LABELFREE_RESULT_BACKEND": f"{REDIS_BASE}/{_REDIS_DB}",
    "LABELFREE_STORE_URL": str(_TMP / "store"),
    "LABELFREE_SPARK_MASTER": "local[2]",
    "LABELFREE_LOG_JSON": "false",
    "PYSPARK_PYTHON": sys.executable,
})
os.environ.setdefault("LABELFREE_INFERENCE_BACKEND", "onnxruntime")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_sessionstart(session):
    import redis

    _admin_exec(f'DROP DATABASE IF EXISTS "{_TAG}"')
    _admin_exec(f'CREATE DATABASE "{_TAG}"')
    redis.Redis.from_url(os.environ["LABELFREE_BROKER_URL"]).flushdb()
    from labelfree.core.migrate import upgrade

    upgrade()


def _drop_captured_log_handlers() -> None:
    """Apps built in tests (``configure_logging``) point the root logger at the stderr pytest captures,
    and pytest closes it before the interpreter exits. py4j logs as its gateway's connections are
    collected at exit, which then printed a "Logging error" traceback after every run."""
    import logging

    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler.stream not in (sys.__stderr__, sys.__stdout__):
            root.removeHandler(handler)


def pytest_sessionfinish(session, exitstatus):
    import redis

    from labelfree.core.db import get_engine

    _drop_captured_log_handlers()
    get_engine().dispose()
    try:
        redis.Redis.from_url(os.environ["LABELFREE_BROKER_URL"]).flushdb()
        _admin_exec(f'DROP DATABASE IF EXISTS "{_TAG}" WITH (FORCE)')
    finally:
        shutil.rmtree(_TMP, ignore_errors=True)


@pytest.fixture
def tmp_pg_url():
    """A throwaway, empty Postgres database (for migration tests)."""
    name = f"{_TAG}_{os.urandom(3).hex()}"
    _admin_exec(f'CREATE DATABASE "{name}"')
    yield _pg_url(name)
    _admin_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared evaluation data not found at {SHARED_DATA}")
    return SHARED_DATA


class Workers:
    """Real Celery worker processes, killed at teardown."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def start(self, queues: str, *, pool: str = "solo", env: dict | None = None, name: str | None = None,
              wait: float = 30.0) -> subprocess.Popen:
        full_env = {**os.environ, **(env or {})}
        name = name or f"w{len(self.procs)}-{os.urandom(2).hex()}"
        log = open(_TMP / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "labelfree.core.celery_app", "worker", "-Q", queues,
             "--pool", pool, "--concurrency", "1", "-n", f"{name}@%h", "--loglevel", "INFO", "--without-gossip",
             "--without-mingle", "--without-heartbeat"],
            env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.procs.append(proc)
        deadline = time.monotonic() + wait
        path = _TMP / f"{name}.log"
        while time.monotonic() < deadline:
            if b"ready." in path.read_bytes():
                return proc
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited: {path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready in {wait}s: {path.read_text(errors='replace')[-2000:]}")

    def kill(self, proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc, signal.SIGTERM)


@pytest.fixture
def workers():
    w = Workers()
    yield w
    w.stop_all()
