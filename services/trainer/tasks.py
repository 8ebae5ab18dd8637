"""Celery task on the ``train`` queue: a dataset's labelled images -> a registered classifier.

Thin wrapper: read the dataset's positive/negative images from the database and object
store, call :func:`labelfree.trainer.train.train_classifier`, upload MODEL_DIR to
``models/<model_id>/`` and write the ``models`` row (manifest + metrics).
"""

from __future__ import annotations

import json
import logging
import uuid

from sqlalchemy import select

from labelfree.core.celery_app import QUEUE_TRAIN, job_task
from labelfree.core.db import session_scope
from labelfree.core.errors import LabelfreeError, not_found
from labelfree.core.models import Dataset, Image, Model
from labelfree.core.settings import get_settings
from labelfree.core.store import get_store

TRAIN_CLASSIFIER_TASK = "labelfree.trainer.train_classifier"
MODEL_KIND = "classifier"
log = logging.getLogger(__name__)


def dataset_image_keys(session, dataset_id: str) -> tuple[Dataset, list[str], list[str]]:
    """(dataset, positive store keys, negative store keys); unlabelled images are left out."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise not_found("dataset", dataset_id)
    rows = session.execute(
        select(Image.store_key, Image.label).where(Image.dataset_id == dataset_id,
                                                  Image.label.in_(("positive", "negative")))
        .order_by(Image.sha256)
    ).all()
    return (dataset, [k for k, label in rows if label == "positive"],
            [k for k, label in rows if label == "negative"])


def _throttled(progress, step: float = 0.02):
    """Report only when progress moved by ``step``: each report is a database write."""
    last = [-1.0]

    def report(fraction: float, stage: str = "") -> None:
        if fraction - last[0] >= step or fraction >= 1.0:
            last[0] = fraction
            progress(fraction)

    return report


@job_task(TRAIN_CLASSIFIER_TASK, QUEUE_TRAIN)
def train_classifier_job(job_id: str, params: dict, progress) -> dict:
    """``params``: ``dataset_id``, optional ``name``, ``augment`` (bool), ``spark`` (bool: featurise
    through Spark on ``spark_master``). Result: ``model_id``, ``store_prefix``, ``metrics``."""
    from labelfree.trainer.train import train_classifier

    # Derived from the job id: a redelivery finds the same row and the same keys.
    model_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"labelfree:classifier:{job_id}"))
    with session_scope() as session:
        existing = session.get(Model, model_id)
        if existing is not None:
            return {"model_id": existing.id, "store_prefix": existing.store_prefix, "metrics": existing.metrics}
        dataset, pos_keys, neg_keys = dataset_image_keys(session, params["dataset_id"])
        query, project_id = dataset.query, dataset.project_id
    settings, store = get_settings(), get_store()
    work = settings.data_dir / "work" / "classifiers" / job_id
    try:
        metrics = train_classifier(
            [store.local_path(k) for k in pos_keys], [store.local_path(k) for k in neg_keys], work / "model",
            backbone=settings.backbone, work_dir=settings.data_dir / "cache", store=store,
            augment=("flip", "crop") if params.get("augment") else (),
            spark_master=settings.spark_master if params.get("spark") else None,
            labels={"positive": query, "negative": f"not {query}"},
            sources={"dataset_id": params["dataset_id"], "query": query},
            progress=_throttled(progress),
        )
    except ValueError as exc:  # too few images etc.: the input is wrong, a retry cannot help
        raise LabelfreeError("invalid", str(exc)) from exc
    prefix = f"models/{model_id}"
    store.put_dir(prefix, work / "model")
    manifest = json.loads((work / "model" / "manifest.json").read_text())
    summary = {k: metrics["validation"][k] for k in ("roc_auc", "pr_auc", "accuracy", "threshold")}
    summary["ece"] = metrics["validation"]["calibration"]["ece"]
    with session_scope() as session:
        if session.get(Model, model_id) is None:
            session.add(Model(id=model_id, kind=MODEL_KIND, name=params.get("name") or f"classifier-{query}"[:200],
                              store_prefix=prefix, project_id=project_id, dataset_id=params["dataset_id"],
                              job_id=job_id, manifest=manifest, metrics=metrics))
    log.info("classifier %s trained on dataset %s", model_id, params["dataset_id"])
    return {"model_id": model_id, "store_prefix": prefix, "metrics": summary}
