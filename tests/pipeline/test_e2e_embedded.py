"""End to end on the embedded default: ``labelfree up`` (SQLite, kombu's SQLAlchemy broker, a
local store, ONNX Runtime in the inference process), driven over HTTP like a user would."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from PIL import Image

from tests.conftest import free_port
from tests.pipeline.conftest import (
    assert_megadetector_entry,
    assert_run_succeeded_with_inputs,
    project_body,
    wait_for_run,
)

pytestmark = pytest.mark.service
SERVICES = ("ingest", "trainer", "explainer", "inference")


def embedded_env(data_dir) -> dict:
    """The session's environment without its cluster settings: the embedded profile's defaults."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELFREE_")}
    env.update({"LABELFREE_PROFILE": "embedded", "LABELFREE_DATA_DIR": str(data_dir), "LABELFREE_LOG_JSON": "false",
                "LABELFREE_SPARK_MASTER": "local[2]", "LABELFREE_GRPC_PORT": "0"})
    for name in SERVICES:
        env[f"LABELFREE_{name.upper()}_PORT"] = str(free_port())
    return env


class Up:
    """A ``labelfree up`` process group, stopped with Ctrl-C (SIGINT) at teardown."""

    def __init__(self, env: dict, log_path):
        self.env, self.log_path = env, log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "labelfree.cli", "up"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.env[f'LABELFREE_{service.upper()}_PORT']}"

    def wait_ready(self, timeout: float = 120) -> None:
        pending = set(SERVICES)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            assert self.proc.poll() is None, self.tail()
            for name in list(pending):
                try:
                    if httpx.get(f"{self.url(name)}/readyz", timeout=2).status_code == 200:
                        pending.discard(name)
                except httpx.HTTPError:
                    pass
            time.sleep(0.5)
        assert not pending, f"not ready: {pending}\n{self.tail()}"

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def up(tmp_path):
    server = Up(embedded_env(tmp_path / "labelfree"), tmp_path / "up.log")
    yield server
    server.stop()


def test_embedded_run_from_folders_ends_served_by_onnx_runtime(tmp_path, image_set, up):
    up.wait_ready()
    with httpx.Client(base_url=up.url("ingest"), timeout=30) as api:
        response = api.post("/v1/projects", json=project_body(image_set))
        assert response.status_code == 202, response.text
        run = wait_for_run(api, response.json()["run_id"], timeout=420)
    steps = assert_run_succeeded_with_inputs(run)
    assert steps["deploy"]["result"]["triton_version"] is None  # no Triton repository in the embedded profile
    assert (tmp_path / "labelfree" / "labelfree.db").is_file() and (tmp_path / "labelfree" / "broker.db").is_file()

    buf = io.BytesIO()
    Image.open(image_set / "pos" / "p001.jpg").save(buf, format="JPEG")
    # The inference process polls the registry for a newly deployed detector every few seconds.
    deadline = time.monotonic() + 30
    while True:
        answer = httpx.post(f"{up.url('inference')}/v1/detect", params={"threshold": 0, "file": "p001.jpg"},
                            content=buf.getvalue(), headers={"content-type": "image/jpeg"}, timeout=30)
        if answer.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert_megadetector_entry(body, "onnxruntime", steps["deploy"]["result"]["model_id"])
    assert body["image"]["file"] == "p001.jpg"
    assert up.proc.poll() is None, up.tail()
