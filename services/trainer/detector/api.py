"""HTTP: ``POST /v1/detectors`` (train a detector from an explain run) -> 202 + job id;
``GET /v1/detectors/{model_id}`` -> the registered detector. Thin: validate, enqueue, read.

The trainer app (``labelfree.trainer.api``) includes :data:`router`.
"""

from __future__ import annotations

import uuid
from typing import Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field, field_validator
from sqlalchemy.orm import Session

from labelfree.core import jobs
from labelfree.core.db import get_session
from labelfree.core.errors import LabelfreeError, not_found
from labelfree.core.models import Model
from labelfree.trainer.detector import (CALIBRATE, EMA, EPOCHS, GROUP_REPEAT, HARD_NEGATIVES, KEEP, MIN_STEPS,
                                        NEG_FRACTION, PASTE, PASTE_MAX, SOFT_CANDIDATES)

router = APIRouter(prefix="/v1/detectors", tags=["detectors"])


class DetectorConfig(BaseModel):
    """The training settings a client may choose (others keep their defaults)."""

    model_config = {"extra": "forbid"}
    epochs: int = Field(EPOCHS, ge=1, le=300)
    min_steps: int = Field(MIN_STEPS, ge=0, le=100_000, description="small datasets train more epochs, until at least this many steps")
    input_size: int = Field(128, ge=64, le=1024)
    batch_size: int = Field(16, ge=1, le=512)
    backbone_mode: Literal["auto", "frozen", "top", "all"] = "auto"
    seed: int = 0
    ema: float = Field(EMA, ge=0.0, lt=1.0, description="decay of the moving average of the weights (0: off)")
    keep: Literal["last", "best"] = Field(KEEP, description="weights to export: the last (averaged) ones, or the "
                                                             "epoch that agreed best with the held-out pseudo-boxes")
    paste: float = Field(PASTE, ge=0.0, le=1.0,
                         description="share of training views of an animal given more, cut from one-box photos")
    neg_fraction: float = Field(NEG_FRACTION, ge=0.0, le=0.9, description="share of each epoch that is negative photos (0.4 "
                                                                 "boxes fewer look-alikes and misses more animals)")
    paste_max: int = Field(PASTE_MAX, ge=1, le=8, description="animals pasted into one view at most: the first, then "
                                                               "each further one with even odds")
    group_repeat: int = Field(GROUP_REPEAT, ge=1, le=8, description="times per epoch a photo whose labels hold two "
                                                                     "or more animals is seen")

    @field_validator("input_size")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % 32:
            raise ValueError(f"input_size must be a multiple of 32, got {value}")
        return value


class DetectorRequest(BaseModel):
    model_config = {"extra": "forbid"}
    explain_job_id: uuid.UUID
    name: str | None = Field(None, max_length=200)
    instance_kind: Literal["cpu", "gpu"] = "cpu"
    self_train_rounds: int = Field(1, ge=0, le=5)
    hard_negatives: float = Field(HARD_NEGATIVES, ge=0.0, le=100.0,
                                  description="in self-training rounds, draw a negative 1 + this x the last "
                                              "round's top score on it times as often (0: uniform)")
    soft_candidates: bool = SOFT_CANDIDATES
    calibrate: bool = Field(CALIBRATE, description="Platt-scale the scores on the held-out split against the teacher")
    config: DetectorConfig = Field(default_factory=DetectorConfig)


@router.post("", status_code=202)
def create_detector(body: DetectorRequest, response: Response, session: Session = Depends(get_session)) -> dict:
    """Queue training on the explain job's boxes; poll ``/v1/jobs/{job_id}``."""
    from labelfree.core.celery_app import submit_job
    from labelfree.trainer.detector.tasks import explain_inputs, train_detector_job

    explain = jobs.get_job(session, str(body.explain_job_id))
    if explain.kind != jobs.JobKind.EXPLAIN.value:
        raise LabelfreeError("invalid", f"job {explain.id} is a {explain.kind} job, not an explain job")
    if explain.state != jobs.JobState.SUCCEEDED.value:
        raise LabelfreeError("conflict", f"explain job {explain.id} is {explain.state}; it must have succeeded")
    explain_inputs(explain.result)
    params = {"explain_job_id": explain.id, "instance_kind": body.instance_kind, "name": body.name,
              "self_train_rounds": body.self_train_rounds, "hard_negatives": body.hard_negatives,
              "soft_candidates": body.soft_candidates,
              "calibrate": body.calibrate, "config": body.config.model_dump()}
    return submit_job(session, response, train_detector_job, jobs.JobKind.TRAIN_DETECTOR, params,
                      project_id=explain.project_id, run_id=explain.run_id, inputs={"explain_job_id": explain.id})


@router.get("/{model_id}")
def read_detector(model_id: uuid.UUID, session: Session = Depends(get_session)) -> dict:
    model = session.get(Model, str(model_id))
    if model is None or model.kind != "detector":
        raise not_found("detector", model_id)
    return {"id": model.id, "name": model.name, "store_prefix": model.store_prefix, "project_id": model.project_id,
            "run_id": model.run_id, "job_id": model.job_id, "deployed": model.deployed,
            "manifest": model.manifest, "metrics": model.metrics, "created_at": model.created_at.isoformat()}
