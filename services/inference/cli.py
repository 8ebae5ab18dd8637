"""Inference commands, merged into the ``labelfree`` CLI."""

from __future__ import annotations

import json
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


@app.command("detect")
def detect(
    model: Path = typer.Option(..., "--model", help="detector directory (DET_DIR)"),
    images: Path = typer.Option(..., "--images", help="folder of images (sub-folders are read)"),
    out: Path = typer.Option(..., "--out", help="MegaDetector JSON to write"),
    threshold: float = typer.Option(None, min=0.0, max=1.0, help="minimum conf (default: the model's)"),
    batch_size: int = typer.Option(16, min=1, max=256),
) -> None:
    """Run the detector over a folder (ONNX Runtime, no servers); write MegaDetector batch JSON."""
    from labelfree.core.images import ImageDecodeError, decode_image, iter_image_files
    from labelfree.core.megadetector import build_batch, image_entry
    from labelfree.inference.backends import DetectorSpec, Detector, OnnxRuntimeBackend

    if not images.is_dir():
        raise LabelfreeError("bad_request", f"{images} is not a directory")
    detector = Detector(OnnxRuntimeBackend(model), DetectorSpec.from_dir(model))
    files = list(iter_image_files([images]))
    entries = []
    for i in range(0, len(files), batch_size):
        chunk, decoded = files[i:i + batch_size], []
        for path in chunk:
            try:
                decoded.append(decode_image(path.read_bytes()))
            except ImageDecodeError as exc:
                decoded.append(exc.detail)
        ok = [d for d in decoded if not isinstance(d, str)]
        found = iter(detector.detect(ok, threshold=threshold) if ok else [])
        for path, d in zip(chunk, decoded):
            rel = path.relative_to(images).as_posix()
            entries.append(image_entry(rel, None, failure=d) if isinstance(d, str) else image_entry(rel, next(found)))
    doc = build_batch(entries, detector.spec.categories, detector=detector.spec.name,
                      detector_metadata={"typical_detection_threshold": threshold or detector.spec.threshold})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    typer.echo(f"{len(entries)} images -> {out}", err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
