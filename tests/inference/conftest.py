"""Inference fixtures: a small real detector, a real Triton server (pytriton), survey factories."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import free_port

# The app module starts gRPC beside REST on LABELFREE_GRPC_PORT; tests start their own.
os.environ["LABELFREE_GRPC_PORT"] = "0"


def export_team_detector(out: Path, size: int = 96) -> Path | None:
    """The team's detector (untrained, real architecture) through its own ONNX export; None if absent."""
    try:
        import torch

        from labelfree.core.backbone import load_backbone
        from labelfree.trainer.detector.export import export_onnx
        from labelfree.trainer.detector.model import Detector
    except ImportError:
        return None
    torch.manual_seed(0)
    export_onnx(Detector(load_backbone(pretrained=False), num_classes=1), out / "model.onnx", input_size=size,
                top_k=100)
    (out / "manifest.json").write_text(json.dumps({"kind": "detector", "name": "untrained-test-detector",
                                                   "input_size": size, "top_k": 100, "labels": ["animal"],
                                                   "category_ids": [1]}))
    (out / "metrics.json").write_text("{}")
    return out


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """The tiny brightness detector: tests that need a known answer use it."""
    from tests.inference.tiny_detector import build_tiny_detector

    return build_tiny_detector(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def det_dir(tmp_path_factory, tiny_dir) -> Path:
    """The real detector architecture via the team's export when present, else the tiny model."""
    return export_team_detector(tmp_path_factory.mktemp("detector")) or tiny_dir


class TritonServer:
    """A pytriton server process on fixed ports, restartable in place (for the fault tests)."""

    def __init__(self, model_dir: Path, log_path: Path):
        self.model_dir, self.log_path = model_dir, log_path
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> None:
        from labelfree.inference import triton_launcher

        self.proc = triton_launcher.start(self.model_dir, grpc_port=self.grpc_port, http_port=self.http_port,
                                          metrics_port=self.metrics_port, log_path=self.log_path)
        triton_launcher.wait_ready(self.url, "labelfree_detector", timeout=180, proc=self.proc,
                                   log_path=self.log_path)

    def stop(self) -> None:
        from labelfree.inference import triton_launcher

        if self.proc is not None:
            triton_launcher.stop(self.proc)
            self.proc = None


@pytest.fixture(scope="session")
def triton_server(det_dir, tmp_path_factory):
    """A real Triton server serving ``det_dir`` as ``labelfree_detector`` (needs .venv-triton)."""
    from labelfree.inference import triton_launcher

    triton_launcher.venv_python()  # fails with the setup command when the venv is missing
    server = TritonServer(det_dir, tmp_path_factory.mktemp("triton") / "triton.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def configure(monkeypatch):
    """Point Settings at a backend/detector for one test; resets cached settings and detector."""
    from labelfree.core.settings import reset_settings
    from labelfree.inference.runtime import reset_detector

    def apply(**env):
        for key, value in env.items():
            monkeypatch.setenv(f"LABELFREE_{key.upper()}", str(value))
        reset_settings()
        reset_detector()

    yield apply
    monkeypatch.undo()
    reset_settings()
    reset_detector()


@pytest.fixture
def make_survey():
    """Create a survey whose images are stored JPEGs: ``make_survey([(file_name, bytes, captured_at), ...])``."""
    from labelfree.core.db import session_scope
    from labelfree.core.models import Image, Survey
    from labelfree.core.store import content_key, get_store

    def make(items: list[tuple[str, bytes, datetime | None]], **survey_kw) -> tuple[str, list[str]]:
        store = get_store()
        with session_scope() as s:
            survey = Survey(name=survey_kw.pop("name", "test survey"), **survey_kw)
            s.add(survey)
            s.flush()
            ids = []
            for file_name, data, captured_at in items:
                key = store.put_bytes(data, ".jpg")
                assert key == content_key(data, ".jpg")
                image = Image(sha256=key.rsplit("/", 1)[1][:64], store_key=key, survey_id=survey.id,
                              file_name=file_name, width=0, height=0, captured_at=captured_at,
                              camera_make="Reconyx", camera_model="HC600")
                s.add(image)
                s.flush()
                ids.append(image.id)
            return survey.id, ids

    return make
