"""``labelfree run`` on a machine without internet: the default provider fails with a reason
that names the offline options, and Openverse pointed at ``labelfree devsearch`` works."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.service

# No internet for the worker: every proxied request goes to a closed port (as a machine with
# no route out fails), while this machine's own servers stay reachable.
CLOSED = "http://127.0.0.1:9"
OFFLINE = {"HTTPS_PROXY": CLOSED, "HTTP_PROXY": CLOSED, "ALL_PROXY": CLOSED, "https_proxy": CLOSED,
           "http_proxy": CLOSED, "all_proxy": CLOSED, "NO_PROXY": "127.0.0.1,localhost",
           "no_proxy": "127.0.0.1,localhost"}


@pytest.fixture
def api_url():
    """The ingest app (which serves the projects API) over real HTTP, for the CLI to call."""
    import uvicorn

    from labelfree.ingest.api import app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "API did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labelfree.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**__import__("os").environ, **OFFLINE})


def test_run_on_the_default_provider_without_internet_fails_naming_the_offline_options(workers, api_url):
    workers.start("ingest", env=OFFLINE, wait=90)
    done = cli("run", "lion", "--api", api_url)
    assert done.returncode != 0, done.stderr
    err = done.stderr
    assert "run failed: step ingest: openverse:" in err and "cannot reach" in err, err
    assert "--provider dir" in err and "labelfree devsearch" in err, err
    failed_line = next(line for line in err.splitlines() if line.startswith("run failed"))
    assert "cannot reach" in failed_line  # one line, not wrapped


@pytest.fixture
def devsearch(image_set):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "labelfree.cli", "devsearch", "--root", str(image_set),
                             "--port", str(port), "--alias", "yellow disc=pos"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1/"
    deadline = time.monotonic() + 60
    try:
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "devsearch did not start"
            try:
                if httpx.get(url + "images/", params={"q": "yellow disc"}, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_openverse_pointed_at_devsearch_ingests_without_internet(workers, api_url, devsearch):
    workers.start("ingest", env=OFFLINE, wait=90)
    done = cli("run", "yellow disc", "--provider", "openverse", "--base-url", devsearch, "--positives", "10",
               "--negatives", "0", "--hard-negative", "neg", "--api", api_url, "--detach")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip().splitlines()[-1]
    with httpx.Client(base_url=api_url, timeout=10) as api:
        deadline = time.monotonic() + 120
        while True:
            run = api.get(f"/v1/runs/{run_id}").json()
            steps = {s["step"]: s for s in run["steps"]}
            if steps["ingest"]["state"] in ("succeeded", "failed") and (
                    steps["ingest"]["state"] == "failed" or steps["train"]["job_id"]):
                break
            assert time.monotonic() < deadline, run
            time.sleep(0.3)
        # This test checks ingest only (the dir-provider tests run the rest); no train worker
        # listens, and a later one finds the train job cancelled and skips it.
        if steps["train"]["job_id"]:
            api.post(f"/v1/jobs/{steps['train']['job_id']}/cancel")
        assert steps["ingest"]["state"] == "succeeded", steps["ingest"]
        dataset = api.get(f"/v1/datasets/{steps['ingest']['result']['dataset_id']}").json()
    result = steps["ingest"]["result"]
    assert result["images"] == 36, result
    assert dataset["provider"] == "openverse", dataset
