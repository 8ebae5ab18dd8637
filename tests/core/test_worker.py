"""Real worker processes on the real Redis broker and Postgres job table."""

import time

import pytest

from labelfree.core.builtin_tasks import PROBE_TASKS
from labelfree.core.celery_app import QUEUE_TRAIN, enqueue
from labelfree.core.db import session_scope
from labelfree.core.models import Job
from tests.factories import make_job, wait_for_job

pytestmark = pytest.mark.service

FAST_TAKEOVER = {"LABELFREE_JOB_LEASE_SECONDS": "3", "LABELFREE_BROKER_VISIBILITY_TIMEOUT": "4",
                 "LABELFREE_BROKER_RESTORE_INTERVAL": "1"}


def test_job_runs_on_a_real_worker_and_reports_progress(workers):
    workers.start(QUEUE_TRAIN)
    job_id = make_job(params={"steps": 3, "step_seconds": 0.1})
    enqueue(PROBE_TASKS[QUEUE_TRAIN], job_id)
    job = wait_for_job(job_id, timeout=60)
    assert job.state == "succeeded" and job.progress == 1.0 and job.result == {"steps": 3}
    assert job.celery_task_id


def test_failure_is_recorded_with_reason_and_traceback(workers):
    workers.start(QUEUE_TRAIN)
    job_id = make_job(params={"steps": 1, "fail": "no good"})
    enqueue(PROBE_TASKS[QUEUE_TRAIN], job_id)
    job = wait_for_job(job_id, timeout=60)
    assert job.state == "failed" and "no good" in job.error and "RuntimeError" in job.traceback


def test_two_workers_racing_for_one_job_run_it_exactly_once(workers):
    job_id = make_job(params={"steps": 6, "step_seconds": 0.3})
    task = PROBE_TASKS[QUEUE_TRAIN]
    task.apply_async(args=[job_id], queue=QUEUE_TRAIN)  # the same job delivered twice
    task.apply_async(args=[job_id], queue=QUEUE_TRAIN)
    workers.start(QUEUE_TRAIN)
    workers.start(QUEUE_TRAIN)
    job = wait_for_job(job_id, timeout=60)
    assert job.state == "succeeded"
    assert job.attempts == 1


def test_worker_killed_mid_task_leaves_the_job_retried_not_lost(workers):
    first = workers.start(QUEUE_TRAIN, env=FAST_TAKEOVER)
    job_id = make_job(params={"steps": 40, "step_seconds": 0.25})
    enqueue(PROBE_TASKS[QUEUE_TRAIN], job_id)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with session_scope() as s:
            job = s.get(Job, job_id)
            if job.state == "running" and job.progress > 0.1:
                break
        time.sleep(0.1)
    else:
        pytest.fail("job never started running")
    workers.kill(first)  # SIGKILL: no chance to ack, requeue or mark anything
    with session_scope() as s:
        assert s.get(Job, job_id).state == "running"
    workers.start(QUEUE_TRAIN, env=FAST_TAKEOVER)
    job = wait_for_job(job_id, timeout=120)
    assert job.state == "succeeded"
    assert job.attempts == 2
