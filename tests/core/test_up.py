"""``labelfree up`` starts the four APIs and the workers, and Ctrl-C stops them all."""

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.service
SERVICES = ("ingest", "trainer", "explainer", "inference")


def _env(profile: str, tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELFREE_")}
    env.update({"LABELFREE_PROFILE": profile, "LABELFREE_DATA_DIR": str(tmp_path), "LABELFREE_LOG_JSON": "false"})
    if profile == "cluster":
        for key in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND", "STORE_URL"):
            env[f"LABELFREE_{key}"] = os.environ[f"LABELFREE_{key}"]
        # `up` starts no Triton server; the Triton backend has its own tests (tests/inference)
        env["LABELFREE_INFERENCE_BACKEND"] = "onnxruntime"
    for name in SERVICES + ("grpc",):
        env[f"LABELFREE_{name.upper()}_PORT"] = str(free_port())
    return env


@pytest.mark.parametrize("profile", ["embedded", "cluster"])
def test_up_serves_four_ready_apps_runs_a_job_and_stops_on_ctrl_c(profile, tmp_path):
    env = _env(profile, tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "labelfree.cli", "up"], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        ready = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(ready) < len(SERVICES):
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")[-3000:]
            for name in SERVICES:
                try:
                    url = f"http://127.0.0.1:{env[f'LABELFREE_{name.upper()}_PORT']}/readyz"
                    if httpx.get(url, timeout=2).status_code == 200:
                        ready.add(name)
                except httpx.HTTPError:
                    pass
            time.sleep(0.5)
        assert ready == set(SERVICES), f"not ready: {set(SERVICES) - ready}"
        probe = subprocess.run([sys.executable, "-m", "labelfree.cli", "jobs", "probe", "--queue", "detect",
                                "--wait", "90"], env=env, capture_output=True, text=True, timeout=120)
        assert probe.returncode == 0, probe.stderr
        if profile == "embedded":
            assert (tmp_path / "labelfree.db").exists() and (tmp_path / "broker.db").exists()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("labelfree up did not stop on Ctrl-C")
    assert proc.returncode == 0
    out = proc.stdout.read().decode(errors="replace")
    assert "stopped" in out
    # each worker stops its own pool: no pool process is killed under its parent
    assert "exited with 'signal" not in out and "WorkerLostError" not in out, out[-3000:]
    # a fresh data directory: the broker's tables exist before eight processes race to create them
    assert "Connection to broker lost" not in out, out[-3000:]
