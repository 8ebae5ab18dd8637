"""The job state machine. The row in the database is the source of truth.

States::

    queued ──> running ──> succeeded
      │  └──────────────> failed ────┐  (queued -> failed: it could not be enqueued)
      │          │  └────> failed ────┤
      │          │  └────> cancelled ─┤ (requeue: resume / manual retry)
      │          └──> queued (retry)  │
      └──> cancelled                  │
      ^───────────────────────────────┘

Every transition is a named function that locks the row (``SELECT ... FOR UPDATE``)
and raises ``IllegalTransition`` when the current state does not allow it.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from labelfree.core.errors import LabelfreeError, not_found
from labelfree.core.models import Job, utcnow


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def is_terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class JobKind(str, enum.Enum):
    INGEST = "ingest"
    TRAIN = "train"
    EXPLAIN = "explain"
    TRAIN_DETECTOR = "train_detector"
    DEPLOY = "deploy"
    DETECT = "detect"
    NOOP = "noop"


LEGAL: dict[JobState, set[JobState]] = {
    JobState.QUEUED: {JobState.RUNNING, JobState.CANCELLED, JobState.FAILED},
    JobState.RUNNING: {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.QUEUED},
    JobState.FAILED: {JobState.QUEUED},
    JobState.CANCELLED: {JobState.QUEUED},
    JobState.SUCCEEDED: set(),
}


class IllegalTransition(LabelfreeError):
    def __init__(self, job_id: str, current: str, target: str):
        super().__init__("conflict", f"job {job_id} is {current}; it cannot become {target}")
        self.current = current
        self.target = target


class JobBusy(LabelfreeError):
    """Another live worker holds the job (its heartbeat is fresh)."""

    def __init__(self, job_id: str, worker: str | None):
        super().__init__("conflict", f"job {job_id} is running on {worker or 'another worker'}")


def _aware(ts: datetime | None) -> datetime | None:
    if ts is not None and ts.tzinfo is None:  # SQLite drops the zone
        return ts.replace(tzinfo=timezone.utc)
    return ts


def create_job(
    session: Session,
    kind: JobKind | str,
    params: dict | None = None,
    *,
    project_id: str | None = None,
    run_id: str | None = None,
    inputs: dict | None = None,
) -> Job:
    job = Job(
        kind=JobKind(kind).value,
        params=params or {},
        project_id=project_id,
        run_id=run_id,
        inputs=inputs or {},
        state=JobState.QUEUED.value,
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise not_found("job", job_id)
    return job


def lock_job(session: Session, job_id: str) -> Job:
    job = session.execute(select(Job).where(Job.id == job_id).with_for_update()).scalar_one_or_none()
    if job is None:
        raise not_found("job", job_id)
    return job


def _transition(session: Session, job_id: str, target: JobState) -> Job:
    job = lock_job(session, job_id)
    current = JobState(job.state)
    if target not in LEGAL[current]:
        raise IllegalTransition(job_id, current.value, target.value)
    job.state = target.value
    return job


def mark_job_running(
    session: Session, job_id: str, *, worker: str, celery_task_id: str | None = None, lease_seconds: int = 120
) -> Job:
    """Claim a queued job, or take over a running one whose worker stopped beating.

    Raises JobBusy when a live worker holds it, IllegalTransition when it is finished.
    """
    job = lock_job(session, job_id)
    now = utcnow()
    if job.state == JobState.RUNNING.value:
        beat = _aware(job.heartbeat_at) or _aware(job.started_at)
        if beat is not None and now - beat < timedelta(seconds=lease_seconds):
            raise JobBusy(job_id, job.worker)
    elif JobState.RUNNING not in LEGAL[JobState(job.state)]:
        raise IllegalTransition(job_id, job.state, JobState.RUNNING.value)
    job.state = JobState.RUNNING.value
    job.attempts += 1
    job.worker = worker
    job.heartbeat_at = now
    job.started_at = job.started_at or now
    if celery_task_id:
        job.celery_task_id = celery_task_id
    return job


def lease_expired(job: Job, lease_seconds: int) -> bool:
    """True when a running job's worker has not beaten its heart for ``lease_seconds`` (it died)."""
    beat = _aware(job.heartbeat_at) or _aware(job.started_at)
    stale = beat is None or utcnow() - beat >= timedelta(seconds=lease_seconds)
    return job.state == JobState.RUNNING.value and stale


def mark_job_succeeded(session: Session, job_id: str, result: dict | None = None) -> Job:
    job = _transition(session, job_id, JobState.SUCCEEDED)
    job.result = result or {}
    job.progress = 1.0
    job.error = None
    job.traceback = None
    job.finished_at = utcnow()
    return job


def mark_job_failed(session: Session, job_id: str, error: str, traceback: str | None = None) -> Job:
    job = _transition(session, job_id, JobState.FAILED)
    job.error = error
    job.traceback = traceback
    job.finished_at = utcnow()
    return job


def mark_job_cancelled(session: Session, job_id: str) -> Job:
    job = _transition(session, job_id, JobState.CANCELLED)
    job.finished_at = utcnow()
    return job


def mark_job_retrying(session: Session, job_id: str, error: str | None = None) -> Job:
    """Running -> queued, after a transient failure; the task is re-sent with backoff."""
    job = _transition(session, job_id, JobState.QUEUED)
    job.error = error
    job.worker = None
    job.heartbeat_at = None
    return job


def mark_job_abandoned(session: Session, job_id: str, lease_seconds: int) -> Job:
    """Running -> queued when the worker holding it stopped beating (killed), so resume can send
    it again: its message may never come back (kombu's SQLAlchemy broker leaves a fetched message
    invisible for good) or only after the broker's visibility timeout. Refused while the lease
    is live."""
    job = lock_job(session, job_id)
    if not lease_expired(job, lease_seconds):
        raise JobBusy(job_id, job.worker) if job.state == JobState.RUNNING.value else \
            IllegalTransition(job_id, job.state, JobState.QUEUED.value)
    job = _transition(session, job_id, JobState.QUEUED)
    job.error = f"worker {job.worker or '?'} stopped beating for over {lease_seconds}s; requeued"
    job.worker = None
    job.heartbeat_at = None
    return job


def mark_job_requeued(session: Session, job_id: str) -> Job:
    """Failed or cancelled -> queued, for resume. Keeps attempts, clears the error."""
    job = _transition(session, job_id, JobState.QUEUED)
    job.error = None
    job.traceback = None
    job.cancel_requested = False
    job.finished_at = None
    job.worker = None
    job.heartbeat_at = None
    return job


def request_cancel(session: Session, job_id: str) -> Job:
    """Ask for cancellation. A queued job is cancelled now; a running one at its next progress beat."""
    job = lock_job(session, job_id)
    state = JobState(job.state)
    if state.is_terminal():
        raise IllegalTransition(job_id, state.value, JobState.CANCELLED.value)
    job.cancel_requested = True
    if state == JobState.QUEUED:
        job.state = JobState.CANCELLED.value
        job.finished_at = utcnow()
    return job


def set_progress(session: Session, job_id: str, progress: float) -> Job:
    """Record progress (0..1) and beat the heart. Returns the row so callers can read cancel_requested."""
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be within 0..1, got {progress}")
    job = lock_job(session, job_id)
    if job.state != JobState.RUNNING.value:
        raise IllegalTransition(job_id, job.state, "progress")
    job.progress = progress
    job.heartbeat_at = utcnow()
    return job


def job_to_dict(job: Job) -> dict:
    def iso(ts):
        return _aware(ts).isoformat() if ts else None

    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "progress": job.progress,
        "attempts": job.attempts,
        "error": job.error,
        "params": job.params,
        "result": job.result,
        "inputs": job.inputs,
        "project_id": job.project_id,
        "run_id": job.run_id,
        "cancel_requested": job.cancel_requested,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
    }
