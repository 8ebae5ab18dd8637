"""POST /v1/detectors -> 202 + job; the train task registers a detector model with its files."""

import json
import uuid

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.service


@pytest.fixture
def client():
    from labelfree.core.app import create_app
    from labelfree.trainer.detector.api import router

    return TestClient(create_app("trainer-detector-test", [router]))


def _explain_job(result: dict | None, state: str = "succeeded", kind: str = "explain") -> str:
    from labelfree.core import jobs
    from labelfree.core.db import session_scope

    with session_scope() as s:
        job = jobs.create_job(s, kind, {})
        job.state, job.result = state, result
        return job.id


def test_post_detectors_rejects_bad_explain_jobs(client):
    missing = client.post("/v1/detectors", json={"explain_job_id": str(uuid.uuid4())})
    assert missing.status_code == 404
    wrong_kind = client.post("/v1/detectors", json={"explain_job_id": _explain_job({"boxes_key": "b"}, kind="noop")})
    assert wrong_kind.status_code == 422 and "not an explain job" in wrong_kind.text
    running = client.post("/v1/detectors", json={"explain_job_id": _explain_job(None, state="running")})
    assert running.status_code == 409
    no_boxes = client.post("/v1/detectors", json={"explain_job_id": _explain_job({})})
    assert no_boxes.status_code == 422 and "boxes_key" in no_boxes.text
    bad_size = client.post("/v1/detectors", json={"explain_job_id": _explain_job({"boxes_key": "b"}),
                                                  "config": {"input_size": 100}})
    assert bad_size.status_code == 422
    bad_paste = client.post("/v1/detectors", json={"explain_job_id": _explain_job({"boxes_key": "b"}),
                                                   "config": {"paste": 1.5}})
    assert bad_paste.status_code == 422 and "paste" in bad_paste.text
    bad_paste_max = client.post("/v1/detectors", json={"explain_job_id": _explain_job({"boxes_key": "b"}),
                                                       "config": {"paste_max": 0}})
    assert bad_paste_max.status_code == 422 and "paste_max" in bad_paste_max.text
    bad_repeat = client.post("/v1/detectors", json={"explain_job_id": _explain_job({"boxes_key": "b"}),
                                                    "config": {"group_repeat": 0}})
    assert bad_repeat.status_code == 422 and "group_repeat" in bad_repeat.text
    bad_ema = client.post("/v1/detectors", json={"explain_job_id": _explain_job({"boxes_key": "b"}),
                                                 "config": {"ema": 1.0}})
    assert bad_ema.status_code == 422 and "ema" in bad_ema.text
    bad_keep = client.post("/v1/detectors", json={"explain_job_id": _explain_job({"boxes_key": "b"}),
                                                  "config": {"keep": "middle"}})
    assert bad_keep.status_code == 422 and "keep" in bad_keep.text
    bad_hard = client.post("/v1/detectors", json={"explain_job_id": _explain_job({"boxes_key": "b"}),
                                                  "hard_negatives": -1})
    assert bad_hard.status_code == 422 and "hard_negatives" in bad_hard.text
    bad_share = client.post("/v1/detectors", json={"explain_job_id": _explain_job({"boxes_key": "b"}),
                                                   "config": {"neg_fraction": 1.0}})
    assert bad_share.status_code == 422 and "neg_fraction" in bad_share.text


def test_post_detectors_queues_a_job_and_the_task_registers_the_model(client, synthetic, monkeypatch):
    from labelfree.core.db import session_scope
    from labelfree.core.models import Job, Model
    from labelfree.core.store import get_store
    from labelfree.trainer.detector import tasks

    store = get_store()
    boxes_key = store.put_bytes(synthetic["boxes"].read_bytes(), ".json", prefix="boxes")
    explain_id = _explain_job({"boxes_key": boxes_key, "images_dir": str(synthetic["images"])})
    sent = []
    monkeypatch.setattr("labelfree.core.celery_app.enqueue", lambda task, job_id: sent.append((task, job_id)))
    resp = client.post("/v1/detectors", json={"explain_job_id": explain_id, "name": "blobs", "soft_candidates": True,
                                              "calibrate": False,
                                              "config": {"epochs": 1, "min_steps": 0, "input_size": 96, "batch_size": 4,
                                                         "paste": 0.5}})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["job_id"]
    assert sent == [(tasks.train_detector_job, job_id)]

    tasks.train_detector_job.apply(args=[job_id])  # runs the real task body in-process
    with session_scope() as s:
        job = s.get(Job, job_id)
        assert job.state == "succeeded", job.error
        model = s.get(Model, job.result["model_id"])
        assert model.kind == "detector" and model.job_id == job_id and model.name == "blobs"
        assert model.manifest["training"]["provenance"]["explain_job_id"] == explain_id
        assert model.manifest["training"]["soft_candidates"] is True
        assert model.manifest["training"]["score_calibration"] == {"fitted": False, "reason": "turned off"}
        assert model.manifest["training"]["config"]["paste"] == 0.5
        host = model.manifest["training"]["host"]  # what the floats depend on besides code, data and seed
        assert host["torch_threads"] >= 1 and host["torch"] and host["onnxruntime"]
        coco_names = {im["file_name"] for im in json.loads(synthetic["boxes"].read_text())["images"]}
        held_out = model.manifest["training"]["val_positives"]
        assert held_out and set(held_out) <= coco_names  # the split, by the names a report looks up
        prefix = model.store_prefix
    keys = set(store.list(prefix))
    assert {f"{prefix}/model.onnx", f"{prefix}/manifest.json",
            f"{prefix}/triton/labelfree_detector/config.pbtxt",
            f"{prefix}/triton/labelfree_detector/1/model.onnx"} <= keys
    assert not any("/checkpoints/" in k for k in keys)
    assert json.loads(store.get(f"{prefix}/manifest.json"))["kind"] == "detector"
    got = client.get(f"/v1/detectors/{model.id}")
    assert got.status_code == 200 and got.json()["manifest"]["input_size"] == 96


def test_the_task_trains_on_the_datasets_negative_images(synthetic):
    """An explain run of a dataset: its negative search results are the detector's backgrounds."""
    import hashlib

    import numpy as np
    from PIL import Image as PILImage

    from labelfree.core import jobs
    from labelfree.core.db import session_scope
    from labelfree.core.models import Dataset, Image, Job, Model
    from labelfree.core.store import get_store
    from labelfree.trainer.detector import tasks

    store = get_store()
    rng = np.random.default_rng(7)
    with session_scope() as s:
        dataset = Dataset(query="blobs", provider="dir")
        s.add(dataset)
        s.flush()
        for k in range(5):
            path = synthetic["root"] / f"background_{k}.png"
            PILImage.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(path)
            data = path.read_bytes()
            s.add(Image(sha256=hashlib.sha256(data).hexdigest(), store_key=store.put_bytes(data, ".png"),
                        dataset_id=dataset.id, label="negative", width=96, height=96))
        dataset_id = dataset.id
    boxes_key = store.put_bytes(synthetic["boxes"].read_bytes(), ".json", prefix="boxes")
    explain_id = _explain_job({"boxes_key": boxes_key, "images_dir": str(synthetic["images"]),
                               "dataset_id": dataset_id})
    with session_scope() as s:
        job = jobs.create_job(s, "train_detector", {"explain_job_id": explain_id, "hard_negatives": 5.0, "config": {
            "epochs": 1, "min_steps": 0, "input_size": 96, "batch_size": 4}}).id
    tasks.train_detector_job.apply(args=[job])
    with session_scope() as s:
        done = s.get(Job, job)
        assert done.state == "succeeded", done.error
        training = s.get(Model, done.result["model_id"]).manifest["training"]
    assert training["n_negative"] == 5 and training["provenance"]["dataset_negatives"] == 5
    # round 1 drew them by how round 0's detector scored them
    assert training["hard_negatives"] == 5.0 and training["negative_scores_by_round"][0]["n"] == 5
