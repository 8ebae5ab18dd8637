"""core.metrics: /metrics adds up every process of a service started with a shared metrics folder."""

import os
import subprocess
import sys

import pytest

_PROCESS = """
import sys
from labelfree.core.app import ERRORS, REQUEST_LATENCY
for _ in range(int(sys.argv[1])):
    REQUEST_LATENCY.labels("inference", "POST", "/v1/detect", "200").observe(0.002)
ERRORS.labels("inference", "bad_request").inc()
"""


def _run(code: str, env: dict, *args: str) -> str:
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("shared", [True, False])
def test_metrics_of_several_processes_add_up_only_with_the_shared_folder(tmp_path, shared):
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if shared:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")  # created on first use
    _run(_PROCESS, env, "3")
    _run(_PROCESS, env, "4")
    text = _run("from labelfree.core.metrics import exposition; print(exposition().decode())", env)
    count = 'labelfree_http_request_duration_seconds_count{method="POST",route="/v1/detect",service="inference",' \
            'status="200"}'
    if shared:
        assert f"{count} 7.0" in text  # both processes' requests, whichever process answers /metrics
        assert 'labelfree_http_errors_total{code="bad_request",service="inference"} 2.0' in text
    else:
        assert count not in text  # a process sees only its own registry
