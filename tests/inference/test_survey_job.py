"""The survey ``detect`` job: results, bursts, exports without GPS, and resume after a kill."""

import csv
import io
import json
import time
from datetime import datetime, timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage
from sqlalchemy import func, select

from labelfree.core.celery_app import QUEUE_DETECT
from labelfree.core.db import session_scope
from labelfree.core.megadetector import validate_batch
from labelfree.core.models import DetectionResult, Job
from labelfree.inference.tasks import run_survey_detection
from tests.factories import make_job, wait_for_job
from tests.inference.tiny_detector import build_tiny_detector

pytestmark = pytest.mark.service

T0 = datetime(2026, 2, 14, 5, 0, 0)
FAST_TAKEOVER = {"LABELFREE_JOB_LEASE_SECONDS": "3", "LABELFREE_BROKER_VISIBILITY_TIMEOUT": "4"}
LAT, LON = 27.98765, 86.92531


def _gps_exif() -> PILImage.Exif:
    exif = PILImage.Exif()
    exif[0x8825] = {1: "N", 2: (27.0, 59.0, 15.54), 3: "E", 4: (86.0, 55.0, 31.1)}
    return exif


def _photo(i: int, bright: bool) -> bytes:
    rng = np.random.default_rng(i)
    img = rng.integers(0, 60, (96, 128, 3), dtype=np.uint8)
    if bright:
        img[24:72, 32:96] = 250
    buf = io.BytesIO()
    PILImage.fromarray(img).save(buf, format="JPEG", exif=_gps_exif())
    return buf.getvalue()


def _survey_items(n_bursts: int, frames: int = 5) -> list:
    """``n_bursts`` bursts of ``frames`` shots 1 s apart, bursts 5 min apart, on two cameras."""
    items = []
    for b in range(n_bursts):
        cam = f"CAM{b % 2 + 1}"
        for f in range(frames):
            i = b * frames + f
            items.append((f"{cam}/IMG_{i:04d}.JPG", _photo(i, bright=(b % 3 == 0 and f == 2)),
                          T0 + timedelta(minutes=5 * b, seconds=f)))
    return items


def _count(job_id: str) -> int:
    with session_scope() as s:
        return s.execute(select(func.count()).select_from(DetectionResult)
                         .where(DetectionResult.job_id == job_id)).scalar_one()


def test_job_interrupted_mid_way_resumes_without_duplicates(configure, tiny_dir, make_survey):
    configure(inference_backend="onnxruntime", detector_dir=tiny_dir)
    survey_id, ids = make_survey(_survey_items(4))
    params = {"survey_id": survey_id, "batch_size": 3, "threshold": None, "gap_seconds": 10}
    job_id = make_job("detect", params)
    calls = []

    def dying_progress(fraction):
        calls.append(fraction)
        if len(calls) == 2:
            raise SystemExit("worker killed")  # what a SIGTERM'd worker looks like from inside

    with pytest.raises(SystemExit):
        run_survey_detection(job_id, params, dying_progress)
    assert _count(job_id) == 6
    summary = run_survey_detection(job_id, params, lambda f: None)
    assert summary["resumed_from"] == 6 and summary["processed_this_attempt"] == len(ids) - 6
    assert _count(job_id) == len(ids) == 20
    assert summary["sequences"] == {"count": 4, "with_detections": 2}
    summary = run_survey_detection(job_id, params, lambda f: None)  # a redelivery after success: nothing new
    assert summary["processed_this_attempt"] == 0 and _count(job_id) == 20


def test_worker_killed_mid_job_is_taken_over_and_exports_validate_without_gps(
        configure, tmp_path, make_survey, workers):
    slow = build_tiny_detector(tmp_path / "slow", size=160, work=3)  # ~30 ms an image: time to kill it
    configure(inference_backend="onnxruntime", detector_dir=slow)
    from labelfree.inference.api import app

    client = TestClient(app)
    items = _survey_items(10, frames=5)
    survey_id, _ = make_survey(items, latitude=LAT, longitude=LON, coords_exact=True, camera="survey-cam")
    first = workers.start(QUEUE_DETECT, env=FAST_TAKEOVER)
    resp = client.post(f"/v1/surveys/{survey_id}/detect", json={"batch_size": 2, "gap_seconds": 10})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["job_id"]
    deadline = time.monotonic() + 60
    while _count(job_id) < 4:
        assert time.monotonic() < deadline, "job never got going"
        time.sleep(0.02)
    workers.kill(first)  # SIGKILL: no ack, no state change
    done_at_kill = _count(job_id)
    assert 4 <= done_at_kill < len(items)
    workers.start(QUEUE_DETECT, env=FAST_TAKEOVER)
    job = wait_for_job(job_id, timeout=120)
    assert job.state == "succeeded", job.error
    assert job.attempts == 2 and job.result["processed_this_attempt"] == len(items) - done_at_kill
    assert _count(job_id) == len(items)

    doc = client.get(f"/v1/jobs/{job_id}/results?format=json").json()
    validate_batch(doc)
    assert len(doc["images"]) == len(items) and len(doc["sequences"]) == 10
    by_file = {im["file"]: im for im in doc["images"]}
    burst = [by_file[f"CAM1/IMG_{i:04d}.JPG"] for i in range(5)]
    assert len({im["sequence_id"] for im in burst}) == 1 and burst[0]["camera"] == "CAM1"
    assert doc["sequences"][burst[0]["sequence_id"]]["best_file"] == "CAM1/IMG_0002.JPG"
    assert doc["sequences"][burst[0]["sequence_id"]]["max_conf"] > 0.9
    text = client.get(f"/v1/jobs/{job_id}/results?format=csv").text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows and set(rows[0]) == {"file", "datetime", "camera", "sequence", "category", "conf", "bbox"}
    for blob in (json.dumps(doc).lower(), text.lower()):
        for leak in ("gps", "latitude", "longitude", "27.98", "86.92", "27.0, 59.0"):
            assert leak not in blob
