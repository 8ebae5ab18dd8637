"""The one Celery app, its queues, and the ``job_task`` wrapper every task uses.

A task carries only a job id. The job row says what to do; the wrapper claims the row,
runs the pure function, and records the outcome, so a redelivered message never redoes
finished work and a worker killed mid-task leaves a job that the redelivery takes over.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import threading
import traceback as tb
from typing import Callable

from celery import Celery
from sqlalchemy.exc import OperationalError

from labelfree.core import jobs
from labelfree.core.db import session_scope
from labelfree.core.errors import LabelfreeError, unavailable
from labelfree.core.settings import get_settings

log = logging.getLogger(__name__)

QUEUE_INGEST = "ingest"
QUEUE_TRAIN = "train"
QUEUE_EXPLAIN = "explain"
QUEUE_DETECT = "detect"
QUEUES = (QUEUE_INGEST, QUEUE_TRAIN, QUEUE_EXPLAIN, QUEUE_DETECT)

TASK_MODULES = (
    "labelfree.core.builtin_tasks",
    "labelfree.ingest.tasks",
    "labelfree.trainer.tasks",
    "labelfree.trainer.detector.tasks",
    "labelfree.explainer.tasks",
    "labelfree.inference.tasks",
    "labelfree.pipeline.tasks",
)

RETRYABLE = (ConnectionError, TimeoutError, OperationalError)
MAX_RETRIES = 3


def _existing(modules: tuple[str, ...]) -> list[str]:
    found = []
    for name in modules:
        try:
            if importlib.util.find_spec(name) is not None:
                found.append(name)
        except ModuleNotFoundError:
            pass
    return found


def make_celery() -> Celery:
    s = get_settings()
    app = Celery("labelfree", broker=s.broker_url, backend=s.result_backend, include=_existing(TASK_MODULES))
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,  # the job row is the result
        task_default_queue=QUEUE_TRAIN,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # Redis redelivers unacknowledged messages (a SIGKILLed worker's) after this long.
        broker_transport_options=(
            {
                "visibility_timeout": s.broker_visibility_timeout,
                "unacked_restore_interval": s.broker_restore_interval,
                "unacked_restore_throttle": 1,
            }
            if s.broker_url.startswith("redis")
            else {}
        ),
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
    )
    return app


celery_app = make_celery()


def prepare_broker() -> None:
    """Create the embedded (SQLAlchemy) broker's tables once, before workers and APIs start.

    kombu creates them on a process's first connection; eight processes starting together on a
    fresh data directory race to do it, and the losers log a lost broker connection.
    """
    if not celery_app.conf.broker_url.startswith("sqla+"):
        return
    with celery_app.connection_for_write() as conn:
        _ = conn.default_channel.session  # opening the channel's session creates the tables


class JobCancelled(Exception):
    """Raised inside a running job when cancellation was requested."""


ProgressFn = Callable[[float], None]


def _heartbeat(job_id: str, stop: threading.Event, every: float) -> None:
    while not stop.wait(every):
        try:
            with session_scope() as session:
                job = jobs.lock_job(session, job_id)
                if job.state == jobs.JobState.RUNNING.value:
                    job.heartbeat_at = jobs.utcnow()
        except Exception:  # a missed beat is not fatal; the lease is several beats long
            log.warning("heartbeat failed for job %s", job_id, exc_info=True)


def run_job(task, fn: Callable[[str, dict, ProgressFn], dict], job_id: str) -> dict:
    """Claim ``job_id``, run ``fn(job_id, params, progress)``, and record the outcome."""
    s = get_settings()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    with session_scope() as session:
        job = session.get(jobs.Job, job_id)
        if job is None:
            log.error("job %s does not exist; dropping its message", job_id)
            return {"skipped": "missing"}
        finished = job.state if jobs.JobState(job.state).is_terminal() else None
        in_run = bool(job.run_id)
        if not finished and job.cancel_requested:
            jobs.mark_job_cancelled(session, job_id) if job.state != "queued" else jobs.request_cancel(session, job_id)
            return {"skipped": "cancelled"}
    if finished:  # redelivered after it finished: nothing to redo
        if finished == jobs.JobState.SUCCEEDED.value and in_run:
            # Its worker may have died between recording success and starting the run's next
            # step; advancing again is a no-op when that step already exists.
            _after(job_id, "succeeded")
        return {"skipped": finished}
    try:
        with session_scope() as session:
            job = jobs.mark_job_running(
                session, job_id, worker=worker, celery_task_id=getattr(task.request, "id", None),
                lease_seconds=s.job_lease_seconds,
            )
            params = dict(job.params or {})
    except jobs.JobBusy:
        # Another live worker holds it. Keep this message alive until the job ends, so a
        # crash of that worker is still covered.
        raise task.retry(countdown=max(1, s.job_lease_seconds // 2), max_retries=None)

    def progress(fraction: float) -> None:
        with session_scope() as session:
            job = jobs.set_progress(session, job_id, min(max(float(fraction), 0.0), 1.0))
            if job.cancel_requested:
                raise JobCancelled(job_id)

    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(job_id, stop, max(1.0, s.job_lease_seconds / 4)), daemon=True)
    beat.start()
    try:
        result = fn(job_id, params, progress)
    except JobCancelled:
        with session_scope() as session:
            jobs.mark_job_cancelled(session, job_id)
        _after(job_id, "cancelled", "cancelled on request")
        return {"cancelled": True}
    except LabelfreeError as exc:
        if exc.code == "unavailable" and task.request.retries < MAX_RETRIES:
            return _retry(task, job_id, exc)
        with session_scope() as session:
            jobs.mark_job_failed(session, job_id, f"{exc.code}: {exc.detail}", tb.format_exc())
        _after(job_id, "failed", exc.detail)
        return {"failed": exc.detail}
    except RETRYABLE as exc:
        if task.request.retries < MAX_RETRIES:
            return _retry(task, job_id, exc)
        with session_scope() as session:
            jobs.mark_job_failed(session, job_id, f"{type(exc).__name__}: {exc}", tb.format_exc())
        _after(job_id, "failed", str(exc))
        return {"failed": str(exc)}
    except Exception as exc:
        with session_scope() as session:
            jobs.mark_job_failed(session, job_id, f"{type(exc).__name__}: {exc}", tb.format_exc())
        _after(job_id, "failed", f"{type(exc).__name__}: {exc}")
        return {"failed": str(exc)}
    finally:
        stop.set()
    with session_scope() as session:
        jobs.mark_job_succeeded(session, job_id, result)
    _after(job_id, "succeeded")
    return {"succeeded": True}


def _after(job_id: str, outcome: str, reason: str = "") -> None:
    """Move the job's run (if any) on: next step on success, failed/cancelled otherwise."""
    from labelfree.core import runs

    with session_scope() as session:
        job = session.get(jobs.Job, job_id)
        run_id, step = job.run_id, job.kind
    if not run_id or not step:
        return
    if outcome == "succeeded":
        runs.advance_run(run_id)
    else:
        state = jobs.JobState.CANCELLED if outcome == "cancelled" else jobs.JobState.FAILED
        runs.fail_run(run_id, f"step {step}: {reason}", state)


def _retry(task, job_id: str, exc: Exception):
    with session_scope() as session:
        jobs.mark_job_retrying(session, job_id, f"retrying after {type(exc).__name__}: {exc}")
    countdown = 2 ** (task.request.retries + 1)  # exponential backoff: 2, 4, 8 s
    raise task.retry(exc=exc, countdown=countdown)


def job_task(name: str, queue: str):
    """Register ``fn(job_id, params, progress) -> result dict`` as an idempotent job task."""
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; expected one of {QUEUES}")

    def decorate(fn: Callable[[str, dict, ProgressFn], dict]):
        celery_app.conf.task_routes = {**(celery_app.conf.task_routes or {}), name: {"queue": queue}}

        @celery_app.task(name=name, bind=True, acks_late=True, max_retries=MAX_RETRIES)
        def task(self, job_id: str) -> dict:
            return run_job(self, fn, job_id)

        task.job_fn = fn
        task.queue_name = queue
        return task

    return decorate


def enqueue(task, job_id: str) -> str:
    """Send the job's message. If the broker is down, fail the job and raise 503."""
    try:
        result = task.apply_async(args=[job_id], queue=task.queue_name, retry=False)
    except Exception as exc:
        with session_scope() as session:
            jobs.mark_job_failed(session, job_id, f"broker unavailable: {exc}")
        raise unavailable(f"the job queue is unavailable: {exc}") from exc
    with session_scope() as session:
        jobs.get_job(session, job_id).celery_task_id = result.id
    return result.id


def submit_job(session, response, task, kind: jobs.JobKind, params: dict, **job_fields) -> dict:
    """The API side of every job: write the row, commit it, send it, answer 202's body.

    The row is committed before the message goes out, so a fast worker always finds it.
    """
    job_id = jobs.create_job(session, kind, params, **job_fields).id
    session.commit()
    enqueue(task, job_id)
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return {"job_id": job_id, "state": jobs.JobState.QUEUED.value}
