import shutil
import subprocess
import time
import uuid

import pytest
from fastapi.testclient import TestClient

from labelfree.core.app import create_app
from labelfree.core.settings import reset_settings
from tests.conftest import free_port
from tests.factories import make_job


@pytest.fixture
def client():
    return TestClient(create_app("test"))


def test_healthz_readyz_metrics_and_openapi(client):
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/readyz").status_code == 200
    client.get("/healthz")
    assert "labelfree_http_request_duration_seconds" in client.get("/metrics").text
    assert "/v1/jobs/{job_id}" in client.get("/openapi.json").json()["paths"]


def test_request_id_is_echoed(client):
    assert client.get("/healthz", headers={"x-request-id": "abc123"}).headers["x-request-id"] == "abc123"


def test_request_without_id_gets_a_fresh_32_hex_id(client):
    ids = {client.get("/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_request_latency_is_counted_per_route_and_status(client):
    client.get("/healthz")
    client.get("/healthz")
    client.get("/no/such/path")
    text = client.get("/metrics").text
    healthz = [line for line in text.splitlines() if line.startswith("labelfree_http_request_duration_seconds_count")
               and 'route="/healthz"' in line and 'status="200"' in line]
    assert healthz and float(healthz[0].rsplit(" ", 1)[1]) >= 2
    assert 'route="unmatched"' in text and 'status="404"' in text


def test_each_request_writes_one_json_line_with_its_id(client):
    import io
    import json
    import logging

    from labelfree.core.logging import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    try:
        client.get(f"/v1/jobs/{uuid.uuid4()}", headers={"x-request-id": "trace-7"})
        client.get("/healthz")  # probes stay out of the log
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    requests = [line for line in lines if line["logger"] == "labelfree.http"]
    assert len(requests) == 1
    assert requests[0]["request_id"] == "trace-7" and requests[0]["status"] == 404
    assert requests[0]["method"] == "GET" and requests[0]["path"].startswith("/v1/jobs/")
    assert requests[0]["service"] == "test" and requests[0]["duration_ms"] >= 0


def test_fastapi_native_telemetry_is_off():
    assert not create_app("test")._native_telemetry.enabled()  # metrics are Prometheus, logs JSON lines


def test_malformed_job_id_is_422_with_error_body(client):
    response = client.get("/v1/jobs/not-a-uuid")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid"


def test_unknown_job_id_is_404_with_error_body(client):
    response = client.get(f"/v1/jobs/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json()["error"] == {"code": "not_found", "detail": response.json()["error"]["detail"]}


def test_cancel_queued_job_and_refuse_cancelling_it_twice(client):
    job_id = make_job()
    assert client.post(f"/v1/jobs/{job_id}/cancel").json()["state"] == "cancelled"
    again = client.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server binary not installed")
def test_readiness_goes_503_when_redis_stops_and_recovers_when_it_returns(monkeypatch, tmp_path):
    port = free_port()

    def start_redis():
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
        import redis

        for _ in range(100):
            try:
                redis.Redis(port=port).ping()
                return proc
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis did not start")

    proc = start_redis()
    monkeypatch.setenv("LABELFREE_BROKER_URL", f"redis://127.0.0.1:{port}/0")
    reset_settings()
    try:
        client = TestClient(create_app("test"))
        assert client.get("/readyz").status_code == 200
        proc.terminate()
        proc.wait(10)
        down = client.get("/readyz")
        assert down.status_code == 503 and "broker" in down.json()["failures"]
        assert down.headers["retry-after"]
        proc = start_redis()
        assert client.get("/readyz").status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
        monkeypatch.undo()
        reset_settings()
