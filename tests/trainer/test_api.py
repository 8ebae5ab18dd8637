"""POST /v1/classifiers -> 202 + job; the train task registers a classifier with its files."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.service


@pytest.fixture
def client():
    from labelfree.trainer.api import app

    return TestClient(app)


def _dataset(folders: dict, n_pos: int, n_neg: int) -> str:
    from labelfree.core.db import session_scope
    from labelfree.core.models import Dataset, Image
    from labelfree.core.store import get_store

    store = get_store()
    with session_scope() as s:
        dataset = Dataset(query="stripes", provider="dir")
        s.add(dataset)
        s.flush()
        for label, folder, n in (("positive", folders["pos"], n_pos), ("negative", folders["neg"], n_neg)):
            for path in sorted(folder.glob("*.png"))[:n]:
                data = path.read_bytes()
                s.add(Image(sha256=hashlib.sha256(data).hexdigest(), store_key=store.put_bytes(data, ".png"),
                            dataset_id=dataset.id, label=label, width=96, height=96))
        return dataset.id


def test_post_classifiers_rejects_missing_and_small_datasets(client, image_folders):
    assert client.post("/v1/classifiers", json={"dataset_id": str(uuid.uuid4())}).status_code == 404
    small = client.post("/v1/classifiers", json={"dataset_id": _dataset(image_folders, 12, 4)})
    assert small.status_code == 422 and "4 negative images" in small.text
    assert client.post("/v1/classifiers", json={"dataset": "x"}).status_code == 422
    assert client.get(f"/v1/classifiers/{uuid.uuid4()}").status_code == 404


def test_post_classifiers_queues_a_job_and_the_task_registers_the_model(client, image_folders, monkeypatch):
    from labelfree.core.db import session_scope
    from labelfree.core.models import Job, Model
    from labelfree.core.store import get_store
    from labelfree.trainer import tasks

    dataset_id = _dataset(image_folders, 12, 12)
    sent = []
    monkeypatch.setattr("labelfree.core.celery_app.enqueue", lambda task, job_id: sent.append((task, job_id)))
    resp = client.post("/v1/classifiers", json={"dataset_id": dataset_id, "name": "stripes"})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["job_id"]
    assert sent == [(tasks.train_classifier_job, job_id)]
    assert tasks.train_classifier_job.queue_name == "train"

    tasks.train_classifier_job.apply(args=[job_id])  # the real task body, in-process
    with session_scope() as s:
        job = s.get(Job, job_id)
        assert job.state == "succeeded", job.error
        model = s.get(Model, job.result["model_id"])
        assert model.kind == "classifier" and model.dataset_id == dataset_id and model.name == "stripes"
        assert model.metrics["validation"]["roc_auc"] >= 0.99
        assert model.manifest["training"]["dataset_id"] == dataset_id
        prefix, model_id = model.store_prefix, model.id
    store = get_store()
    assert {f"{prefix}/model.onnx", f"{prefix}/manifest.json", f"{prefix}/metrics.json"} <= set(store.list(prefix))
    assert json.loads(store.get(f"{prefix}/manifest.json"))["labels"]["positive"] == "stripes"
    for ident in (model_id, job_id):
        got = client.get(f"/v1/classifiers/{ident}")
        assert got.status_code == 200 and got.json()["id"] == model_id

    tasks.train_classifier_job.apply(args=[job_id])  # a redelivered message redoes nothing
    with session_scope() as s:
        assert s.query(Model).filter(Model.job_id == job_id).count() == 1
