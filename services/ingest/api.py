"""The ingest service's HTTP API: datasets (as jobs) and camera-trap surveys (uploads).

Handlers validate, write rows, enqueue and answer; dataset building runs on the ingest
queue. Uploads are judged per file: 201 when all were stored, 207 when some were
rejected (each rejection carries its own 4xx status, file name and reason), and the
rejections' status when none was stored.
"""

from __future__ import annotations

import tempfile
import uuid
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from labelfree.core import jobs
from labelfree.core.app import create_app
from labelfree.core.db import get_session, session_scope
from labelfree.core.errors import LabelfreeError, not_found
from labelfree.core.models import Dataset, Image
from labelfree.core.settings import get_settings
from labelfree.core.store import get_store
from labelfree.ingest import surveys

router = APIRouter(prefix="/v1", tags=["ingest"])
ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/octet-stream")


class DatasetCreate(BaseModel):
    query: str = Field(min_length=1, max_length=500)
    provider: Literal["openverse", "inaturalist", "wikimedia", "dir"] = "openverse"
    positives: int = Field(1, ge=1, le=100, description="pages of positive results")
    page_size: int = Field(20, ge=1, le=500)
    negatives: str | None = Field(None, description="'random:K': K images for each random English word")
    random_words: int = Field(10, ge=0, le=500)
    hard_negatives: list[str] = Field(default_factory=list, max_length=100)
    hard_negative_pages: int = Field(1, ge=1, le=100)
    min_side: int = Field(64, ge=1)
    seed: int = 0
    project_id: str | None = None
    provider_options: dict = Field(default_factory=dict)
    download: dict = Field(default_factory=dict)


class SurveyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    site: str | None = Field(None, max_length=200)
    camera: str | None = Field(None, max_length=200)
    latitude: float | None = None
    longitude: float | None = None
    exact_coordinates: bool = Field(False, description="store the position as given instead of ~10 km fuzzed")


def dataset_params(body: DatasetCreate) -> dict:
    """The job params for a request (validated as the worker will read them)."""
    from labelfree.ingest.tasks import parse_negatives, validate_params

    try:
        per_word = parse_negatives(body.negatives)
    except ValueError as exc:
        raise LabelfreeError("invalid", str(exc)) from exc
    return validate_params({
        "query": body.query, "provider": body.provider, "positive_pages": body.positives,
        "page_size": body.page_size, "random_words": body.random_words if per_word else 0, "per_word": per_word,
        "hard_negatives": body.hard_negatives, "hard_negative_pages": body.hard_negative_pages,
        "min_side": body.min_side, "seed": body.seed, "provider_options": body.provider_options,
        "download": body.download})


@router.post("/datasets", status_code=202)
def create_dataset(body: DatasetCreate) -> dict:
    """Queue a dataset build; poll ``/v1/datasets/{id}`` (or the job) for progress and summary."""
    from labelfree.ingest.tasks import submit_dataset

    dataset_id, job_id = submit_dataset(dataset_params(body), project_id=body.project_id)
    return {"dataset_id": dataset_id, "job_id": job_id, "state": "queued", "job_url": f"/v1/jobs/{job_id}",
            "dataset_url": f"/v1/datasets/{dataset_id}"}


def _dataset(session: Session, dataset_id: uuid.UUID) -> Dataset:
    dataset = session.get(Dataset, str(dataset_id))
    if dataset is None:
        raise not_found("dataset", dataset_id)
    return dataset


@router.get("/datasets/{dataset_id}")
def read_dataset(dataset_id: uuid.UUID, session: Session = Depends(get_session)) -> dict:
    dataset = _dataset(session, dataset_id)
    job = jobs.get_job(session, dataset.job_id) if dataset.job_id else None
    count = session.scalar(select(func.count()).select_from(Image).where(Image.dataset_id == dataset.id))
    return {"id": dataset.id, "query": dataset.query, "provider": dataset.provider, "params": dataset.params,
            "project_id": dataset.project_id, "job_id": dataset.job_id,
            "state": job.state if job else None, "progress": job.progress if job else None,
            "error": job.error if job else None, "summary": dataset.summary, "image_count": count,
            "manifest_url": f"/v1/datasets/{dataset.id}/manifest" if dataset.manifest_key else None}


@router.get("/datasets/{dataset_id}/manifest")
def read_manifest(dataset_id: uuid.UUID, session: Session = Depends(get_session)) -> Response:
    """The JSON-lines manifest (one image per line; see architecture.md)."""
    dataset = _dataset(session, dataset_id)
    if not dataset.manifest_key:
        raise LabelfreeError("conflict", f"dataset {dataset.id} is not built yet")
    return Response(get_store().get(dataset.manifest_key), media_type="application/x-ndjson")


@router.post("/surveys", status_code=201)
def create_survey(body: SurveyCreate, session: Session = Depends(get_session)) -> dict:
    survey = surveys.create_survey(session, name=body.name, site=body.site, camera=body.camera,
                                   latitude=body.latitude, longitude=body.longitude,
                                   exact_coordinates=body.exact_coordinates)
    return surveys.survey_to_dict(session, survey)


@router.get("/surveys/{survey_id}")
def read_survey(survey_id: uuid.UUID, limit: int = Query(1000, ge=1, le=10000), offset: int = Query(0, ge=0),
                session: Session = Depends(get_session)) -> dict:
    return surveys.survey_to_dict(session, surveys.get_survey(session, str(survey_id)), limit=limit, offset=offset)


def _check_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        if int(declared) == 0:
            raise LabelfreeError("bad_request", "empty body: no files uploaded")
        if int(declared) > limit:
            raise LabelfreeError("payload_too_large", f"request body is {declared} bytes, over {limit}")


def _answer(survey_id: str, report: surveys.UploadReport) -> JSONResponse:
    body = {"survey_id": survey_id, **report.to_dict()}
    if not report.rejected:
        if not report.accepted:
            raise LabelfreeError("bad_request", "no image files in the upload", extra=body)
        return JSONResponse(body, status_code=201)
    if report.accepted:
        return JSONResponse(body, status_code=207)  # some stored, some refused: each item says which
    statuses = {r.status for r in report.rejected}
    status = statuses.pop() if len(statuses) == 1 else 422
    code = {400: "bad_request", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type"}.get(
        status, "invalid")
    detail = "; ".join(f"{r.file}: {r.reason}" for r in report.rejected[:20])
    raise LabelfreeError(code, f"no file was stored: {detail}", extra=body)


def _ingest(survey_id: str, files: list[tuple[str, bytes]] | None, archive) -> surveys.UploadReport:
    """Decode, sanitise and store uploaded files (or a zip's entries); runs on a worker thread."""
    settings = get_settings()
    report = surveys.UploadReport()
    with session_scope() as session:
        survey = surveys.get_survey(session, survey_id)
        if archive is not None:
            files = surveys.iter_archive(archive, max_files=settings.max_archive_files,
                                         max_total_bytes=settings.max_archive_bytes,
                                         max_file_bytes=settings.max_upload_bytes, report=report)
        surveys.ingest_files(session, get_store(), survey, files or [], max_pixels=settings.max_image_pixels,
                             max_file_bytes=settings.max_upload_bytes, report=report)
    return report


@router.post("/surveys/{survey_id}/images", responses={201: {}, 207: {}})
async def upload_images(survey_id: uuid.UUID, request: Request) -> JSONResponse:
    """Multipart upload, any number of file parts (any field name)."""
    settings = get_settings()
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise LabelfreeError("unsupported_media_type",
                             f"expected multipart/form-data with image files, got {ctype or 'no content type'!r}")
    _check_length(request, settings.max_upload_bytes)
    with session_scope() as session:
        surveys.get_survey(session, str(survey_id))
    form = await request.form(max_files=settings.max_archive_files)
    files = []
    for _field, value in form.multi_items():
        if hasattr(value, "read"):
            files.append((value.filename or "", await value.read()))
    await form.close()
    if not files:
        raise LabelfreeError("bad_request", "empty upload: the form holds no file parts")
    report = await run_in_threadpool(_ingest, str(survey_id), files, None)
    return _answer(str(survey_id), report)


@router.post("/surveys/{survey_id}/archive", responses={201: {}, 207: {}})
async def upload_archive(survey_id: uuid.UUID, request: Request) -> JSONResponse:
    """A zip of a survey folder, as the raw body (application/zip) or one multipart file part."""
    settings = get_settings()
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ZIP_TYPES and ctype != "multipart/form-data":
        raise LabelfreeError("unsupported_media_type", f"expected application/zip, got {ctype or 'no content type'!r}")
    _check_length(request, settings.max_archive_bytes)
    with session_scope() as session:
        surveys.get_survey(session, str(survey_id))
    spool = tempfile.SpooledTemporaryFile(max_size=32 * 1024 * 1024)
    try:
        size = 0
        if ctype == "multipart/form-data":
            form = await request.form(max_files=1)
            parts = [v for _, v in form.multi_items() if hasattr(v, "read")]
            if len(parts) != 1:
                raise LabelfreeError("bad_request", f"expected one zip file part, got {len(parts)}")
            while chunk := await parts[0].read(1024 * 1024):
                size += len(chunk)
                spool.write(chunk)
            await form.close()
        else:
            async for chunk in request.stream():
                size += len(chunk)
                if size > settings.max_archive_bytes:
                    raise LabelfreeError("payload_too_large", f"archive is over {settings.max_archive_bytes} bytes")
                spool.write(chunk)
        if size == 0:
            raise LabelfreeError("bad_request", "empty body: no archive uploaded")
        spool.seek(0)
        report = await run_in_threadpool(_ingest, str(survey_id), None, spool)
    finally:
        spool.close()
    return _answer(str(survey_id), report)


# The ingest service is the product's front door, so it also serves projects and runs.
from labelfree.pipeline.api import router as projects_router  # noqa: E402

app = create_app("ingest", [router, projects_router])
