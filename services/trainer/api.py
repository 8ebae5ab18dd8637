"""The trainer service's HTTP API.

``POST /v1/classifiers`` {dataset_id} -> 202 {job_id}; ``GET /v1/classifiers/{id}`` -> the
registered classifier (by model id, or by the id of the job that trained it). The
detector routes (``labelfree.trainer.detector.api``) are mounted on the same app.
"""

from __future__ import annotations

import importlib
import importlib.util
import uuid

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from labelfree.core import jobs
from labelfree.core.app import create_app
from labelfree.core.db import get_session
from labelfree.core.errors import LabelfreeError, not_found
from labelfree.core.models import Dataset, Image, Model

router = APIRouter(prefix="/v1/classifiers", tags=["classifiers"])
MIN_PER_CLASS = 10


class ClassifierRequest(BaseModel):
    model_config = {"extra": "forbid"}
    dataset_id: uuid.UUID
    name: str | None = Field(None, max_length=200)
    augment: bool = False
    spark: bool = False


@router.post("", status_code=202)
def create_classifier(body: ClassifierRequest, response: Response, session: Session = Depends(get_session)) -> dict:
    """Queue training on the dataset's positive/negative images; poll ``/v1/jobs/{job_id}``."""
    from labelfree.core.celery_app import submit_job
    from labelfree.trainer.tasks import train_classifier_job

    dataset_id = str(body.dataset_id)
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise not_found("dataset", dataset_id)
    counts = dict(session.execute(
        select(Image.label, func.count()).where(Image.dataset_id == dataset_id).group_by(Image.label)).all())
    for label in ("positive", "negative"):
        if counts.get(label, 0) < MIN_PER_CLASS:
            raise LabelfreeError("invalid", f"dataset {dataset_id} has {counts.get(label, 0)} {label} images; "
                                            f"at least {MIN_PER_CLASS} are needed")
    params = {"dataset_id": dataset_id, "name": body.name, "augment": body.augment, "spark": body.spark}
    return submit_job(session, response, train_classifier_job, jobs.JobKind.TRAIN, params,
                      project_id=dataset.project_id, inputs={"dataset_id": dataset_id})


@router.get("/{classifier_id}")
def read_classifier(classifier_id: uuid.UUID, session: Session = Depends(get_session)) -> dict:
    key = str(classifier_id)
    model = session.get(Model, key)
    if model is None:
        model = session.execute(select(Model).where(Model.job_id == key, Model.kind == "classifier")).scalar()
    if model is None or model.kind != "classifier":
        raise not_found("classifier", key)
    return {"id": model.id, "name": model.name, "store_prefix": model.store_prefix, "project_id": model.project_id,
            "dataset_id": model.dataset_id, "job_id": model.job_id, "deployed": model.deployed,
            "manifest": model.manifest, "metrics": model.metrics, "created_at": model.created_at.isoformat()}


def _routers() -> list[APIRouter]:
    routers = [router]
    if importlib.util.find_spec("labelfree.trainer.detector.api") is not None:
        routers.append(importlib.import_module("labelfree.trainer.detector.api").router)
    return routers


app = create_app("trainer", _routers())
