"""Celery task on the ``train`` queue: an explain run's boxes -> a registered detector.

Thin wrapper: load inputs, call :func:`build_detector`, store the DET_DIR, write the
``models`` row. Retries resume from the checkpoints in the job's work directory.

Contract with the explain job (its ``result``):

- ``boxes_key``: object-store key of the COCO-style boxes JSON;
- ``images_dir``: a folder the boxes' ``file_name`` values are relative to, readable by the
  worker; or, without it, ``file_name`` values that are object-store keys (fetched here);
- optional ``classifier_model_id``, ``dataset_id``: recorded as provenance.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

from sqlalchemy import select

from labelfree.core import jobs
from labelfree.core.celery_app import QUEUE_TRAIN, job_task
from labelfree.core.db import session_scope
from labelfree.core.errors import LabelfreeError
from labelfree.core.models import Model
from labelfree.trainer.detector import CALIBRATE, HARD_NEGATIVES, SOFT_CANDIDATES
from labelfree.core.settings import get_settings
from labelfree.core.store import get_store

TRAIN_DETECTOR_TASK = "labelfree.trainer.detector.train_detector"
MODEL_KIND = "detector"
# Training state stays on the worker; the store gets what serving needs.
_NOT_STORED = ("checkpoints",)
log = logging.getLogger(__name__)


def explain_inputs(explain_result: dict | None) -> tuple[str, str | None]:
    """(boxes_key, images_dir or None) from an explain job's result; LabelfreeError if unusable."""
    result = explain_result or {}
    if not isinstance(result.get("boxes_key"), str):
        raise LabelfreeError("invalid", "the explain job's result has no 'boxes_key' (COCO boxes in the store)")
    images_dir = result.get("images_dir")
    return result["boxes_key"], images_dir if isinstance(images_dir, str) else None


def _materialise_images(store, boxes_path: Path, dest: Path) -> Path:
    """Fetch each image named in the boxes JSON (file_name = store key) into ``dest``."""
    coco = json.loads(boxes_path.read_text())
    for image in coco.get("images", []):
        target = dest / image["file_name"]
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(store.get(image["file_name"]))
    return dest


def _dataset_negatives(store, dataset_id: str, dest: Path) -> tuple[Path | None, int]:
    """The dataset's negative images (random-word and hard-negative searches), linked into
    ``dest`` as one folder for ``build_detector``. (None, 0) when the dataset has none."""
    from labelfree.trainer.tasks import dataset_image_keys

    with session_scope() as session:
        _, _, negative_keys = dataset_image_keys(session, dataset_id)
    if not negative_keys:
        return None, 0
    dest.mkdir(parents=True, exist_ok=True)
    for key in negative_keys:
        link = dest / key.replace("/", "_")
        if not link.exists():
            link.symlink_to(store.local_path(key))
    return dest, len(negative_keys)


@job_task(TRAIN_DETECTOR_TASK, QUEUE_TRAIN)
def train_detector_job(job_id: str, params: dict, progress) -> dict:
    """``params``: ``explain_job_id``, optional ``config`` (TrainConfig fields), ``instance_kind``,
    ``negatives`` (folders; by default the negative images of the explain run's dataset, unless
    ``dataset_negatives`` is false). Result: ``model_id``, ``store_prefix``, validation ``metrics``."""
    from labelfree.trainer.detector.build import build_detector
    from labelfree.trainer.detector.train import TrainConfig

    with session_scope() as session:
        explain = jobs.get_job(session, params["explain_job_id"])
        explain_result, project_id, run_id = dict(explain.result or {}), explain.project_id, explain.run_id
        existing = session.execute(select(Model).where(Model.job_id == job_id)).scalar_one_or_none()
        if existing is not None:  # a redelivery after the row was written: nothing to redo
            return {"model_id": existing.id, "store_prefix": existing.store_prefix, "metrics": existing.metrics}
    store = get_store()
    boxes_key, images_dir = explain_inputs(explain_result)
    work = get_settings().data_dir / "work" / "detectors" / job_id
    work.mkdir(parents=True, exist_ok=True)
    boxes_path = store.local_path(boxes_key)
    images = Path(images_dir) if images_dir else _materialise_images(store, boxes_path, work / "images")
    provenance = {"explain_job_id": params["explain_job_id"], "boxes_key": boxes_key,
                  "classifier_model_id": explain_result.get("classifier_model_id"),
                  "dataset_id": explain_result.get("dataset_id"), "run_id": run_id}
    negatives = list(params.get("negatives", ()))
    dataset_id = explain_result.get("dataset_id") or params.get("dataset_id")
    if not negatives and dataset_id and params.get("dataset_negatives", True):
        folder, provenance["dataset_negatives"] = _dataset_negatives(store, dataset_id, work / "negatives")
        negatives = [folder] if folder else []
    config = TrainConfig(**params.get("config", {}))
    manifest = build_detector(images, boxes_path, work / "det", negatives=negatives,
                              config=config, instance_kind=params.get("instance_kind", "cpu"),
                              unboxed_as_negative=bool(params.get("unboxed_as_negative", False)),
                              self_train_rounds=int(params.get("self_train_rounds", 1)),
                              hard_negatives=float(params.get("hard_negatives", HARD_NEGATIVES)),
                              soft_candidates=bool(params.get("soft_candidates", SOFT_CANDIDATES)),
                              calibrate=bool(params.get("calibrate", CALIBRATE)),
                              show_progress=False, provenance=provenance, progress=progress)
    # Files first, row last, under an id derived from the job: a redelivery re-uploads the
    # same keys and finds the row, so nothing is registered half-stored or twice.
    model_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"labelfree:detector:{job_id}"))
    prefix = f"models/{model_id}"
    det = work / "det"
    for path in sorted(det.rglob("*")):
        rel = path.relative_to(det)
        if path.is_file() and rel.parts[0] not in _NOT_STORED:
            store.put_file(f"{prefix}/{rel.as_posix()}", path)
    with session_scope() as session:
        if session.get(Model, model_id) is None:
            session.add(Model(id=model_id, kind=MODEL_KIND, name=params.get("name") or f"detector-{job_id[:8]}",
                              store_prefix=prefix, project_id=project_id, run_id=run_id, job_id=job_id,
                              dataset_id=explain_result.get("dataset_id"), manifest=manifest,
                              metrics=manifest.get("metrics", {})))
    log.info("detector %s trained from explain job %s", model_id, params["explain_job_id"])
    return {"model_id": model_id, "store_prefix": prefix, "metrics": manifest.get("metrics", {})}
