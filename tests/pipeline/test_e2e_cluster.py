"""End to end on the cluster profile: Postgres, Redis, real Celery workers, Spark local[2] for
the explain step, and a real Triton server (pytriton) serving the version the run deployed."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import free_port
from tests.pipeline.conftest import assert_run_succeeded_with_inputs, project_body, wait_for_run

pytestmark = pytest.mark.service

ALL_QUEUES = "ingest,train,explain,detect"


@pytest.fixture
def ingest_client():
    from labelfree.ingest.api import app

    return TestClient(app)


def test_cluster_run_from_folders_ends_served_by_triton(tmp_path, image_set, workers, ingest_client, configure):
    from labelfree.inference import triton_launcher

    triton_launcher.venv_python()  # the setup command, not a skip, when .venv-triton is missing
    repository = tmp_path / "triton-repository"
    workers.start(ALL_QUEUES, env={"LABELFREE_TRITON_REPOSITORY": str(repository)}, wait=90)

    response = ingest_client.post("/v1/projects", json=project_body(image_set))
    assert response.status_code == 202, response.text
    run = wait_for_run(ingest_client, response.json()["run_id"], timeout=420)
    steps = assert_run_succeeded_with_inputs(run)
    assert steps["ingest"]["result"]["images"] == 36
    assert steps["explain"]["result"]["boxes"] >= 1

    deploy = steps["deploy"]["result"]
    version = deploy["triton_version"]
    assert version == 1 and deploy["triton_repository"] == str(repository)
    served = repository / "labelfree_detector" / str(version)
    assert (served / "model.onnx").is_file()

    grpc_port = free_port()
    log_path = tmp_path / "triton.log"
    proc = triton_launcher.start(served, grpc_port=grpc_port, http_port=free_port(), metrics_port=free_port(),
                                 log_path=log_path, version=version)
    try:
        triton_launcher.wait_ready(f"127.0.0.1:{grpc_port}", "labelfree_detector", timeout=180, proc=proc,
                                   log_path=log_path)
        configure(inference_backend="triton", triton_url=f"127.0.0.1:{grpc_port}", triton_model_version=version)
        from labelfree.inference.api import app

        buf = io.BytesIO()
        Image.open(image_set / "pos" / "p000.jpg").save(buf, format="JPEG")
        answer = TestClient(app).post("/v1/detect?threshold=0", content=buf.getvalue(),
                                      headers={"content-type": "image/jpeg"})
    finally:
        triton_launcher.stop(proc)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["backend"] == "triton"
    entry = body["image"]
    assert entry["file"] == "image" and entry.get("failure") is None
    assert entry["detections"], "threshold 0 keeps every one of the top-K boxes"
    for det in entry["detections"]:
        assert det["category"] in body["detection_categories"]
        x, y, w, h = det["bbox"]
        assert 0 <= x <= 1 and 0 <= y <= 1 and 0 <= w <= 1 and 0 <= h <= 1
