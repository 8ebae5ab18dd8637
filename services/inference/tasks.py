"""The ``detect`` job: run the detector over every image of a survey, in batches.

Resumable: each batch's results are committed together, and a (re)started job skips the
images that already have a row for this job (unique ``(job_id, image_id)``), so a worker
killed mid-way leaves a job that the redelivery finishes without duplicating a result.
After the last batch, images are grouped into bursts and each result gets its
``sequence_id``.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

from sqlalchemy import select, update

from labelfree.core.celery_app import QUEUE_DETECT, job_task
from labelfree.core.db import session_scope
from labelfree.core.errors import LabelfreeError, not_found
from labelfree.core.images import decode_image, detector_preview_side
from labelfree.core.models import DetectionResult, Image, Survey
from labelfree.core.settings import get_settings
from labelfree.core.store import get_store
from labelfree.inference.backends import Detector
from labelfree.inference.postprocess import max_conf
from labelfree.inference.runtime import get_detector
from labelfree.inference.sequences import DEFAULT_GAP_SECONDS, Shot, assign_sequences, camera_of, sequence_verdicts

log = logging.getLogger(__name__)

TASK_DETECT_SURVEY = "labelfree.inference.detect_survey"
TASK_DEPLOY_DETECTOR = "labelfree.inference.deploy_detector"
# Decoding runs in threads while ONNX Runtime works (both release the GIL for most of their work).
DECODE_THREADS = 2


def _insert_ignoring_duplicates(session, rows: list[dict]) -> int:
    """INSERT the rows, skipping any (job_id, image_id) already stored; return how many were new."""
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise ValueError(f"unsupported database dialect {dialect!r}")
    stmt = insert(DetectionResult).values(rows).on_conflict_do_nothing(index_elements=["job_id", "image_id"])
    return session.execute(stmt).rowcount or 0


def _load(store, key: str, max_pixels: int, preview_side: int):
    """(decoded PIL image, None) or (None, failure reason) for one stored photo."""
    try:
        return decode_image(store.get(key), max_pixels=max_pixels, preview_side=preview_side), None
    except LabelfreeError as exc:
        return None, exc.detail


def detect_batch(detector: Detector, images: Sequence, threshold: float | None) -> list[list[dict] | None]:
    """Detections for the decodable images of a batch; None stays None (a failed decode)."""
    ok = [i for i, im in enumerate(images) if im is not None]
    out: list[list[dict] | None] = [None] * len(images)
    if ok:
        for i, dets in zip(ok, detector.detect([images[i] for i in ok], threshold=threshold)):
            out[i] = dets
    return out


def run_survey_detection(job_id: str, params: dict, progress: Callable[[float], None],
                         detector: Detector | None = None) -> dict:
    """Detect on every image of ``params["survey_id"]`` not yet done for ``job_id``; return a summary."""
    survey_id = params["survey_id"]
    batch_size = int(params.get("batch_size", 16))
    threshold = params.get("threshold")
    gap = float(params.get("gap_seconds", DEFAULT_GAP_SECONDS))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    with session_scope() as session:
        survey = session.get(Survey, survey_id)
        if survey is None:
            raise not_found("survey", survey_id)
        survey_camera = survey.camera
        images = session.execute(
            select(Image.id, Image.store_key, Image.file_name, Image.captured_at, Image.camera_make,
                   Image.camera_model).where(Image.survey_id == survey_id).order_by(Image.file_name, Image.id)
        ).all()
        done = set(session.execute(select(DetectionResult.image_id)
                                   .where(DetectionResult.job_id == job_id)).scalars())
    detector = detector or get_detector()
    todo = [im for im in images if im.id not in done]
    total = max(1, len(images))
    store, max_pixels = get_store(), get_settings().max_image_pixels
    preview = detector_preview_side(detector.spec.input_size)
    inserted = 0
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        # Decode batch i+1 while batch i is in the detector.
        batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
        pending = pool.map(lambda im: _load(store, im.store_key, max_pixels, preview), batches[0]) if batches else None
        for b, batch in enumerate(batches):
            loaded = list(pending)
            if b + 1 < len(batches):
                pending = pool.map(lambda im: _load(store, im.store_key, max_pixels, preview), batches[b + 1])
            detections = detect_batch(detector, [img for img, _ in loaded], threshold)
            rows = [{"job_id": job_id, "image_id": im.id, "detections": dets, "failure": failure,
                     "max_conf": max_conf(dets)}
                    for im, (_, failure), dets in zip(batch, loaded, detections)]
            with session_scope() as session:
                inserted += _insert_ignoring_duplicates(session, rows)
            progress(0.95 * (len(done) + inserted) / total)
    sequences = _assign_sequences(job_id, images, survey_camera, gap)
    progress(1.0)
    return {"survey_id": survey_id, "images": len(images), "processed_this_attempt": inserted,
            "resumed_from": len(done), "sequences": sequences, "detector": detector.spec.name,
            "detection_categories": detector.spec.categories, "backend": detector.backend.name,
            "threshold": detector.spec.threshold if threshold is None else threshold, "gap_seconds": gap}


def _assign_sequences(job_id: str, images: Sequence, survey_camera: str | None, gap: float) -> dict:
    """Write each result's sequence_id; return counts of sequences and those with a detection."""
    shots = [Shot(im.id, camera_of(im.file_name, survey_camera=survey_camera, make=im.camera_make,
                                   model=im.camera_model), im.captured_at) for im in images]
    sequence_of = assign_sequences(shots, gap)
    with session_scope() as session:
        confs = dict(session.execute(select(DetectionResult.image_id, DetectionResult.max_conf)
                                     .where(DetectionResult.job_id == job_id)).all())
        by_seq: dict[str, list[str]] = {}
        for image_id, seq in sequence_of.items():
            by_seq.setdefault(seq, []).append(image_id)
        for seq, ids in by_seq.items():
            session.execute(update(DetectionResult).where(DetectionResult.job_id == job_id,
                                                          DetectionResult.image_id.in_(ids))
                            .values(sequence_id=seq))
    verdicts = sequence_verdicts(sequence_of, confs)
    return {"count": len(verdicts), "with_detections": sum(1 for v in verdicts.values() if v["max_conf"] > 0)}


@job_task(TASK_DETECT_SURVEY, QUEUE_DETECT)
def detect_survey_task(job_id: str, params: dict, progress: Callable[[float], None]) -> dict:
    """Celery entry point: the job row holds the params."""
    return run_survey_detection(job_id, params, progress)


@job_task(TASK_DEPLOY_DETECTOR, QUEUE_DETECT)
def deploy_detector_task(job_id: str, params: dict, progress: Callable[[float], None]) -> dict:
    """The run's last step: serve the new detector (registry, and the Triton repository if set)."""
    from labelfree.inference.deploy import deploy_detector

    if not params.get("model_id"):
        raise LabelfreeError("invalid", "deploy job params name no model_id")
    s = get_settings()
    return deploy_detector(params["model_id"], triton_repository=s.triton_repository, triton_model=s.triton_model,
                           work_dir=s.data_dir / "work" / "deploy")
