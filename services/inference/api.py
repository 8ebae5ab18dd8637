"""The inference service's HTTP API.

- ``POST /v1/detect``: one image (multipart field ``image`` or ``file``, or a raw ``image/*`` /
  ``application/octet-stream`` body) -> one MegaDetector ``images[]`` entry plus timing.
- ``POST /v1/surveys/{id}/detect``: 202 with the id of a ``detect`` job over the whole survey.
- ``GET /v1/jobs/{id}/results?format=json|csv``: that job's MegaDetector JSON or CSV.

Bad input gets a 4xx naming the problem; Triton down or not ready gets 503 + Retry-After.
"""

from __future__ import annotations

import uuid
from typing import AsyncIterator, Literal
from urllib.parse import parse_qsl

from fastapi import APIRouter, Body, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from labelfree.core import jobs
from labelfree.core.app import create_app, labelfree_error_response
from labelfree.core.celery_app import enqueue
from labelfree.core.db import session_scope
from labelfree.core.errors import LabelfreeError, bad_request, not_found
from labelfree.core.models import Survey
from labelfree.core.settings import get_settings
from labelfree.inference import results
from labelfree.inference.runtime import detect_one, detect_one_async, detector_ready
from labelfree.inference.sequences import DEFAULT_GAP_SECONDS

router = APIRouter(tags=["inference"])

RAW_TYPES = ("image/", "application/octet-stream")
FORM_FIELDS = ("image", "file")


def _too_large(size: int | str, limit: int) -> LabelfreeError:
    return LabelfreeError("payload_too_large", f"request body is {size} bytes, over the limit of {limit} bytes "
                                               "(setting LABELFREE_MAX_UPLOAD_BYTES)")


def _check_length(length: str | None, limit: int) -> None:
    """Refuse a declared Content-Length over ``limit`` before reading anything."""
    if length is not None:
        if not length.isdigit():
            raise bad_request(f"Content-Length {length!r} is not a number")
        if int(length) > limit:
            raise _too_large(int(length), limit)


async def _collect(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes even when no Content-Length was sent."""
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _too_large(f"more than {limit}", limit)
        parts.append(chunk)
    return b"".join(parts)


def _content_type(value: str) -> str:
    return value.split(";")[0].strip().lower()


async def _read_image(request: Request, limit: int) -> tuple[bytes, str | None]:
    """The image bytes and the client's file name, from a multipart form or a raw body."""
    _check_length(request.headers.get("content-length"), limit)
    ctype = _content_type(request.headers.get("content-type", ""))
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=8)
        except Exception as exc:  # starlette raises its own types for malformed forms
            raise bad_request(f"malformed multipart body: {exc}") from None
        upload = next((form[f] for f in FORM_FIELDS if f in form), None)
        if upload is None or isinstance(upload, str):
            raise bad_request(f"multipart body needs a file field named one of {list(FORM_FIELDS)}")
        if upload.size is not None and upload.size > limit:
            raise _too_large(upload.size, limit)
        return await upload.read(), upload.filename
    if ctype.startswith(RAW_TYPES):
        return await _collect(request.stream(), limit), None
    raise LabelfreeError("unsupported_media_type",
                         f"content type {ctype or '(none)'!r} is not accepted; send image/*, "
                         "application/octet-stream or multipart/form-data")


@router.post("/v1/detect")
async def detect(request: Request,
                 threshold: float | None = Query(None, ge=0.0, le=1.0, description="minimum conf"),
                 file: str | None = Query(None, description="name to echo as images[].file")) -> JSONResponse:
    """Detect on one image; returns ``{"image": {...}, "detection_categories", "timing_ms", ...}``."""
    data, filename = await _read_image(request, get_settings().max_upload_bytes)
    if not data:
        raise bad_request("empty image body")
    name = file or filename or "image"
    if _in_process():
        result = await detect_one_async(data, file=name, threshold=threshold)
    else:
        result = await run_in_threadpool(detect_one, data, file=name, threshold=threshold)
    # Already plain JSON types: skip FastAPI's jsonable_encoder walk over up to K detections.
    return JSONResponse(result)


@router.post("/v1/surveys/{survey_id}/detect", status_code=202)
def detect_survey(survey_id: uuid.UUID, options: dict | None = Body(None)) -> JSONResponse:
    """Start a ``detect`` job over every image of the survey; 202 with the job id.

    Optional JSON body: ``batch_size`` (1..256), ``threshold`` (0..1), ``gap_seconds`` (>= 0).
    """
    from labelfree.inference.tasks import detect_survey_task

    params = _survey_params(str(survey_id), options or {})
    with session_scope() as session:
        if session.get(Survey, params["survey_id"]) is None:
            raise not_found("survey", survey_id)
        job_id = jobs.create_job(session, jobs.JobKind.DETECT, params).id
    enqueue(detect_survey_task, job_id)
    return JSONResponse({"job_id": job_id, "state": "queued", "survey_id": params["survey_id"]}, status_code=202,
                        headers={"Location": f"/v1/jobs/{job_id}"})


def _survey_params(survey_id: str, options: dict) -> dict:
    unknown = set(options) - {"batch_size", "threshold", "gap_seconds"}
    if unknown:
        raise bad_request(f"unknown options {sorted(unknown)}; allowed: batch_size, threshold, gap_seconds")
    params = {"survey_id": survey_id, "batch_size": options.get("batch_size", 16),
              "threshold": options.get("threshold"), "gap_seconds": options.get("gap_seconds", DEFAULT_GAP_SECONDS)}
    if not isinstance(params["batch_size"], int) or not 1 <= params["batch_size"] <= 256:
        raise bad_request(f"batch_size must be an int in 1..256, got {params['batch_size']!r}")
    thr = params["threshold"]
    if thr is not None and (not isinstance(thr, (int, float)) or not 0 <= thr <= 1):
        raise bad_request(f"threshold must be a number in [0, 1], got {thr!r}")
    gap = params["gap_seconds"]
    if not isinstance(gap, (int, float)) or gap < 0:
        raise bad_request(f"gap_seconds must be a number >= 0, got {gap!r}")
    return params


@router.get("/v1/jobs/{job_id}/results")
def job_results(job_id: uuid.UUID, format: Literal["json", "csv"] = Query("json")) -> Response:
    """A finished detect job's results as MegaDetector JSON or CSV."""
    doc = results.job_results_json(str(job_id))
    if format == "csv":
        from labelfree.inference.formats import results_csv

        return Response(results_csv(doc), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="detections-{job_id}.csv"'})
    return JSONResponse(doc)


def _in_process() -> bool:
    """True when detection runs in this process (ONNX Runtime), not in a remote Triton.

    In-process ONNX Runtime is CPU work, and `up` runs one API process per core: running it on
    the event loop beats a thread-pool hop (GIL hand-offs, wake-ups) by ~20% under load
    (bench/results/inference.md). A Triton call waits on the network instead, so it goes to a
    thread, and concurrent requests reach Triton's dynamic batcher together.
    """
    return get_settings().inference_backend == "onnxruntime"


def _simple_query(raw: bytes) -> dict[str, str] | None:
    """``threshold``/``file`` from a query string the fast path can take as is; None sends the
    request through FastAPI, whose validation answers anything unusual (422 with the reason)."""
    query: dict[str, str] = {}
    for key, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        if key in query:
            return None
        query[key] = value
    threshold = query.get("threshold")
    if threshold is not None:
        try:
            if not 0.0 <= float(threshold) <= 1.0:
                return None
        except ValueError:
            return None
    return query


class RawDetectRoute:
    """``POST /v1/detect`` with a raw image body as a pure ASGI route: the hot path of a camera-trap
    client, served without FastAPI's routing and parameter machinery (~0.4 ms a request, a fifth of
    the whole at the default detector; bench/results/inference.md).

    Same limits, errors and answer as the FastAPI endpoint, which still serves multipart bodies,
    unusual query strings and the Triton backend. Sits inside ObserveMiddleware, so its requests
    are timed, counted and logged under the route ``/v1/detect``.
    """

    def __init__(self, app, route_path: str = "/v1/detect"):
        self.app = app
        self.path = route_path
        self.route = next(r for r in router.routes if getattr(r, "path", None) == route_path)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        ctype = _content_type(headers.get(b"content-type", b"").decode("latin-1"))
        query = _simple_query(scope.get("query_string", b""))
        if query is None or not ctype.startswith(RAW_TYPES) or not _in_process():
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        try:
            limit = get_settings().max_upload_bytes
            length = headers.get(b"content-length")
            _check_length(length.decode("latin-1") if length is not None else None, limit)
            data = await _collect(_body_chunks(receive), limit)
            if not data:
                raise bad_request("empty image body")
            threshold = query.get("threshold")
            result = await detect_one_async(data, file=query.get("file") or "image",
                                            threshold=float(threshold) if threshold is not None else None)
            response = JSONResponse(result)
        except LabelfreeError as exc:
            response = labelfree_error_response("inference", exc)
        except ClientDisconnect:
            return
        await response(scope, receive, send)


async def _body_chunks(receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def build_app():
    """The inference app: REST routes, /readyz including the model, gRPC beside it (``grpc_port``; 0 = off)."""
    from labelfree.inference.grpc_server import with_grpc

    return with_grpc(create_app("inference", [router], ready_checks=[detector_ready],
                                inner_middleware=[(RawDetectRoute, {})]))


app = build_app()
