"""End-to-end fixtures: a small synthetic image set whose answer is known, cheap step options,
and helpers that follow a run through the projects API."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# The inference app starts gRPC beside REST on LABELFREE_GRPC_PORT when its lifespan runs;
# these tests call it through TestClient without a lifespan, but keep it off regardless.
os.environ["LABELFREE_GRPC_PORT"] = "0"

N_POSITIVE = 20
N_NEGATIVE = 16
SIZE = 128

# Per-step options that make every step cheap (seconds, not minutes) on 2 CPU cores:
# the explainer's default method, a 64 px detector trained for a few steps without
# augmentation or a self-training round.
CHEAP_OPTIONS = {
    "detector": {"self_train_rounds": 0,
                 "config": {"input_size": 64, "epochs": 1, "batch_size": 8, "top_k": 16, "max_steps": 4,
                            "augment": False, "amp": False, "device": "cpu", "val_fraction": 0.2,
                            "threads": 2}},
}
STEPS = ("ingest", "train", "explain", "train_detector", "deploy")


def _background(rng: np.random.Generator) -> np.ndarray:
    """A smooth random colour field plus grain: (SIZE, SIZE, 3) uint8, distinct per call."""
    coarse = rng.integers(20, 200, (4, 4, 3)).astype(np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((SIZE, SIZE), Image.BICUBIC), np.int16)
    grain = rng.integers(-12, 12, field.shape)
    return np.clip(field + grain, 0, 255).astype(np.uint8)


def _draw_object(image: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    """A distinctive object (a yellow disc with a black ring and a red core) at a random place;
    returns (cx, cy, radius) in pixels."""
    radius = int(rng.integers(18, 30))
    cx, cy = (int(rng.integers(radius, SIZE - radius)) for _ in range(2))
    yy, xx = np.mgrid[:SIZE, :SIZE]
    d = np.hypot(xx - cx, yy - cy)
    image[d <= radius] = (10, 10, 10)
    image[d <= radius - 3] = (250, 220, 20)
    image[d <= radius / 3] = (220, 20, 20)
    return cx, cy, radius


def write_image_set(root: Path, *, seed: int = 0, n_pos: int = N_POSITIVE, n_neg: int = N_NEGATIVE) -> dict:
    """``root/pos`` (object at a random place) and ``root/neg`` (backgrounds only), as JPEGs."""
    rng = np.random.default_rng(seed)
    (root / "pos").mkdir(parents=True)
    (root / "neg").mkdir(parents=True)
    objects = {}
    for i in range(n_pos):
        image = _background(rng)
        objects[f"p{i:03d}.jpg"] = _draw_object(image, rng)
        Image.fromarray(image).save(root / "pos" / f"p{i:03d}.jpg", quality=92)
    for i in range(n_neg):
        Image.fromarray(_background(rng)).save(root / "neg" / f"n{i:03d}.jpg", quality=92)
    return objects


@pytest.fixture
def image_set(tmp_path) -> Path:
    root = tmp_path / "images"
    write_image_set(root)
    return root


def project_body(image_set: Path, query: str = "yellow disc", **extra) -> dict:
    return {"query": query, "provider": "dir", "pos_dirs": [str(image_set / "pos")],
            "neg_dirs": [str(image_set / "neg")], "options": CHEAP_OPTIONS, **extra}


def wait_for_run(client, run_id: str, *, timeout: float, until=("succeeded", "failed", "cancelled"),
                 poll: float = 0.5) -> dict:
    """Poll ``GET /v1/runs/{id}`` until ``until(run)`` (a callable) or a state in ``until``."""
    deadline = time.monotonic() + timeout
    run = None
    while time.monotonic() < deadline:
        response = client.get(f"/v1/runs/{run_id}")
        assert response.status_code == 200, response.text
        run = response.json()
        if (until(run) if callable(until) else run["state"] in until):
            return run
        time.sleep(poll)
    raise TimeoutError(f"run {run_id} not done after {timeout}s: {run}")


def assert_run_succeeded_with_inputs(run: dict) -> dict[str, dict]:
    """Every step succeeded and records the ids it consumed; returns the steps by name."""
    assert run["state"] == "succeeded", run
    steps = {s["step"]: s for s in run["steps"]}
    assert list(steps) == list(STEPS)
    for name, step in steps.items():
        assert step["state"] == "succeeded", (name, step)
    ingest, train, explain, detector, deploy = (steps[n] for n in STEPS)
    dataset_id = ingest["result"]["dataset_id"]
    assert ingest["inputs"] == {"project_id": run["project_id"]}
    assert train["inputs"] == {"ingest_job": ingest["job_id"], "dataset_id": dataset_id}
    classifier_id = train["result"]["model_id"]
    assert explain["inputs"] == {"train_job": train["job_id"], "dataset_id": dataset_id,
                                 "classifier_id": classifier_id}
    assert detector["inputs"] == {"explain_job": explain["job_id"], "classifier_id": classifier_id}
    assert deploy["inputs"] == {"detector_job": detector["job_id"], "detector_id": detector["result"]["model_id"]}
    assert deploy["result"]["model_id"] == detector["result"]["model_id"]
    return steps


@pytest.fixture
def configure(monkeypatch):
    """Point Settings at a backend for one test; resets cached settings and the served detector."""
    from labelfree.core.settings import reset_settings
    from labelfree.inference.runtime import reset_detector

    def apply(**env):
        for key, value in env.items():
            monkeypatch.setenv(f"LABELFREE_{key.upper()}", str(value))
        reset_settings()
        reset_detector()

    yield apply
    monkeypatch.undo()
    reset_settings()
    reset_detector()


def detect_through_triton(served_dir: Path, version: int, image: Path, configure, log_path: Path) -> dict:
    """Serve ``served_dir`` (a deployed ``<repository>/<name>/<version>``) with a real Triton server
    (pytriton) as ``version``; POST ``image`` to the inference service pinned to that version.
    Returns the response body (asserts 200)."""
    from fastapi.testclient import TestClient

    from labelfree.inference import triton_launcher
    from tests.conftest import free_port

    grpc_port = free_port()
    proc = triton_launcher.start(served_dir, grpc_port=grpc_port, http_port=free_port(), metrics_port=free_port(),
                                 log_path=log_path, version=version)
    try:
        triton_launcher.wait_ready(f"127.0.0.1:{grpc_port}", "labelfree_detector", timeout=180, proc=proc,
                                   log_path=log_path)
        configure(inference_backend="triton", triton_url=f"127.0.0.1:{grpc_port}", triton_model_version=version)
        from labelfree.inference.api import app

        buf = io.BytesIO()
        Image.open(image).save(buf, format="JPEG")
        answer = TestClient(app).post("/v1/detect?threshold=0", content=buf.getvalue(),
                                      headers={"content-type": "image/jpeg"})
    finally:
        triton_launcher.stop(proc)
    assert answer.status_code == 200, answer.text
    return answer.json()


def assert_megadetector_entry(body: dict, backend: str, model_id: str, concept: str = "yellow disc") -> None:
    """One MegaDetector ``images[]`` entry with detections (threshold 0 keeps all top-K boxes)
    from the deployed model ``model_id``, whose one category is the concept."""
    assert body["backend"] == backend
    # the registry's deployed detector, materialised under its model id, described the answer
    assert body["detector"] == model_id, body["detector"]
    assert body["detection_categories"] == {"1": concept}, body["detection_categories"]
    entry = body["image"]
    assert entry.get("failure") is None and entry["detections"], entry
    for det in entry["detections"]:
        assert det["category"] in body["detection_categories"]
        assert 0 <= det["conf"] <= 1
        x, y, w, h = det["bbox"]
        assert 0 <= x <= 1 and 0 <= y <= 1 and 0 <= w <= 1 and 0 <= h <= 1
