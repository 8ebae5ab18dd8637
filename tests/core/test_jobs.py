import itertools

import pytest

from labelfree.core import jobs
from labelfree.core.db import session_scope
from labelfree.core.jobs import IllegalTransition, JobBusy, JobState
from tests.factories import make_job

TRANSITIONS = {
    JobState.RUNNING: lambda s, j: jobs.mark_job_running(s, j, worker="t"),
    JobState.SUCCEEDED: lambda s, j: jobs.mark_job_succeeded(s, j, {"ok": 1}),
    JobState.FAILED: lambda s, j: jobs.mark_job_failed(s, j, "boom", "tb"),
    JobState.CANCELLED: lambda s, j: jobs.mark_job_cancelled(s, j),
    JobState.QUEUED: lambda s, j: jobs.mark_job_requeued(s, j),
}


def _job_in(state: JobState) -> str:
    job_id = make_job()
    with session_scope() as s:
        row = jobs.get_job(s, job_id)
        row.state = state.value
        if state == JobState.RUNNING:
            row.heartbeat_at = jobs.utcnow()  # a live worker holds it
    return job_id


@pytest.mark.parametrize("source,target", list(itertools.product(JobState, JobState)))
def test_every_transition_is_legal_or_refused(source, target):
    job_id = _job_in(source)
    legal = target in jobs.LEGAL[source]
    with session_scope() as s:
        if legal:
            TRANSITIONS[target](s, job_id)
        else:
            with pytest.raises((IllegalTransition, JobBusy)):
                TRANSITIONS[target](s, job_id)
    with session_scope() as s:
        assert jobs.get_job(s, job_id).state == (target if legal else source).value


def test_terminal_states_are_terminal():
    assert {s for s in JobState if s.is_terminal()} == {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


def test_running_job_with_fresh_heartbeat_is_not_taken_over():
    job_id = make_job()
    with session_scope() as s:
        jobs.mark_job_running(s, job_id, worker="a")
    with session_scope() as s, pytest.raises(JobBusy):
        jobs.mark_job_running(s, job_id, worker="b", lease_seconds=60)


def test_running_job_with_stale_heartbeat_is_taken_over_and_counts_an_attempt():
    job_id = make_job()
    with session_scope() as s:
        jobs.mark_job_running(s, job_id, worker="a")
    with session_scope() as s:
        job = jobs.mark_job_running(s, job_id, worker="b", lease_seconds=0)
        assert job.worker == "b" and job.attempts == 2


def test_cancel_of_queued_job_is_immediate_and_of_running_job_is_requested():
    queued = make_job()
    running = make_job()
    with session_scope() as s:
        jobs.mark_job_running(s, running, worker="a")
    with session_scope() as s:
        assert jobs.request_cancel(s, queued).state == "cancelled"
        job = jobs.request_cancel(s, running)
        assert job.state == "running" and job.cancel_requested


def test_progress_outside_unit_interval_is_rejected():
    job_id = make_job()
    with session_scope() as s:
        jobs.mark_job_running(s, job_id, worker="a")
    with session_scope() as s, pytest.raises(ValueError, match="1.5"):
        jobs.set_progress(s, job_id, 1.5)


def test_unknown_kind_is_rejected():
    with session_scope() as s, pytest.raises(ValueError):
        jobs.create_job(s, "nonsense")
