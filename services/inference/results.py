"""Read a finished ``detect`` job's results back as a MegaDetector batch document."""

from __future__ import annotations

from sqlalchemy import select

from labelfree.core import jobs
from labelfree.core.db import session_scope
from labelfree.core.errors import LabelfreeError, not_found
from labelfree.core.models import DetectionResult, Image, Survey
from labelfree.inference.formats import ImageResult, results_json
from labelfree.inference.sequences import camera_of, sequence_verdicts


def job_results_json(job_id: str) -> dict:
    """The job's results: a validated MegaDetector 1.x document with ``sequences`` verdicts.

    Raises not_found for an unknown job or one that is not a detect job, and conflict while
    the job has not succeeded.
    """
    with session_scope() as session:
        job = jobs.get_job(session, job_id)
        if job.kind != jobs.JobKind.DETECT.value:
            raise not_found("detect job", job_id)
        if job.state != jobs.JobState.SUCCEEDED.value:
            raise LabelfreeError("conflict", f"job {job_id} is {job.state} (progress {job.progress:.0%}); "
                                             "results are ready when it has succeeded")
        result = dict(job.result or {})
        survey = session.get(Survey, (job.params or {}).get("survey_id"))
        survey_camera = survey.camera if survey else None
        rows = session.execute(
            select(DetectionResult, Image.file_name, Image.captured_at, Image.camera_make, Image.camera_model,
                   Image.id).join(Image, Image.id == DetectionResult.image_id)
            .where(DetectionResult.job_id == job_id).order_by(Image.file_name, Image.id)
        ).all()
    items, sequence_of, conf_of, file_of = [], {}, {}, {}
    for res, file_name, captured_at, make, model, image_id in rows:
        file = file_name or image_id
        items.append(ImageResult(file=file, detections=res.detections, failure=res.failure, captured_at=captured_at,
                                 camera=camera_of(file_name, survey_camera=survey_camera, make=make, model=model),
                                 sequence_id=res.sequence_id))
        if res.sequence_id:
            sequence_of[image_id] = res.sequence_id
            conf_of[image_id] = res.max_conf
        file_of[image_id] = file
    verdicts = sequence_verdicts(sequence_of, conf_of)
    for v in verdicts.values():
        v["best_file"] = file_of[v.pop("best")]
    metadata = {"typical_detection_threshold": result.get("threshold"), "backend": result.get("backend"),
                "sequence_gap_seconds": result.get("gap_seconds")}
    return results_json(items, result.get("detection_categories") or {"1": "animal"},
                        detector=result.get("detector", "labelfree-detector"), sequences=verdicts,
                        detector_metadata={k: v for k, v in metadata.items() if v is not None})
