"""Inference commands, merged into the ``labelfree`` CLI.

(``labelfree detect`` on folders belongs to the detector's CLI, ``labelfree.trainer.detector.cli``.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from labelfree.core.errors import LabelfreeError

app = typer.Typer(no_args_is_help=True)


@app.command("serve-triton")
def serve_triton(
    model: Path = typer.Option(..., "--model", help="detector directory (DET_DIR) holding model.onnx"),
    grpc_port: int = typer.Option(8001, help="KServe v2 gRPC port"),
    http_port: int = typer.Option(8000, help="KServe v2 HTTP port"),
    metrics_port: int = typer.Option(8002, help="Prometheus metrics port"),
    name: str = typer.Option("labelfree_detector", help="model name"),
    venv: Path = typer.Option(None, help="pytriton venv (default .venv-triton; see setup_triton.sh)"),
) -> None:
    """Serve DET_DIR with a real Triton server (pytriton, ONNX Runtime inside), in the foreground."""
    from labelfree.inference import triton_launcher

    if not (model / "model.onnx").is_file():
        raise LabelfreeError("bad_request", f"{model} has no model.onnx")
    cmd = triton_launcher.command(model, grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port,
                                  name=name, venv=venv)
    env = triton_launcher.server_env(Path(cmd[0]))
    os.execve(cmd[0], cmd, env)  # the server owns this process from here: signals reach it directly


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
