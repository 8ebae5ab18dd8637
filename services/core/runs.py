"""Runs: one project's chain of jobs, ingest -> train -> explain -> train_detector -> deploy.

Services never import each other, so the chain is driven from here by task *names*: when a
step's job succeeds, the worker that ran it calls ``advance_run``, which writes the next
step's job (recording the ids it consumes in ``inputs``) and sends it by name to its queue.
A failed step marks the run failed with the reason; nothing produced is deleted.
``resume_run`` requeues the first unfinished step; steps reuse cached features and boxes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from labelfree.core import jobs
from labelfree.core.errors import LabelfreeError, not_found
from labelfree.core.jobs import JobKind, JobState
from labelfree.core.models import Dataset, Job, Project, Run, utcnow

log = logging.getLogger(__name__)

# Task names are the contract between the run chain and the services that register them.
TASK_BUILD_DATASET = "labelfree.ingest.build_dataset"
TASK_TRAIN_CLASSIFIER = "labelfree.trainer.train_classifier"
TASK_EXPLAIN = "labelfree.explainer.explain"
TASK_TRAIN_DETECTOR = "labelfree.trainer.detector.train_detector"
TASK_DEPLOY = "labelfree.inference.deploy_detector"


@dataclass(frozen=True)
class Step:
    name: str
    kind: JobKind
    task: str
    queue: str
    # (session, run, results of the finished steps by name) -> (params, inputs)
    params: Callable[[Session, Run, dict[str, Job]], tuple[dict, dict]]


def _ingest_params(session: Session, run: Run, done: dict[str, Job]) -> tuple[dict, dict]:
    project = session.get(Project, run.project_id)
    request = dict(run.params.get("ingest", {}))
    dataset = Dataset(project_id=project.id, query=project.query, provider=request.get("provider", "openverse"),
                      params=request)
    session.add(dataset)
    session.flush()
    return {**request, "query": project.query, "dataset_id": dataset.id}, {"project_id": project.id}


def _train_params(session: Session, run: Run, done: dict[str, Job]) -> tuple[dict, dict]:
    dataset_id = done["ingest"].result["dataset_id"]
    return ({**run.params.get("train", {}), "dataset_id": dataset_id, "project_id": run.project_id},
            {"ingest_job": done["ingest"].id, "dataset_id": dataset_id})


def _explain_params(session: Session, run: Run, done: dict[str, Job]) -> tuple[dict, dict]:
    dataset_id = done["ingest"].result["dataset_id"]
    model_id = done["train"].result["model_id"]
    return ({**run.params.get("explain", {}), "dataset_id": dataset_id, "model_id": model_id},
            {"train_job": done["train"].id, "dataset_id": dataset_id, "classifier_id": model_id})


def _detector_params(session: Session, run: Run, done: dict[str, Job]) -> tuple[dict, dict]:
    explain = done["explain"]
    return ({**run.params.get("detector", {}), "explain_job_id": explain.id,
             "dataset_id": done["ingest"].result["dataset_id"], "classifier_id": done["train"].result["model_id"],
             "project_id": run.project_id},
            {"explain_job": explain.id, "classifier_id": done["train"].result["model_id"]})


def _deploy_params(session: Session, run: Run, done: dict[str, Job]) -> tuple[dict, dict]:
    model_id = done["train_detector"].result["model_id"]
    return {**run.params.get("deploy", {}), "model_id": model_id}, {"detector_job": done["train_detector"].id,
                                                                    "detector_id": model_id}


def _steps() -> tuple[Step, ...]:
    from labelfree.core.celery_app import QUEUE_DETECT, QUEUE_EXPLAIN, QUEUE_INGEST, QUEUE_TRAIN

    return (
        Step("ingest", JobKind.INGEST, TASK_BUILD_DATASET, QUEUE_INGEST, _ingest_params),
        Step("train", JobKind.TRAIN, TASK_TRAIN_CLASSIFIER, QUEUE_TRAIN, _train_params),
        Step("explain", JobKind.EXPLAIN, TASK_EXPLAIN, QUEUE_EXPLAIN, _explain_params),
        Step("train_detector", JobKind.TRAIN_DETECTOR, TASK_TRAIN_DETECTOR, QUEUE_TRAIN, _detector_params),
        Step("deploy", JobKind.DEPLOY, TASK_DEPLOY, QUEUE_DETECT, _deploy_params),
    )


STEP_NAMES = ("ingest", "train", "explain", "train_detector", "deploy")


def step_jobs(session: Session, run_id: str) -> dict[str, Job]:
    """The newest job of each step of a run."""
    rows = session.execute(select(Job).where(Job.run_id == run_id).order_by(Job.created_at)).scalars()
    latest: dict[str, Job] = {}
    for job in rows:
        if job.kind in STEP_NAMES:  # a step's job kind is its step name
            latest[job.kind] = job
    return latest


def _lock_run(session: Session, run_id: str) -> Run:
    run = session.execute(select(Run).where(Run.id == run_id).with_for_update()).scalar_one_or_none()
    if run is None:
        raise not_found("run", run_id)
    return run


def create_run(session: Session, query: str, params: dict, *, name: str | None = None) -> Run:
    project = Project(name=name or query, query=query, options=params)
    session.add(project)
    session.flush()
    run = Run(project_id=project.id, params=params, state=JobState.QUEUED.value)
    session.add(run)
    session.flush()
    return run


def next_step(session: Session, run_id: str) -> tuple[Run, Job | None]:
    """Write the job of the first step not yet succeeded (or finish the run). Returns (run, new job)."""
    run = _lock_run(session, run_id)
    if run.state in (JobState.FAILED.value, JobState.CANCELLED.value, JobState.SUCCEEDED.value):
        return run, None
    latest = step_jobs(session, run_id)
    done = {name: job for name, job in latest.items() if job.state == JobState.SUCCEEDED.value}
    for step in _steps():
        if step.name in done:
            continue
        current = latest.get(step.name)
        if current is not None and not JobState(current.state).is_terminal():
            return run, None  # already written and on its way
        params, inputs = step.params(session, run, done)
        job = jobs.create_job(session, step.kind, params, project_id=run.project_id,
                              run_id=run.id, inputs=inputs)
        run.state = JobState.RUNNING.value
        run.current_step = step.name
        return run, job
    run.state = JobState.SUCCEEDED.value
    run.current_step = None
    run.finished_at = utcnow()
    return run, None


def send_step(job: Job, *, from_api: bool = False) -> None:
    """Send the step's message. ``from_api``: fail fast when the broker is down: the job and its run
    are marked failed with the reason (resumable; nothing is deleted) and a 503 is raised."""
    from labelfree.core.celery_app import celery_app
    from labelfree.core.db import session_scope
    from labelfree.core.errors import unavailable

    step = next(s for s in _steps() if s.name == job.kind)
    if not from_api:
        celery_app.send_task(step.task, args=[job.id], queue=step.queue)
        return
    try:
        celery_app.send_task(step.task, args=[job.id], queue=step.queue, retry=False)
    except Exception as exc:
        reason = f"broker unavailable: {exc}"
        with session_scope() as session:
            jobs.mark_job_failed(session, job.id, reason)
        fail_run(job.run_id, f"step {job.kind} could not be queued: {reason}")
        raise unavailable(f"the job queue is unavailable ({exc}); resume the run when it is back") from exc


def advance_run(run_id: str) -> Job | None:
    """Called when a step's job succeeded: start the next step."""
    from labelfree.core.db import session_scope

    with session_scope() as session:
        _run, job = next_step(session, run_id)
        job_snapshot = job
    if job_snapshot is not None:
        send_step(job_snapshot)
    return job_snapshot


def end_run(session: Session, run_id: str, reason: str, state: JobState = JobState.FAILED) -> None:
    """Mark an unfinished run failed or cancelled with the reason (a finished one stays as it is)."""
    run = _lock_run(session, run_id)
    if not JobState(run.state).is_terminal():
        run.state = state.value
        run.error = reason
        run.finished_at = utcnow()


def fail_run(run_id: str, reason: str, state: JobState = JobState.FAILED) -> None:
    from labelfree.core.db import session_scope

    with session_scope() as session:
        end_run(session, run_id, reason, state)


def resume_run(session: Session, run_id: str) -> tuple[Run, Job | None]:
    """Continue a failed or cancelled run from its first unfinished step."""
    run = _lock_run(session, run_id)
    if run.state == JobState.SUCCEEDED.value:
        raise LabelfreeError("conflict", f"run {run_id} already succeeded; nothing to resume")
    latest = step_jobs(session, run_id)
    for name in STEP_NAMES:
        job = latest.get(name)
        if job is None or job.state != JobState.SUCCEEDED.value:
            break
    run.state = JobState.RUNNING.value
    run.error = None
    run.finished_at = None
    if job is not None and job.state in (JobState.FAILED.value, JobState.CANCELLED.value):
        jobs.mark_job_requeued(session, job.id)
        run.current_step = name
        return run, job
    if job is not None and job.state == JobState.RUNNING.value:
        from labelfree.core.settings import get_settings

        lease = get_settings().job_lease_seconds
        if jobs.lease_expired(job, lease):
            # Its worker died mid-step. Waiting for the broker is not enough: kombu's SQLAlchemy
            # broker (embedded) never redelivers a fetched message (it stays invisible), and Redis
            # gives it back only after the visibility timeout (an hour by default). Send it again; a late
            # redelivery finds the job taken or finished and does nothing.
            jobs.mark_job_abandoned(session, job.id, lease)
        run.current_step = name
        return run, job
    if job is not None and job.state == JobState.QUEUED.value:
        run.current_step = name
        return run, job  # the API sends it again: a queued job's message may have been lost
    return next_step(session, run_id)


def run_to_dict(session: Session, run: Run) -> dict:
    latest = step_jobs(session, run.id)
    steps = []
    for name in STEP_NAMES:
        job = latest.get(name)
        steps.append({"step": name, "job_id": job.id if job else None, "state": job.state if job else "pending",
                      "progress": job.progress if job else 0.0, "error": job.error if job else None,
                      "inputs": job.inputs if job else None, "result": job.result if job else None,
                      "started_at": job.started_at.isoformat() if job and job.started_at else None,
                      "finished_at": job.finished_at.isoformat() if job and job.finished_at else None})
    return {"id": run.id, "project_id": run.project_id, "state": run.state, "current_step": run.current_step,
            "error": run.error, "params": run.params, "steps": steps,
            "created_at": run.created_at.isoformat() if run.created_at else None}
