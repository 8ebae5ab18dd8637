"""Start and stop the pytriton server (``pytriton_server.py``) in its own venv.

Used by ``labelfree serve-triton``, the test fixtures and the benchmark. The server runs
under ``.venv-triton/bin/python`` (made by ``setup_triton.sh``) with ``LD_LIBRARY_PATH``
holding that Python's lib dir, which the bundled tritonserver binary links against.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from labelfree.core.errors import LabelfreeError

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_SCRIPT = Path(__file__).resolve().parent / "pytriton_server.py"
DEFAULT_VENV = REPO_ROOT / ".venv-triton"


def venv_python(venv: Path | None = None) -> Path:
    """The venv's python, or LabelfreeError naming the setup command when it is missing."""
    venv = Path(venv or os.environ.get("LABELFREE_TRITON_VENV") or DEFAULT_VENV)
    python = venv / "bin" / "python"
    if not python.exists():
        raise LabelfreeError("unavailable", f"{python} not found; run: bash services/inference/setup_triton.sh {venv}")
    return python


def server_env(python: Path) -> dict[str, str]:
    """The environment for the server: LD_LIBRARY_PATH gets the interpreter's LIBDIR."""
    libdir = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                            check=True, capture_output=True, text=True).stdout.strip()
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
    return env


def command(model_dir: Path, *, grpc_port: int, http_port: int, metrics_port: int, name: str = "labelfree_detector",
            max_batch: int = 32, venv: Path | None = None, version: int = 1) -> list[str]:
    return [str(venv_python(venv)), str(SERVER_SCRIPT), "--model", str(model_dir), "--name", name,
            "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--metrics-port", str(metrics_port),
            "--max-batch", str(max_batch), "--version", str(version)]


def start(model_dir: Path, *, grpc_port: int, http_port: int, metrics_port: int, log_path: Path,
          name: str = "labelfree_detector", venv: Path | None = None, version: int = 1) -> subprocess.Popen:
    """Start the server in the background (its own process group); logs go to ``log_path``."""
    cmd = command(model_dir, grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port, name=name,
                  venv=venv, version=version)
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(cmd, env=server_env(Path(cmd[0])), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        log.close()


def wait_ready(url: str, model: str, *, timeout: float = 120.0, proc: subprocess.Popen | None = None,
               log_path: Path | None = None) -> None:
    """Block until the model answers ready over gRPC; raise with the log tail if it does not."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                break
            try:
                if client.is_server_live(client_timeout=1) and client.is_model_ready(model, client_timeout=1):
                    return
            except InferenceServerException:
                pass
            time.sleep(0.5)
    finally:
        client.close()
    tail = log_path.read_text(errors="replace")[-3000:] if log_path and log_path.exists() else ""
    raise RuntimeError(f"Triton at {url} not ready within {timeout}s (exit code "
                       f"{proc.poll() if proc else None}):\n{tail}")


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM the server's process group (tritonserver and its model stubs), then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
