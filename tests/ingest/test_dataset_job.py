"""The dataset job end to end: API -> Redis -> a real ingest worker -> Postgres + store."""

from __future__ import annotations

import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from labelfree.core.celery_app import QUEUE_INGEST
from labelfree.core.db import session_scope
from labelfree.core.models import Dataset, Image as ImageRow
from labelfree.core.store import get_store
from tests.factories import wait_for_job

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def client():
    from labelfree.ingest.api import app

    with TestClient(app) as c:
        yield c


def _request(devsearch_url: str) -> dict:
    return {"query": "lion", "provider": "openverse", "positives": 2, "page_size": 10,
            "negatives": "random:3", "random_words": 2, "hard_negatives": ["tiger"], "min_side": 32,
            "provider_options": {"base_url": devsearch_url}, "download": {"workers": 4}}


def test_dataset_job_on_a_real_worker(client, workers, devsearch_url):
    workers.start(QUEUE_INGEST)
    r = client.post("/v1/datasets", json=_request(devsearch_url))
    assert r.status_code == 202, r.text
    dataset_id, job_id = r.json()["dataset_id"], r.json()["job_id"]
    job = wait_for_job(job_id, timeout=90)
    assert job.state == "succeeded", job.error
    body = client.get(f"/v1/datasets/{dataset_id}").json()
    assert body["state"] == "succeeded" and body["progress"] == 1.0
    summary = body["summary"]
    assert summary["labels"] == {"positive": 10, "negative": 11} and body["image_count"] == 21
    assert summary["duplicates"]["exact_duplicates"] == 1 and summary["duplicates"]["conflict_groups"] == 1
    assert summary["failures"] == {"undecodable": 1, "too_small": 1, "not_an_image": 1}
    assert summary["licences"] == {"CC BY 4.0": 21}

    manifest = client.get(f"/v1/datasets/{dataset_id}/manifest")
    assert manifest.status_code == 200 and manifest.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in manifest.text.splitlines()]
    assert len(rows) == 21
    for field in ("sha256", "label", "query", "provider", "source_url", "landing_url", "licence", "creator",
                  "width", "height", "phash"):
        assert all(field in row for row in rows), field
    with session_scope() as s:
        images = s.execute(select(ImageRow).where(ImageRow.dataset_id == dataset_id)).scalars().all()
        assert {i.sha256 for i in images} == {row["sha256"] for row in rows}
        assert all(i.licence == "CC BY 4.0" and i.source_url and i.landing_url and i.creator for i in images)
        gps_row = next(i for i in images if i.source_url.endswith("lion_gps.jpg"))
        assert gps_row.camera_make == "Reconyx" and gps_row.captured_at is not None
        keys = [i.store_key for i in images]
    for key in keys:
        exif = Image.open(io.BytesIO(get_store().get(key))).getexif()
        assert not exif.get_ifd(0x8825)


def test_rerunning_the_job_function_replaces_rows(client, devsearch_url):
    """A redelivered job rebuilds: the same rows, never twice (the task function, called directly)."""
    from labelfree.ingest.tasks import build_dataset_job

    with session_scope() as s:
        dataset = Dataset(query="lion", provider="openverse", params={})
        s.add(dataset)
        s.flush()
        dataset_id = dataset.id
    params = {"query": "tiger", "provider": "openverse", "page_size": 20, "min_side": 32,
              "provider_options": {"base_url": devsearch_url}, "dataset_id": dataset_id}
    first = build_dataset_job("job-x", params, lambda f: None)
    second = build_dataset_job("job-x", params, lambda f: None)
    assert first["images"] == second["images"] == 6
    with session_scope() as s:
        count = len(s.execute(select(ImageRow.id).where(ImageRow.dataset_id == dataset_id)).all())
    assert count == 6


def test_bad_dataset_requests_are_422_before_any_job(client):
    r = client.post("/v1/datasets", json={"query": "lion", "negatives": "words:5"})
    assert r.status_code == 422 and "random:K" in r.json()["error"]["detail"]
    r = client.post("/v1/datasets", json={"query": "lion", "provider": "bing"})
    assert r.status_code == 422
    r = client.post("/v1/datasets", json={"query": "lion", "download": {"threads": 5}})
    assert r.status_code == 422 and "threads" in r.json()["error"]["detail"]
    assert client.get("/v1/datasets/00000000-0000-0000-0000-000000000000").status_code == 404


def test_provider_options_are_checked_before_the_job_is_written(client):
    r = client.post("/v1/datasets", json={"query": "lion", "provider_options": {"licences": ["arr"]}})
    assert r.status_code == 422 and "licence" in r.json()["error"]["detail"]
    r = client.post("/v1/datasets", json={"query": "lion", "provider_options": {"colour": "red"}})
    assert r.status_code == 422 and "colour" in r.json()["error"]["detail"]
    r = client.post("/v1/datasets", json={"query": "lion", "page_size": 100})
    assert r.status_code == 422 and "openverse's limit of 20" in r.json()["error"]["detail"]
