"""POST /v1/detect and the results endpoints: good input, every bad-input case, metrics."""

import io
import uuid

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from labelfree.core.megadetector import validate_batch
from tests.factories import jpeg_bytes, make_job
from tests.inference.tiny_detector import square_image

pytestmark = pytest.mark.service


@pytest.fixture
def client(configure, tiny_dir):
    configure(inference_backend="onnxruntime", detector_dir=tiny_dir)
    from labelfree.inference.api import app

    return TestClient(app)


def _square_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(square_image(128, (32, 32, 64, 64))).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _assert_error(resp, status: int, code: str, *words: str):
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code
    for word in words:
        assert word in str(err["detail"]).lower(), err


def test_raw_body_returns_one_megadetector_entry_and_timing(client):
    resp = client.post("/v1/detect?file=cam/a.jpg", content=_square_jpeg(), headers={"content-type": "image/jpeg"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    entry = body["image"]
    assert entry["file"] == "cam/a.jpg" and entry["failure"] is None and entry["detections"]
    validate_batch({"info": {"format_version": "1.4"}, "detection_categories": body["detection_categories"],
                    "images": [entry]})
    assert set(body["timing_ms"]) == {"decode", "inference", "total"} and body["backend"] == "onnxruntime"


def test_multipart_upload_gives_the_same_detections_as_a_raw_body(client):
    data = _square_jpeg()
    raw = client.post("/v1/detect", content=data, headers={"content-type": "application/octet-stream"}).json()
    form = client.post("/v1/detect", files={"image": ("sq.jpg", data, "image/jpeg")}).json()
    assert form["image"]["file"] == "sq.jpg"
    assert form["image"]["detections"] == raw["image"]["detections"]


def test_threshold_query_filters_detections(client):
    data = _square_jpeg()
    low = client.post("/v1/detect?threshold=0", content=data, headers={"content-type": "image/jpeg"}).json()
    high = client.post("/v1/detect?threshold=0.99", content=data, headers={"content-type": "image/jpeg"}).json()
    assert len(high["image"]["detections"]) < len(low["image"]["detections"])
    _assert_error(client.post("/v1/detect?threshold=2", content=data, headers={"content-type": "image/jpeg"}),
                  422, "invalid")


def test_wrong_content_type_is_415(client):
    _assert_error(client.post("/v1/detect", content=b"{}", headers={"content-type": "application/json"}),
                  415, "unsupported_media_type", "application/json")


def test_empty_body_is_400(client):
    _assert_error(client.post("/v1/detect", content=b"", headers={"content-type": "image/jpeg"}),
                  400, "bad_request", "empty")


def test_multipart_without_a_file_field_is_400(client):
    _assert_error(client.post("/v1/detect", data={"name": "x"}, files={"other": ("a", b"1")}),
                  400, "bad_request", "image")


def test_corrupt_image_is_422(client):
    _assert_error(client.post("/v1/detect", content=b"GIF89a not really", headers={"content-type": "image/gif"}),
                  422, "invalid", "not a decodable image")


def test_truncated_jpeg_is_422(client):
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(buf, format="JPEG")
    data = buf.getvalue()[: len(buf.getvalue()) // 2]
    _assert_error(client.post("/v1/detect", content=data, headers={"content-type": "image/jpeg"}),
                  422, "invalid", "truncated")


def test_decompression_bomb_is_413_before_decoding(client, configure, tiny_dir):
    configure(inference_backend="onnxruntime", detector_dir=tiny_dir, max_image_pixels=1_000_000)
    buf = io.BytesIO()
    Image.new("L", (4000, 3000)).save(buf, format="PNG")  # 12 MP of zeros: a few KB compressed
    assert len(buf.getvalue()) < 100_000
    _assert_error(client.post("/v1/detect", content=buf.getvalue(), headers={"content-type": "image/png"}),
                  413, "payload_too_large", "4000x3000", "1000000")


def test_oversized_body_is_413_naming_the_limit_setting(client, configure, tiny_dir):
    configure(inference_backend="onnxruntime", detector_dir=tiny_dir, max_upload_bytes=10_000)
    data = jpeg_bytes(400, 400) + b"\0" * 20_000
    _assert_error(client.post("/v1/detect", content=data, headers={"content-type": "image/jpeg"}),
                  413, "payload_too_large", "10000", "labelfree_max_upload_bytes")
    _assert_error(client.post("/v1/detect", files={"image": ("a.jpg", data, "image/jpeg")}),
                  413, "payload_too_large", "10000")

    def chunks():  # no Content-Length: the limit holds while streaming
        for _ in range(4):
            yield b"\xff" * 5_000

    _assert_error(client.post("/v1/detect", content=chunks(), headers={"content-type": "image/jpeg"}),
                  413, "payload_too_large")


def test_server_keeps_serving_after_bad_input(client):
    for _ in range(3):
        client.post("/v1/detect", content=b"junk", headers={"content-type": "image/jpeg"})
    assert client.post("/v1/detect", content=_square_jpeg(), headers={"content-type": "image/jpeg"}).status_code == 200


def test_unknown_survey_is_404(client):
    ident = uuid.uuid4()
    _assert_error(client.post(f"/v1/surveys/{ident}/detect"), 404, "not_found", str(ident))
    _assert_error(client.post("/v1/surveys/not-a-uuid/detect"), 422, "invalid")


def test_bad_survey_options_are_400(client, make_survey):
    survey_id, _ = make_survey([("a.jpg", jpeg_bytes(), None)])
    _assert_error(client.post(f"/v1/surveys/{survey_id}/detect", json={"batch_size": 0}), 400, "bad_request",
                  "batch_size")
    _assert_error(client.post(f"/v1/surveys/{survey_id}/detect", json={"colour": 1}), 400, "bad_request", "colour")


def test_results_of_unknown_or_unfinished_jobs(client):
    _assert_error(client.get(f"/v1/jobs/{uuid.uuid4()}/results"), 404, "not_found")
    job_id = make_job("detect", {"survey_id": str(uuid.uuid4())})
    _assert_error(client.get(f"/v1/jobs/{job_id}/results"), 409, "conflict", "queued")
    other = make_job("noop")
    _assert_error(client.get(f"/v1/jobs/{other}/results"), 404, "not_found")
    _assert_error(client.get(f"/v1/jobs/{job_id}/results?format=xml"), 422, "invalid")


def test_metrics_expose_latency_histograms_and_in_flight_gauges(client):
    client.post("/v1/detect", content=_square_jpeg(), headers={"content-type": "image/jpeg"})
    text = client.get("/metrics").text
    assert 'labelfree_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/v1/detect"' in text \
        or "labelfree_http_request_duration_seconds_bucket" in text
    assert 'labelfree_inference_stage_seconds_bucket{backend="onnxruntime"' in text
    assert "labelfree_inference_in_flight" in text and "labelfree_http_requests_in_flight" in text


def test_readyz_is_ready_with_an_embedded_model(client):
    assert client.get("/readyz").status_code == 200


def test_raw_body_fast_path_is_observed_like_any_route(client):
    """Raw bodies take the pure ASGI route (api.RawDetectRoute); it is timed, labelled and counted
    as /v1/detect, and its errors look and count like the FastAPI endpoint's."""
    from labelfree.inference.api import RawDetectRoute, app

    assert any(m.cls is RawDetectRoute for m in app.user_middleware)
    ok = client.post("/v1/detect", content=_square_jpeg(), headers={"content-type": "image/jpeg"})
    assert ok.status_code == 200 and ok.headers["x-request-id"]
    _assert_error(client.post("/v1/detect", content=b"", headers={"content-type": "image/jpeg"}),
                  400, "bad_request", "empty")
    text = client.get("/metrics").text
    assert 'method="POST",route="/v1/detect",service="inference",status="200"' in text
    assert 'method="POST",route="/v1/detect",service="inference",status="400"' in text
    assert 'labelfree_http_errors_total{code="bad_request",service="inference"}' in text
    # an unusual query string goes through FastAPI's validation instead, with the same answer shape
    _assert_error(client.post("/v1/detect?threshold=x", content=_square_jpeg(), headers={"content-type": "image/jpeg"}),
                  422, "invalid")
