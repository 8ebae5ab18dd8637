"""End to end on the cluster profile: Postgres, Redis, real Celery workers, Spark local[2] for
the explain step, and a real Triton server (pytriton) serving the version the run deployed.

The uninterrupted run is in the bench suite (``slow``); CI runs the same pipeline with a
worker killed mid-explain and a resume (``test_e2e_resume.py``), which ends the same way.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.pipeline.conftest import (
    assert_megadetector_entry,
    assert_run_succeeded_with_inputs,
    detect_through_triton,
    project_body,
    wait_for_run,
)

pytestmark = [pytest.mark.service, pytest.mark.slow]


def test_cluster_run_from_folders_ends_served_by_triton(tmp_path, image_set, workers, configure):
    from labelfree.inference import triton_launcher
    from labelfree.ingest.api import app

    triton_launcher.venv_python()  # the setup command, not a skip, when .venv-triton is missing
    repository = tmp_path / "triton-repository"
    workers.start("ingest,train,explain,detect", env={"LABELFREE_TRITON_REPOSITORY": str(repository)}, wait=90)
    api = TestClient(app)

    response = api.post("/v1/projects", json=project_body(image_set))
    assert response.status_code == 202, response.text
    run = wait_for_run(api, response.json()["run_id"], timeout=420)
    steps = assert_run_succeeded_with_inputs(run)
    assert steps["ingest"]["result"]["images"] == 36
    assert steps["explain"]["result"]["boxes"] >= 1

    deploy = steps["deploy"]["result"]
    assert deploy["triton_version"] == 1 and deploy["triton_repository"] == str(repository)
    served = repository / "labelfree_detector" / "1"
    body = detect_through_triton(served, 1, image_set / "pos" / "p000.jpg", configure, tmp_path / "triton.log")
    assert_megadetector_entry(body, "triton", steps["deploy"]["result"]["model_id"])
