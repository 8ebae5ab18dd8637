"""Deploy a registered detector: make it the one the inference service serves.

- Registry: the model's row becomes the only deployed detector; ORT-backed services pick it
  up within seconds (``runtime.get_detector`` polls), with no restart.
- Triton: when a model repository is configured, the model is written to it as the next
  integer version (``<repo>/<name>/<version>/model.onnx`` + ``config.pbtxt``), so a Triton
  server polling its repository (or told to load it) serves the new version.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from sqlalchemy import update

from labelfree.core.db import session_scope
from labelfree.core.errors import LabelfreeError, not_found
from labelfree.core.models import Model
from labelfree.core.store import get_store


def next_version(model_dir: Path) -> int:
    """1 + the largest integer version folder under a Triton model directory."""
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def write_triton_version(det_dir: Path, repository: Path, name: str) -> int:
    """Copy DET_DIR's ONNX model into ``repository/name`` as a new version; returns it.

    The version folder is staged under a temporary name and renamed, so Triton never sees
    a half-copied model.
    """
    source_config = next(det_dir.glob("triton/*/config.pbtxt"), None)
    onnx = det_dir / "model.onnx"
    if source_config is None or not onnx.is_file():
        raise LabelfreeError("invalid", f"{det_dir} holds no model.onnx + triton/*/config.pbtxt")
    model_dir = repository / name
    model_dir.mkdir(parents=True, exist_ok=True)
    config = re.sub(r'^name:\s*".*"', f'name: "{name}"', source_config.read_text(), count=1, flags=re.M)
    staged_config = model_dir / ".config.pbtxt.tmp"
    staged_config.write_text(config)
    os.replace(staged_config, model_dir / "config.pbtxt")
    version = next_version(model_dir)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    shutil.copyfile(onnx, staging / "model.onnx")
    os.replace(staging, model_dir / str(version))
    return version


def deploy_detector(model_id: str, *, triton_repository: Path | None, triton_model: str, work_dir: Path) -> dict:
    """Mark ``model_id`` deployed (and only it) and, if configured, publish it to Triton."""
    with session_scope() as session:
        model = session.get(Model, model_id)
        if model is None:
            raise not_found("model", model_id)
        if model.kind != "detector":
            raise LabelfreeError("bad_request", f"model {model_id} is a {model.kind}, not a detector")
        prefix = model.store_prefix
    result = {"model_id": model_id, "triton_version": None}
    if triton_repository is not None:
        det_dir = get_store().get_dir(prefix, work_dir / model_id)
        result["triton_version"] = write_triton_version(det_dir, Path(triton_repository), triton_model)
        result["triton_repository"] = str(triton_repository)
    with session_scope() as session:
        session.execute(update(Model).where(Model.kind == "detector", Model.id != model_id).values(deployed=False))
        session.get(Model, model_id).deployed = True
    return result
