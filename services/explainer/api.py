"""The explainer service's HTTP API.

``POST /v1/explanations`` {model_id, dataset_id, method?, samples?, seed?} -> 202 {job_id}:
queues the Spark explain job; poll ``/v1/jobs/{job_id}``. ``GET /v1/explanations/{job_id}/boxes``
-> the boxes that job wrote (pixels, xywh). Handlers validate, write the job row and enqueue.
"""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from labelfree.core import jobs
from labelfree.core.app import create_app
from labelfree.core.db import get_session
from labelfree.core.errors import LabelfreeError, not_found
from labelfree.core.models import Box, Dataset, Model

router = APIRouter(prefix="/v1/explanations", tags=["explanations"])


class ExplainRequest(BaseModel):
    model_config = {"extra": "forbid", "protected_namespaces": ()}
    model_id: uuid.UUID
    dataset_id: uuid.UUID
    method: Literal["foreground", "cam", "lime", "lime+cam"] = "foreground"
    samples: int = Field(256, ge=2, le=5000)
    seed: int = 0


@router.post("", status_code=202)
def create_explanation(body: ExplainRequest, response: Response, session: Session = Depends(get_session)) -> dict:
    """Queue boxes for the dataset's positive images from the classifier; poll ``/v1/jobs/{job_id}``."""
    from labelfree.core.celery_app import submit_job
    from labelfree.explainer.tasks import explain_job

    model_id, dataset_id = str(body.model_id), str(body.dataset_id)
    model = session.get(Model, model_id)
    if model is None or model.kind != "classifier":
        raise not_found("classifier", model_id)
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise not_found("dataset", dataset_id)
    params = {"model_id": model_id, "dataset_id": dataset_id, "method": body.method,
              "samples": body.samples, "seed": body.seed}
    return submit_job(session, response, explain_job, jobs.JobKind.EXPLAIN, params,
                      project_id=dataset.project_id, inputs={"model_id": model_id, "dataset_id": dataset_id})


@router.get("/{job_id}/boxes")
def read_boxes(job_id: uuid.UUID, limit: int = 1000, session: Session = Depends(get_session)) -> dict:
    """Boxes written by an explain job: image id, xywh pixels, score."""
    if not 1 <= limit <= 100_000:
        raise LabelfreeError("bad_request", f"limit must be in 1..100000, got {limit}")
    rows = session.execute(select(Box).where(Box.job_id == str(job_id)).order_by(Box.id).limit(limit)).scalars()
    return {"job_id": str(job_id), "boxes": [{"image_id": b.image_id, "bbox": [b.x, b.y, b.w, b.h],
                                              "score": b.score, "model_id": b.model_id} for b in rows]}


app = create_app("explainer", [router])
