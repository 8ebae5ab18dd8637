"""Gather a run's report: run id -> :class:`~labelfree.pipeline.report.Report`.

Reads the run's rows and stored objects through the project's own Settings, sessions and
object store, so it works on the embedded profile (SQLite + a folder) and on the cluster
(Postgres + S3) alike. Each section needs one step's output; a section whose step has not
succeeded is left out and named in ``Report.missing``, so a running or failed run still gets
a report of what exists. Like the CLI, this is a face over all services: it reuses the
explainer's labeller and the trainer's detector runner (``report_models``) to draw pictures.
"""

from __future__ import annotations

import dataclasses
import io
import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
from sqlalchemy import select

from labelfree.core.errors import LabelfreeError, not_found
from labelfree.pipeline import report_models as rm
from labelfree.pipeline.report import Report, Tile, thumbnail

STEP_TITLES = {"ingest": "dataset", "train": "classifier", "explain": "explainer boxes",
               "train_detector": "detector", "deploy": "deployment"}
DROP_REASONS = {"urls": "same URL twice", "exact_duplicates": "exact duplicate", "near_duplicates": "near duplicate",
                "conflict_images": "near duplicates found as both positive and negative"}


@dataclass
class RunRows:
    """What the database knows about one run, copied out of the session as plain data."""

    run: dict
    query: str
    jobs: dict[str, dict]
    dataset: dict | None = None
    images: list[dict] = field(default_factory=list)
    classifier: dict | None = None
    detector: dict | None = None
    boxes: dict[str, list[tuple[list[float], float]]] = field(default_factory=dict)  # image id -> [(xyxy, score)]

    def done(self, step: str) -> bool:
        return (self.jobs.get(step) or {}).get("state") == "succeeded"


def _columns(row) -> dict:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}


def read_run(run_id: str) -> RunRows:
    """Copy the run, its step jobs, dataset images, models and explain boxes out of the database."""
    from labelfree.core.db import session_scope
    from labelfree.core.models import Box, Dataset, Image, Model, Project, Run
    from labelfree.core.runs import step_jobs

    try:
        uuid.UUID(run_id)
    except ValueError:
        raise not_found("run", run_id) from None
    with session_scope() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise not_found("run", run_id)
        project = session.get(Project, run.project_id)
        rows = RunRows(run=_columns(run), query=project.query if project else "",
                       jobs={name: _columns(job) for name, job in step_jobs(session, run_id).items()})
        ingest = rows.jobs.get("ingest") or {}
        dataset_id = (ingest.get("result") or {}).get("dataset_id") or (ingest.get("params") or {}).get("dataset_id")
        if rows.done("ingest") and dataset_id and (dataset := session.get(Dataset, dataset_id)) is not None:
            rows.dataset = _columns(dataset)
            rows.images = [_columns(im) for im in session.execute(
                select(Image).where(Image.dataset_id == dataset_id).order_by(Image.sha256)).scalars()]
        for step, attr in (("train", "classifier"), ("train_detector", "detector")):
            model_id = ((rows.jobs.get(step) or {}).get("result") or {}).get("model_id")
            if rows.done(step) and model_id and (model := session.get(Model, model_id)) is not None:
                setattr(rows, attr, _columns(model))
        if rows.done("explain"):
            for box in session.execute(select(Box).where(Box.job_id == rows.jobs["explain"]["id"])
                                       .order_by(Box.image_id, Box.score.desc())).scalars():
                rows.boxes.setdefault(box.image_id, []).append(
                    ([box.x, box.y, box.x + box.w, box.y + box.h], box.score))
    return rows


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    aware = [t if t.tzinfo else t.replace(tzinfo=timezone.utc) for t in (start, end)]
    return round((aware[1] - aware[0]).total_seconds(), 2)


def steps_table(rows: RunRows) -> list[dict]:
    """One row per step: state, progress, attempts, seconds queued and running, error."""
    from labelfree.core.runs import STEP_NAMES

    out = []
    for name in STEP_NAMES:
        job = rows.jobs.get(name)
        if job is None:
            out.append({"step": name, "state": "pending", "progress": 0.0})
            continue
        out.append({"step": name, "state": job["state"], "progress": job["progress"] or 0.0,
                    "attempts": job["attempts"], "queued_seconds": _seconds(job["created_at"], job["started_at"]),
                    "seconds": _seconds(job["started_at"], job["finished_at"]), "error": job["error"],
                    "started_at": job["started_at"].strftime("%Y-%m-%d %H:%M:%S") if job["started_at"] else None})
    return out


def missing_sections(rows: RunRows) -> list[str]:
    """A line per section the run cannot fill yet, naming the step and its state."""
    out = []
    for step, title in STEP_TITLES.items():
        if rows.done(step):
            continue
        job = rows.jobs.get(step)
        state = "not started" if job is None else (
            f"{job['state']} at {job['progress']:.0%}" if job["state"] in ("queued", "running") else job["state"])
        reason = f": {job['error']}" if job and job.get("error") else ""
        out.append(f"{title}: the {step} step is {state}{reason}")
    return out


def _attribution(image: dict) -> dict:
    return {"file": image["file_name"] or image["sha256"][:12], "label": image["label"], "creator": image["creator"],
            "licence": image["licence"] or "unknown", "licence_url": image["licence_url"],
            "landing_url": image["landing_url"] or image["source_url"], "provider": image["provider"]}


def dataset_section(rows: RunRows) -> dict:
    """Counts by label, licence and provider; what was dropped and why; attribution of every photo."""
    summary = rows.dataset.get("summary") or {}
    dropped = {f"download failed: {reason}": n for reason, n in (summary.get("failures") or {}).items() if n}
    for key, reason in DROP_REASONS.items():
        if (summary.get("duplicates") or {}).get(key):
            dropped[reason] = summary["duplicates"][key]
    return {"images": len(rows.images), "provider": rows.dataset.get("provider"),
            "labels": dict(Counter(im["label"] for im in rows.images)),
            "licences": dict(Counter(im["licence"] or "unknown" for im in rows.images)),
            "providers": dict(Counter(im["provider"] or "unknown" for im in rows.images)),
            "found": summary.get("found"), "downloaded": summary.get("downloaded"), "dropped": dropped,
            "hard_negatives": summary.get("hard_negatives") or [], "random_words": summary.get("random_words") or [],
            "attribution": [_attribution(im) for im in sorted(rows.images, key=lambda im: (im["label"] != "positive",
                                                                                           im["file_name"] or ""))]}


def classifier_section(model: dict) -> dict:
    """Validation metrics, curve points and the operating point of the classifier's threshold."""
    metrics = model.get("metrics") or {}
    v = metrics.get("validation") or {}
    out = {k: v.get(k) for k in ("roc_auc", "pr_auc", "accuracy", "balanced_accuracy", "threshold")}
    out.update(ece=(v.get("calibration") or {}).get("ece"), n_validation=v.get("n"),
               n_validation_positive=v.get("n_positive"), n_validation_negative=v.get("n_negative"),
               curves=v.get("curves") or {}, counts=metrics.get("counts") or {}, model_id=model["id"])
    if v.get("true_positive_rate") is not None and v.get("true_negative_rate") is not None:
        out["operating_point"] = {"fpr": 1.0 - v["true_negative_rate"], "tpr": v["true_positive_rate"]}
    return out


def detector_section(model: dict, deployed: bool) -> dict:
    """Agreement with held-out teacher boxes (the detector's own validation) and its training counts."""
    manifest, metrics = model.get("manifest") or {}, model.get("metrics") or {}
    training = manifest.get("training") or {}
    # the registered metrics are the chosen epoch's record: val_ap50, val_corloc, val_miou, ...
    nested = metrics.get("validation") or {}
    validation = {k: metrics.get(f"val_{k}", nested.get(k)) for k in ("ap50", "corloc", "miou")}
    return {"model_id": model["id"], "name": model["name"], "deployed": deployed or bool(model.get("deployed")),
            "input_size": manifest.get("input_size"), "labels": manifest.get("labels"), "epoch": metrics.get("epoch"),
            "validation": {k: v for k, v in validation.items() if v is not None},
            "training": {k: training.get(k) for k in ("n_train", "n_val", "n_positive", "n_negative",
                                                      "n_boxes_teacher", "n_boxes_last_round", "self_train_rounds")
                         if training.get(k) is not None}
                        | _first_round_negatives(training)}


def _first_round_negatives(training: dict) -> dict:
    """The share of negatives the first round's detector boxed at 0.5: look-alikes the next round saw more."""
    scored = training.get("negative_scores_by_round") or []
    if not scored or scored[0].get("share_at_0.5") is None:
        return {}
    return {"negatives_boxed_first_round": scored[0]["share_at_0.5"]}


def detector_holdout(coco: dict, manifest: dict) -> list[str]:
    """``file_name``s of the detector's own validation split: images it never trained on.

    Read from the manifest (``training.val_positives``); a detector trained before that was
    recorded gets its split recomputed with the trainer's function from what it was given: the
    boxed images of the explain COCO in file order, and the seed and fractions in its manifest.
    """
    recorded = (manifest.get("training") or {}).get("val_positives")
    if recorded is not None:
        return list(recorded)
    from labelfree.trainer.detector.train import TrainConfig, _split

    config = {**dataclasses.asdict(TrainConfig()), **((manifest.get("training") or {}).get("config") or {})}
    boxed = {a["image_id"] for a in coco.get("annotations", []) if a["bbox"][2] > 0 and a["bbox"][3] > 0}
    positives = [im["file_name"] for im in coco.get("images", []) if im["id"] in boxed]
    _train, val = _split(positives, config["val_fraction"], config["max_val"],
                         np.random.default_rng(config["seed"]))
    return val


def _credit(image: dict) -> str:
    return " · ".join(p for p in (image.get("creator"), image.get("licence")) if p)


def gather_report(run_id: str, *, gt: Path | None = None, gt_images: Path | None = None, tiles: int = 12,
                  work_dir: Path | None = None, progress: Callable[[str], None] = lambda message: None) -> Report:
    """Everything the report shows for ``run_id``; models run on at most ``tiles`` images per grid
    (and on every human-boxed image when ``gt`` + ``gt_images`` are given)."""
    from labelfree.core.settings import get_settings
    from labelfree.core.store import get_store

    if (gt is None) != (gt_images is None):
        raise LabelfreeError("bad_request", "--gt and --gt-images go together: the human boxes and their images")
    if gt is not None and not Path(gt).is_file():
        raise LabelfreeError("bad_request", f"--gt {gt} is not a file")
    if gt_images is not None and not Path(gt_images).is_dir():
        raise LabelfreeError("bad_request", f"--gt-images {gt_images} is not a folder")
    truth = rm.match_ground_truth(Path(gt), Path(gt_images)) if gt is not None else None
    rows = read_run(run_id)
    store = get_store()
    work = Path(work_dir or get_settings().data_dir / "work" / "reports" / run_id)
    run = rows.run
    report = Report(title=f"{rows.query or 'run'}: a detector learned without labels",
                    run={"id": run["id"], "state": run["state"], "error": run["error"], "query": rows.query,
                         "created_at": run["created_at"].strftime("%Y-%m-%d %H:%M UTC") if run["created_at"] else None,
                         "steps": steps_table(rows)},
                    missing=missing_sections(rows))
    if rows.dataset is not None:
        report.dataset = dataset_section(rows)

    teacher = None
    if rows.classifier is not None:
        report.classifier = classifier_section(rows.classifier)
        if not report.classifier["curves"]:
            report.notes.append("This classifier was trained before ROC/PR curve points were recorded; "
                                "retrain it to see its curves.")
        if rows.done("explain"):
            try:
                classifier_dir = store.get_dir(rows.classifier["store_prefix"], work / "classifier")
                fitted_key = (rows.jobs["explain"]["result"] or {}).get("foreground_key")
                fitted = json.loads(store.get(fitted_key)) if fitted_key else None
                teacher = rm.Teacher(classifier_dir, rows.jobs["explain"]["params"] or {}, fitted)
            except (LabelfreeError, ValueError, OSError) as exc:
                report.notes.append(f"Explainer evidence maps left out: the classifier could not be loaded ({exc}).")

    if rows.done("explain"):
        result = rows.jobs["explain"]["result"] or {}
        report.explainer = {"method": result.get("method"), "images": result.get("images"),
                            "boxes": result.get("boxes"), "skipped": len(result.get("skipped") or []),
                            "boxed_images": len(rows.boxes)}
        progress("drawing the explainer's overlays")
        report.lime_tiles = explainer_tiles(rows, store, teacher, tiles)

    detector_model = None
    if rows.detector is not None:
        report.detector = detector_section(rows.detector, rows.done("deploy"))
        try:
            det_dir = store.get_dir(rows.detector["store_prefix"], work / "detector")
            detector_model = rm.DetectorModel(det_dir)
        except (LabelfreeError, ValueError, OSError) as exc:
            report.notes.append(f"Detector pictures left out: the detector could not be loaded ({exc}).")

    if truth is not None:
        progress(f"scoring against {len(truth.truths)} human-boxed images")
        report.evaluation, det_predictions = rm.evaluate(truth, teacher=teacher, detector=detector_model,
                                                         progress=progress)
        report.evaluation["source"] = Path(gt).name
        if truth.unmatched:
            report.notes.append(f"{truth.unmatched} human-boxed images in {Path(gt).name} have no file of that name "
                                f"under {gt_images}; they are not scored.")
        if report.evaluation.get("unreadable"):
            report.notes.append(f"{report.evaluation['unreadable']} human-boxed images could not be read; "
                                "they are not scored.")
        if detector_model is not None:
            report.detector["tiles_from"] = "human-boxed images (white: a person's box; green: the detector's)"
            for name in list(det_predictions)[:tiles]:
                boxes, scores = det_predictions[name]
                picture = _load(truth.paths[name])
                data, shown = rm.detector_tile(picture, boxes, scores, truth.truths[name])
                report.detector_tiles.append(Tile(data, f"{_short(name)} · {_detections(shown, scores)}"))
    elif detector_model is not None and rows.done("explain"):
        progress("running the detector on its held-out images")
        report.detector_tiles = heldout_detector_tiles(rows, store, detector_model, report, tiles)
    return report


def _load(path) -> np.ndarray | None:
    """The photo as (H, W, 3) uint8, or None when it cannot be decoded (the steps skip such files too)."""
    from labelfree.core.images import ImageDecodeError, load_rgb

    try:
        return load_rgb(path)
    except (ImageDecodeError, OSError):
        return None


def _readable(store, images: list[dict], limit: int) -> list[tuple[dict, np.ndarray]]:
    """Up to ``limit`` (image row, photo) pairs, skipping photos that cannot be read."""
    out = []
    for image in images:
        if len(out) == limit:
            break
        picture = _load(store.local_path(image["store_key"]))
        if picture is not None:
            out.append((image, picture))
    return out


def explainer_tiles(rows: RunRows, store, teacher, tiles: int) -> list[Tile]:
    """Overlays of the first positives (by sha256): the PNGs the explain step stored, or (a run from
    before it stored them) evidence recomputed by ``teacher`` around the boxes it recorded."""
    from PIL import Image as PILImage

    result = rows.jobs["explain"]["result"] or {}
    prefix = result.get("overlays_prefix")
    probability = {}
    if prefix and result.get("coco_key"):
        coco = json.loads(store.get(result["coco_key"]))
        by_key = {im["store_key"]: im["id"] for im in rows.images}
        probability = {by_key.get(im["file_name"]): im.get("probability") for im in coco["images"]}
    out = []
    if prefix:  # a photo without an overlay could not be read, and the explain step skipped it
        for image in [im for im in rows.images if im["label"] == "positive"]:
            key = f"{prefix}/{image['id']}.png"
            if len(out) == tiles:
                break
            if store.exists(key):
                picture = PILImage.open(io.BytesIO(store.get(key))).convert("RGB")
                caption = _boxes_caption(len(rows.boxes.get(image["id"], [])), probability.get(image["id"]))
                out.append(Tile(thumbnail(picture, rm.TILE_SIDE), caption, credit=_credit(image)))
        return out
    for image, picture in _readable(store, [im for im in rows.images if im["label"] == "positive"], tiles):
        recorded = rows.boxes.get(image["id"], [])
        boxes = np.array([b for b, _ in recorded], np.float32).reshape(-1, 4)
        scores = np.array([s for _, s in recorded], np.float32)
        data, prob = rm.overlay_tile(picture, boxes, scores, teacher, image["id"])
        out.append(Tile(data, _boxes_caption(len(boxes), prob), credit=_credit(image)))
    return out


def _boxes_caption(count: int, probability: float | None) -> str:
    what = f"{count} box{'es' if count != 1 else ''}" if count else "no box"
    return what + (f" · P = {probability:.3f}" if probability is not None else "")


def heldout_detector_tiles(rows: RunRows, store, detector, report: Report, tiles: int) -> list[Tile]:
    """The detector on its own validation photos (or, without a split, on photos it trained on)."""
    explain_result = rows.jobs["explain"]["result"] or {}
    coco = json.loads(store.get(explain_result.get("boxes_key") or explain_result["coco_key"]))
    by_key = {im["store_key"]: im for im in rows.images}
    held = [by_key[k] for k in detector_holdout(coco, rows.detector.get("manifest") or {}) if k in by_key]
    report.detector["tiles_from"] = ("photos held out of the detector's training (its validation split); "
                                     "green: the detector's boxes")
    if not held:
        report.notes.append("The detector trained on every boxed photo (too few for a validation split), "
                            "so its pictures show photos it has seen.")
        held = [im for im in rows.images if im["label"] == "positive"]
        report.detector["tiles_from"] = "photos the detector trained on (no held-out split)"
    pairs = _readable(store, held, tiles)
    found = detector.detect([picture for _, picture in pairs]) if pairs else []
    out = []
    for (image, picture), (boxes, scores) in zip(pairs, found):
        data, shown = rm.detector_tile(picture, boxes, scores)
        out.append(Tile(data, _detections(shown, scores), credit=_credit(image)))
    return out


def _short(name: str, keep: int = 22) -> str:
    """A file name cut in the middle to fit a caption: ``0248HFV4VDZH_jpg.rf.0bf…e1.jpg``."""
    return name if len(name) <= keep else f"{name[:keep - 9]}…{name[-8:]}"


def _detections(shown: int, scores: np.ndarray) -> str:
    best = f"best {float(scores.max()):.2f}" if len(scores) else "no output"
    found = f"{shown} found" if shown else "none found"
    return f"{found} ≥ {rm.SHOW_CONF:.1f} · {best}"
