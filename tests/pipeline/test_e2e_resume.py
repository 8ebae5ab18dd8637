"""A worker SIGKILLed in the middle of the explain step: ``POST /v1/runs/{id}/resume`` finishes
the run, reusing what the earlier steps produced and deleting nothing.

The crash test is also CI's cluster end-to-end run: Postgres, Redis, real workers, Spark
local[2], and at the end a real Triton server (pytriton) serving the deployed version.
"""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from labelfree.core.db import session_scope
from labelfree.core.models import Image, Job, Model
from labelfree.core.store import get_store
from tests.pipeline.conftest import (
    assert_megadetector_entry,
    assert_run_succeeded_with_inputs,
    detect_through_triton,
    project_body,
    wait_for_run,
)

pytestmark = pytest.mark.service

# A short lease, so a dead worker's job counts as abandoned within seconds. The broker keeps
# its default visibility timeout (an hour): the run must recover through resume, not redelivery.
LEASE = {"LABELFREE_JOB_LEASE_SECONDS": "4"}


def _step(run: dict, name: str) -> dict:
    return next(s for s in run["steps"] if s["step"] == name)


def _explaining(run: dict) -> bool:
    step = _step(run, "explain")
    # 0.05: the model is fetched and the Spark job is under way
    return run["state"] != "running" or (step["state"] == "running" and step["progress"] >= 0.05)


def test_worker_killed_mid_explain_then_resume_finishes_the_run_reusing_earlier_steps(
        tmp_path, image_set, workers, configure):
    from labelfree.inference import triton_launcher
    from labelfree.ingest.api import app

    triton_launcher.venv_python()  # the setup command, not a skip, when .venv-triton is missing
    configure(job_lease_seconds=LEASE["LABELFREE_JOB_LEASE_SECONDS"])
    api = TestClient(app)
    repository = tmp_path / "triton-repository"
    workers.start("ingest,train,detect", env={"LABELFREE_TRITON_REPOSITORY": str(repository)}, wait=90)
    explainer = workers.start("explain", env=LEASE, wait=90)
    response = api.post("/v1/projects", json=project_body(image_set))
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]

    run = wait_for_run(api, run_id, timeout=240, until=_explaining, poll=0.2)
    assert run["state"] == "running", run
    time.sleep(3)  # into the Spark job's partitions
    workers.kill(explainer)  # SIGKILL to its process group: no ack, no requeue, no state written

    before = wait_for_run(api, run_id, timeout=5, until=lambda r: True)
    explain_job = _step(before, "explain")
    assert before["state"] == "running" and explain_job["state"] == "running"
    assert explain_job["progress"] < 0.9  # killed inside the Spark job, before any box was written
    earlier = {name: _step(before, name) for name in ("ingest", "train")}
    dataset_id = earlier["ingest"]["result"]["dataset_id"]
    classifier_id = earlier["train"]["result"]["model_id"]
    store = get_store()
    with session_scope() as s:
        images_before = s.scalar(select(func.count()).select_from(Image).where(Image.dataset_id == dataset_id))
        classifier_prefix = s.get(Model, classifier_id).store_prefix
    classifier_files = sorted(store.list(classifier_prefix))
    assert images_before == 36 and classifier_files

    time.sleep(int(LEASE["LABELFREE_JOB_LEASE_SECONDS"]) + 1)  # the dead worker's lease runs out
    resumed = api.post(f"/v1/runs/{run_id}/resume")
    assert resumed.status_code == 202, resumed.text
    assert resumed.json()["job_id"] == explain_job["job_id"]
    workers.start("explain", env=LEASE, wait=90)
    run = wait_for_run(api, run_id, timeout=300)
    steps = assert_run_succeeded_with_inputs(run)

    # The earlier steps were not re-run: same jobs, one attempt each, untouched results.
    for name, step in earlier.items():
        assert steps[name]["job_id"] == step["job_id"]
        assert steps[name]["finished_at"] == step["finished_at"] and steps[name]["result"] == step["result"]
    assert steps["explain"]["job_id"] == explain_job["job_id"]
    with session_scope() as s:
        rows = s.execute(select(Job.kind, Job.attempts).where(Job.run_id == run_id)).all()
        assert sorted(kind for kind, _ in rows) == sorted(steps)  # one job per step, none duplicated
        attempts = dict(rows)
        assert attempts["ingest"] == attempts["train"] == 1 and attempts["explain"] == 2
        # Nothing produced before the crash was deleted.
        assert s.scalar(select(func.count()).select_from(Image).where(Image.dataset_id == dataset_id)) == images_before
        assert s.get(Model, classifier_id) is not None
    assert sorted(store.list(classifier_prefix)) == classifier_files
    assert steps["explain"]["result"]["classifier_model_id"] == classifier_id
    # The explain step kept its evidence: an overlay PNG per labelled photo and the fitted foreground model.
    explained = steps["explain"]["result"]
    overlays = sorted(store.list(explained["overlays_prefix"]))
    assert len(overlays) == explained["images"] and store.get(overlays[0]).startswith(b"\x89PNG")
    assert len(json.loads(store.get(explained["foreground_key"]))["coef"]) > 0

    # The deployed version answers through a real Triton server.
    version = steps["deploy"]["result"]["triton_version"]
    assert version == 1
    body = detect_through_triton(repository / "labelfree_detector" / str(version), version,
                                 image_set / "pos" / "p000.jpg", configure, tmp_path / "triton.log")
    assert_megadetector_entry(body, "triton", steps["deploy"]["result"]["model_id"])


def _queued_messages(queue: str) -> int:
    import redis

    from labelfree.core.settings import get_settings

    return redis.Redis.from_url(get_settings().broker_url).llen(queue)


def test_resume_resends_a_step_whose_worker_stopped_beating_and_leaves_a_live_one_alone(configure):
    """The cheap check of the rule the crash test relies on: only an expired lease means a dead worker."""
    from datetime import timedelta

    from labelfree.core import jobs, runs
    from labelfree.core.models import utcnow
    from labelfree.ingest.api import app

    configure(job_lease_seconds=60)
    api = TestClient(app)
    with session_scope() as s:
        run_id = runs.create_run(s, "resume rule", {"ingest": {"provider": "dir"}}).id
        job_id = runs.next_step(s, run_id)[1].id
        jobs.mark_job_running(s, job_id, worker="elsewhere:1", lease_seconds=60)
    try:
        sent = _queued_messages("ingest")
        live = api.post(f"/v1/runs/{run_id}/resume")
        assert live.status_code == 202 and live.json()["job_id"] == job_id
        with session_scope() as s:
            assert s.get(Job, job_id).state == "running"
        assert _queued_messages("ingest") == sent  # a live worker holds it: nothing sent

        with session_scope() as s:
            s.get(Job, job_id).heartbeat_at = utcnow() - timedelta(seconds=61)
        dead = api.post(f"/v1/runs/{run_id}/resume")
        assert dead.status_code == 202 and dead.json() == {"run_id": run_id, "state": "running", "job_id": job_id}
        with session_scope() as s:
            job = s.get(Job, job_id)
            assert job.state == "queued" and job.attempts == 1 and "stopped beating" in job.error
        assert _queued_messages("ingest") == sent + 1
    finally:
        with session_scope() as s:  # a later ingest worker finds it cancelled and skips it
            if not jobs.JobState(s.get(Job, job_id).state).is_terminal():
                jobs.request_cancel(s, job_id)


def test_cancelling_a_queued_step_ends_its_run_and_resume_sends_it_again(configure):
    from labelfree.core import jobs, runs
    from labelfree.ingest.api import app

    api = TestClient(app)
    with session_scope() as s:
        run_id = runs.create_run(s, "cancel rule", {"ingest": {"provider": "dir"}}).id
        job_id = runs.next_step(s, run_id)[1].id
    try:
        cancelled = api.post(f"/v1/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        run = api.get(f"/v1/runs/{run_id}").json()
        assert run["state"] == "cancelled" and run["error"] == "step ingest: cancelled on request"

        sent = _queued_messages("ingest")
        resumed = api.post(f"/v1/runs/{run_id}/resume")
        assert resumed.status_code == 202 and resumed.json() == {"run_id": run_id, "state": "running",
                                                                 "job_id": job_id}
        assert api.get(f"/v1/jobs/{job_id}").json()["state"] == "queued"
        assert _queued_messages("ingest") == sent + 1
    finally:
        with session_scope() as s:  # a later ingest worker finds it cancelled and skips it
            if not jobs.JobState(s.get(Job, job_id).state).is_terminal():
                jobs.request_cancel(s, job_id)


def test_a_redelivered_step_that_had_succeeded_starts_the_next_step_once():
    """A worker killed between recording success and writing the next step: the broker's
    redelivery of the finished step moves the run on, and a second one changes nothing."""
    from labelfree.core import jobs, runs
    from labelfree.ingest.tasks import build_dataset_task

    with session_scope() as s:
        run_id = runs.create_run(s, "redelivery rule", {"ingest": {"provider": "dir"}}).id
        job_id = runs.next_step(s, run_id)[1].id
        jobs.mark_job_running(s, job_id, worker="gone:1")
        jobs.mark_job_succeeded(s, job_id, {"dataset_id": s.get(Job, job_id).params["dataset_id"]})
    train_id = None
    try:
        sent = _queued_messages("train")
        for _ in range(2):  # the redelivery, then a duplicate of it
            assert build_dataset_task.apply(args=[job_id]).get() == {"skipped": "succeeded"}
        with session_scope() as s:
            steps = runs.step_jobs(s, run_id)
            assert sorted(steps) == ["ingest", "train"]
            train_id = steps["train"].id
            assert steps["train"].state == "queued" and steps["train"].inputs["ingest_job"] == job_id
            assert s.scalar(select(func.count()).select_from(Job).where(Job.run_id == run_id)) == 2
        assert _queued_messages("train") == sent + 1
    finally:
        if train_id:
            with session_scope() as s:
                jobs.request_cancel(s, train_id)


@pytest.fixture
def broker_down():
    """The Celery app's broker pointed at a port nothing listens on (a real refused connection),
    then back at the real broker."""
    from labelfree.core.celery_app import celery_app
    from tests.conftest import free_port

    def repoint(url: str) -> None:  # new pools on next use (kombu keeps the old ones for their URL)
        celery_app._pool = None
        celery_app.amqp._producer_pool = None
        celery_app.conf.broker_url = url

    real = celery_app.conf.broker_url
    repoint(f"redis://127.0.0.1:{free_port()}/0")
    yield lambda: repoint(real)
    repoint(real)


def test_a_run_started_while_the_broker_is_down_fails_with_503_and_resumes_when_it_is_back(broker_down):
    from labelfree.ingest.api import app

    api = TestClient(app)
    down = api.post("/v1/projects", json={"query": "broker down", "provider": "openverse"})
    assert down.status_code == 503 and down.headers["retry-after"]
    assert "job queue is unavailable" in down.json()["error"]["detail"]
    with session_scope() as s:
        from labelfree.core.models import Run

        run = s.scalars(select(Run).order_by(Run.created_at.desc())).first()
        assert run.state == "failed" and "could not be queued" in run.error
        run_id = run.id
    broker_down()  # the broker is back
    sent = _queued_messages("ingest")
    resumed = api.post(f"/v1/runs/{run_id}/resume")
    assert resumed.status_code == 202 and resumed.json()["state"] == "running", resumed.text
    assert _queued_messages("ingest") == sent + 1
    with session_scope() as s:  # a later ingest worker finds it cancelled and skips it
        from labelfree.core import jobs

        jobs.request_cancel(s, resumed.json()["job_id"])
