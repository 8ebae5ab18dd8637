"""The ``labelfree`` command: one command per contract in architecture.md.

Each service keeps its commands in its own ``cli.py`` (a typer app); this face merges them.
Every command exits non-zero with a one-line reason on bad input.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from labelfree.core.errors import LabelfreeError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="labelfree: detectors learned without labels.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema (Alembic migrations).")
jobs_app = typer.Typer(no_args_is_help=True, help="Inspect jobs.")
app.add_typer(db_app, name="db")
app.add_typer(jobs_app, name="jobs")
console = Console(stderr=True)

SERVICE_CLIS = (
    "labelfree.ingest.cli",
    "labelfree.trainer.cli",
    "labelfree.trainer.detector.cli",
    "labelfree.explainer.cli",
    "labelfree.inference.cli",
    "labelfree.pipeline.cli",
)
SERVICES = ("ingest", "trainer", "explainer", "inference")


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations up to REVISION (default: head)."""
    from labelfree.core.migrate import upgrade

    upgrade(revision=revision)
    console.print(f"database at {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="target revision, or 'base'")) -> None:
    """Revert migrations down to REVISION."""
    from labelfree.core.migrate import downgrade

    downgrade(revision=revision)
    console.print(f"database at {revision}")


@jobs_app.command("ls")
def jobs_ls(
    state: Optional[str] = typer.Option(None, help="only jobs in this state"),
    limit: int = typer.Option(20, min=1, max=1000),
) -> None:
    """List the newest jobs."""
    from sqlalchemy import select

    from labelfree.core.db import session_scope
    from labelfree.core.jobs import JobState
    from labelfree.core.models import Job

    query = select(Job).order_by(Job.created_at.desc()).limit(limit)
    if state:
        try:
            query = query.where(Job.state == JobState(state).value)
        except ValueError:
            raise LabelfreeError("bad_request", f"unknown state {state!r}; one of {[s.value for s in JobState]}")
    table = Table("id", "kind", "state", "progress", "attempts", "created", "error")
    with session_scope() as session:
        for job in session.execute(query).scalars():
            table.add_row(job.id, job.kind, job.state, f"{job.progress:.0%}", str(job.attempts),
                          job.created_at.strftime("%Y-%m-%d %H:%M:%S"), (job.error or "")[:60])
    Console().print(table)


@jobs_app.command("probe")
def jobs_probe(queue: str = typer.Option("train"), steps: int = 3, step_seconds: float = 0.2,
               wait: float = typer.Option(60.0, help="seconds to wait for the job to finish")) -> None:
    """Send a diagnostic job to QUEUE and wait until a worker finishes it."""
    from labelfree.core import jobs
    from labelfree.core.builtin_tasks import PROBE_TASKS
    from labelfree.core.celery_app import enqueue
    from labelfree.core.db import session_scope

    if queue not in PROBE_TASKS:
        raise LabelfreeError("bad_request", f"unknown queue {queue!r}; one of {sorted(PROBE_TASKS)}")
    with session_scope() as session:
        job_id = jobs.create_job(session, jobs.JobKind.NOOP, {"steps": steps, "step_seconds": step_seconds}).id
    enqueue(PROBE_TASKS[queue], job_id)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with session_scope() as session:
            job = jobs.get_job(session, job_id)
            if jobs.JobState(job.state).is_terminal():
                console.print(f"job {job_id} {job.state}")
                raise typer.Exit(0 if job.state == "succeeded" else 1)
        time.sleep(0.2)
    raise LabelfreeError("unavailable", f"job {job_id} not finished after {wait:.0f}s: is a {queue} worker running?")


def _spawn(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, start_new_session=True)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:  # the group is already empty
        pass


@app.command("up")
def up(
    workers: bool = typer.Option(True, help="also start one Celery worker per queue"),
    migrate: bool = typer.Option(True, help="apply migrations first"),
) -> None:
    """Start the four APIs and the workers on this machine. Ctrl-C stops everything."""
    from labelfree.core.celery_app import QUEUES, prepare_broker
    from labelfree.core.http_protocol import PROTOCOL as HTTP_PROTOCOL
    from labelfree.core.metrics import MULTIPROC_ENV
    from labelfree.core.migrate import upgrade
    from labelfree.core.settings import get_settings

    settings = get_settings()
    if migrate:
        upgrade()
    prepare_broker()
    env = dict(os.environ)
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    procs: list[tuple[str, subprocess.Popen]] = []
    for name in SERVICES:
        port = getattr(settings, f"{name}_port")
        processes = settings.inference_processes if name == "inference" else 1
        service_env = {**env, **settings.inference_process_env()} if name == "inference" else env
        if MULTIPROC_ENV in service_env:  # counts of an earlier `up` must not add up
            shutil.rmtree(service_env[MULTIPROC_ENV], ignore_errors=True)
        procs.append((name, _spawn([sys.executable, "-m", "uvicorn", f"labelfree.{name}.api:app",
                                    "--host", settings.api_host, "--port", str(port), "--no-access-log",
                                    "--http", HTTP_PROTOCOL,
                                    *(["--workers", str(processes)] if processes > 1 else [])], service_env)))
        console.print(f"[green]{name}[/] http://{settings.api_host}:{port}  (docs at /docs)")
    if workers:
        for queue in QUEUES:
            procs.append((f"worker:{queue}", _spawn(
                [sys.executable, "-m", "celery", "-A", "labelfree.core.celery_app", "worker", "-Q", queue,
                 "--concurrency", "1", "--loglevel", "WARNING", "-n", f"{queue}@%h"], env)))
    console.print(f"profile [bold]{settings.profile}[/]; Ctrl-C stops everything")

    stopping = False

    def _stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    while not stopping:
        for name, proc in procs:
            if proc.poll() is not None:
                console.print(f"[red]{name} exited with {proc.returncode}; stopping[/]")
                stopping, code = True, 1
                break
        time.sleep(0.5)
    # SIGTERM goes to each leader only: a Celery worker or a uvicorn supervisor stops its own
    # children in order, where a signal to the whole group kills a pool child under its parent.
    for _, proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 15
    for _, proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _kill_group(proc.pid)  # whatever the leader left behind, or the leader itself past the deadline
    console.print("stopped")
    raise typer.Exit(code)


def _merge_service_commands() -> None:
    for module_name in SERVICE_CLIS:
        if importlib.util.find_spec(module_name) is None:
            continue
        sub = importlib.import_module(module_name).app
        app.registered_commands.extend(sub.registered_commands)
        app.registered_groups.extend(sub.registered_groups)


_merge_service_commands()


def main() -> None:
    try:
        app()
    except LabelfreeError as exc:
        _one_line_error(exc.detail)
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        _one_line_error(str(exc))


def _one_line_error(reason: str) -> None:
    """The contract: bad input exits non-zero with a one-line reason (no wrapping, no markup)."""
    sys.stderr.write("error: " + " ".join(reason.split()) + "\n")
    sys.exit(2)


if __name__ == "__main__":
    main()
