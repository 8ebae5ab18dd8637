"""Celery task on the ``explain`` queue: a classifier + a dataset's positive images -> boxes.

Thin wrapper: read the positive images and the model from the database and object store,
run the Spark job (``spark_job.explain_with_spark``) on ``settings.spark_master``, then write
the ``boxes`` rows (job, run and model ids), a COCO-style export, one overlay PNG per labelled
image and (method "foreground") the fitted per-dataset model to the store.
Idempotent per job id: a redelivered job replaces its own boxes.
"""

from __future__ import annotations

import json
import shutil

from sqlalchemy import delete, select

from labelfree.core.celery_app import QUEUE_EXPLAIN, job_task
from labelfree.core.db import session_scope
from labelfree.core.errors import LabelfreeError
from labelfree.core.models import Box, Dataset, Image, Job, Model
from labelfree.core.settings import get_settings
from labelfree.core.store import get_store

EXPLAIN_TASK = "labelfree.explainer.explain"
BOX_SOURCE = "explainer"


def explain_params(params: dict):
    """Validate job params -> LabelConfig; raises LabelfreeError(bad_request) naming the bad value."""
    from labelfree.explainer.labeller import LabelConfig

    for key in ("model_id", "dataset_id"):
        if not params.get(key):
            raise LabelfreeError("bad_request", f"explain job needs {key!r}")
    try:
        return LabelConfig(method=params.get("method", LabelConfig.method),
                           n_samples=int(params.get("samples", LabelConfig.n_samples)))
    except (TypeError, ValueError) as exc:
        raise LabelfreeError("bad_request", str(exc)) from exc


@job_task(EXPLAIN_TASK, QUEUE_EXPLAIN)
def explain_job(job_id: str, params: dict, progress) -> dict:
    """``params``: ``model_id``, ``dataset_id``, optional ``method``, ``samples``, ``seed``.
    Result: ``images``, ``boxes``, ``skipped`` (file + reason), ``coco_key``, ``overlays_prefix``
    (``<prefix>/<image id>.png`` per labelled image), ``foreground_key`` (the fitted model's JSON, or None)."""
    from labelfree.explainer.coco import to_coco
    from labelfree.explainer.spark_job import explain_with_spark, fit_foreground_with_spark, overlay_path

    config = explain_params(params)
    settings, store = get_settings(), get_store()
    with session_scope() as session:
        model = session.get(Model, params["model_id"])
        if model is None:
            raise LabelfreeError("not_found", f"model {params['model_id']} not found")
        rows = session.execute(select(Image.id, Image.store_key, Image.file_name).where(
            Image.dataset_id == params["dataset_id"], Image.label == "positive").order_by(Image.sha256)).all()
        prefix, model_id = model.store_prefix, model.id
        # The boxes' category is the concept (the dataset's query), which the detector trained on
        # them reports as its label; not the classifier's name ("classifier-<query>").
        dataset = session.get(Dataset, params["dataset_id"])
        category = dataset.query if dataset is not None else model.name
        run_id = session.get(Job, job_id).run_id
    if not rows:
        raise LabelfreeError("bad_request", f"dataset {params['dataset_id']} has no positive images")
    model_dir = store.get_dir(prefix, settings.data_dir / "work" / "explain" / job_id / "model")
    progress(0.05)
    items = [(image_id, str(store.local_path(key))) for image_id, key, _ in rows]
    foreground = None
    if config.method == "foreground":  # per-dataset statistics: fitted once on its positives, then shipped
        try:
            foreground = fit_foreground_with_spark([p for _, p in items], model_dir, master=settings.spark_master,
                                                   config=config)
        except ValueError as exc:
            raise LabelfreeError("bad_request", str(exc)) from exc
        progress(0.4)
    overlays = settings.data_dir / "work" / "explain" / job_id / "overlays"  # written by the executors
    records = explain_with_spark(items, model_dir, master=settings.spark_master, config=config,
                                 seed=int(params.get("seed", 0)), foreground=foreground, overlay_dir=overlays)
    progress(0.9)
    overlays_prefix = f"overlays/{job_id}"
    for record in records:
        if not record["error"] and overlay_path(overlays, record["key"]).is_file():
            store.put_file(f"{overlays_prefix}/{record['key']}.png", overlay_path(overlays, record["key"]))
    shutil.rmtree(overlays, ignore_errors=True)
    foreground_key = None
    if foreground is not None:  # the fitted model itself, so a report can rerun this teacher on new photos
        foreground_key = f"boxes/{job_id}.foreground.json"
        store.put(foreground_key, json.dumps(foreground.to_dict()).encode())
    # file_name = the object-store key, so the detector task can fetch each image (its contract)
    names = {image_id: key for image_id, key, _name in rows}
    with session_scope() as session:
        session.execute(delete(Box).where(Box.job_id == job_id))  # redelivery: replace, never duplicate
        for record in records:
            for (x1, y1, x2, y2), score in zip(record["boxes"], record["scores"]):
                session.add(Box(image_id=record["key"], job_id=job_id, run_id=run_id, model_id=model_id,
                                source=BOX_SOURCE, x=x1, y=y1, w=x2 - x1, h=y2 - y1, score=score))
    coco = to_coco([{**r, "key": names[r["key"]]} for r in records], category=str(category))
    coco_key = f"boxes/{job_id}.json"
    store.put(coco_key, json.dumps(coco).encode())
    return {"images": len(coco["images"]), "boxes": len(coco["annotations"]),
            "skipped": coco["skipped"], "coco_key": coco_key, "boxes_key": coco_key, "method": config.method,
            "dataset_id": params["dataset_id"], "classifier_model_id": model_id,
            "overlays_prefix": overlays_prefix, "foreground_key": foreground_key,
            "foreground": None if foreground is None else
            {k: v for k, v in foreground.to_dict().items() if k != "coef"}}
