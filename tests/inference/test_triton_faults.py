"""Triton stopped mid-test: 503 + Retry-After and /readyz 503; restarted: recovery, no app restart."""

import io
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.inference.tiny_detector import square_image

pytestmark = pytest.mark.service


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(square_image()).save(buf, format="JPEG")
    return buf.getvalue()


def test_triton_down_gives_503_then_the_service_recovers_when_it_returns(configure, det_dir, triton_server):
    configure(inference_backend="triton", triton_url=triton_server.url, triton_model_version="1",
              detector_dir=det_dir)
    from labelfree.inference.api import app

    client = TestClient(app)
    post = lambda: client.post("/v1/detect", content=_jpeg(), headers={"content-type": "image/jpeg"})  # noqa: E731
    first = post()
    assert first.status_code == 200 and first.json()["backend"] == "triton"
    assert client.get("/readyz").status_code == 200

    triton_server.stop()
    try:
        down = post()
        assert down.status_code == 503, down.text
        assert down.headers["retry-after"].isdigit()
        assert down.json()["error"]["code"] == "unavailable" and "triton" in down.json()["error"]["detail"].lower()
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "detector_ready" in ready.json()["failures"]
        assert client.get("/healthz").status_code == 200  # alive, just not ready
    finally:
        triton_server.start()

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if post().status_code == 200 and client.get("/readyz").status_code == 200:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the service did not recover within 30 s of Triton being ready again")
    assert post().json()["image"]["detections"] == first.json()["image"]["detections"]
