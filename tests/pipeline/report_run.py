"""A small real run for the report tests, written through the project's own APIs.

Synthetic "red animal" photos (red ellipses on a field; negatives show grey rocks), the
explainer tests' red classifier, the explain step's own labeller for the teacher boxes, and
a tiny detector ONNX that boxes the red pixels. Every step's job goes through the job state
machine, and artefacts go to the object store under the keys the real steps use.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from labelfree.core import jobs, runs
from labelfree.core.db import session_scope
from labelfree.core.models import Box, Dataset, Job, Model, new_id
from labelfree.core.models import Image as ImageRow
from labelfree.core.store import get_store

LICENCES = [("CC BY 4.0", "https://creativecommons.org/licenses/by/4.0/"),
            ("CC BY-SA 4.0", "https://creativecommons.org/licenses/by-sa/4.0/"), ("CC0 1.0", None)]


def photo(rng: np.random.Generator, animals=(), rocks=(), size=(240, 180)) -> np.ndarray:
    """A field under a sky with red 'animals' and grey 'rocks', each (cx, cy, rx, ry) in pixels."""
    w, h = size
    y = np.linspace(0, 1, h)[:, None, None]
    sky, grass = np.array([150, 185, 215]), np.array([95, 125, 60])
    horizon = rng.uniform(0.25, 0.45)
    base = np.where(y < horizon, sky, grass) * np.ones((h, w, 3))
    base = np.clip(base + rng.normal(0, 9, base.shape), 0, 255).astype(np.uint8)
    picture = Image.fromarray(base)
    draw = ImageDraw.Draw(picture)
    for cx, cy, rx, ry in rocks:
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=(120, 118, 112))
    for cx, cy, rx, ry in animals:
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=(210, 40, 35))
    return np.asarray(picture)


def jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def animal_box(cx, cy, rx, ry) -> list[float]:
    """COCO xywh of an ellipse."""
    return [cx - rx, cy - ry, 2 * rx, 2 * ry]


def scenes(n_pos: int, n_neg: int, seed: int) -> list[tuple[str, np.ndarray, list]]:
    """(label, image, animal ellipses) per photo; a few hard ones: a tiny animal, a red flower."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_pos):
        count = 2 if i % 5 == 3 else 1
        radius = 8 if i % 7 == 6 else int(rng.integers(22, 40))
        animals = [(int(rng.integers(50, 190)), int(rng.integers(80, 140)), radius, int(radius * 0.7))
                   for _ in range(count)]
        out.append(("positive", photo(rng, animals=animals), animals))
    for i in range(n_neg):
        rocks = [(rng.integers(40, 200), rng.integers(90, 150), rng.integers(15, 35), rng.integers(10, 20))]
        flower = [(rng.integers(30, 210), rng.integers(120, 170), 6, 6)] if i % 4 == 0 else []
        out.append(("negative", photo(rng, animals=flower, rocks=rocks), []))
    return out


def write_red_detector(out: Path, size: int = 96) -> Path:
    """A real detector ONNX (the DET_DIR contract): one box around the red pixels, scored by their share."""
    import torch

    class RedBoxes(torch.nn.Module):
        def forward(self, images):
            x = images.float()
            red = (x[..., 0] > 150) & (x[..., 1] < 90) & (x[..., 2] < 90)  # (N, S, S)
            coords = torch.arange(size, dtype=torch.float32)
            cols, rows = red.any(dim=1), red.any(dim=2)  # (N, S)
            x1 = torch.where(cols, coords, float(size)).amin(dim=1)
            x2 = torch.where(cols, coords + 1, 0.0).amax(dim=1)
            y1 = torch.where(rows, coords, float(size)).amin(dim=1)
            y2 = torch.where(rows, coords + 1, 0.0).amax(dim=1)
            box = torch.stack([x1, y1, torch.maximum(x2, x1), torch.maximum(y2, y1)], dim=1) / size
            score = torch.sigmoid(red.float().mean(dim=(1, 2)) * 400.0 - 2.0)
            boxes = torch.stack([box, torch.zeros_like(box)], dim=1)  # top-K = 2; the second is empty
            scores = torch.stack([score, torch.zeros_like(score)], dim=1)
            return boxes, scores, torch.zeros_like(scores, dtype=torch.int64)

    out.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(RedBoxes(), (torch.zeros(1, size, size, 3, dtype=torch.uint8),), str(out / "model.onnx"),
                      input_names=["images"], output_names=["boxes", "scores", "classes"],
                      dynamic_axes={"images": {0: "N"}, "boxes": {0: "N"}, "scores": {0: "N"}, "classes": {0: "N"}},
                      opset_version=17, dynamo=False)
    return out


@dataclass
class BuiltRun:
    run_id: str
    gt: Path
    gt_images: Path


def _finish(job_id: str, result: dict, started: float) -> None:
    with session_scope() as s:
        jobs.mark_job_running(s, job_id, worker="report-test")
    with session_scope() as s:
        job = jobs.mark_job_succeeded(s, job_id, result)
        job.started_at = datetime.fromtimestamp(started, timezone.utc)


def _next_job(run_id: str) -> str:
    with session_scope() as s:
        _run, job = runs.next_step(s, run_id)
        return job.id


def build_run(tmp: Path, *, query: str = "red deer", n_pos: int = 16, n_neg: int = 12,
              stop_after: str | None = None) -> BuiltRun:
    """Write a run step by step; ``stop_after`` leaves the following step running."""
    from labelfree.explainer.batch import ModelLabeller, label_record
    from labelfree.explainer.coco import to_coco
    from labelfree.explainer.labeller import LabelConfig
    from labelfree.explainer.model import OnnxClassifier
    from labelfree.explainer.overlay import overlay_png
    from labelfree.trainer import classifier as clf
    from tests.explainer.synthetic import write_red_model

    store = get_store()
    with session_scope() as s:
        run_id = runs.create_run(s, query, {"ingest": {"provider": "dir"}, "explain": {"method": "cam"}}).id

    # ingest: photos in the store, image rows with licences, the dataset summary
    job_id = _next_job(run_id)
    started = time.time()
    with session_scope() as s:
        dataset_id = s.get(Job, job_id).params["dataset_id"]
        rows = []
        for i, (label, image, _animals) in enumerate(scenes(n_pos, n_neg, seed=1)):
            data = jpeg(image)
            key = store.put_bytes(data, ".jpg")
            licence, url = LICENCES[i % len(LICENCES)]
            rows.append(ImageRow(sha256=hashlib.sha256(data).hexdigest(), store_key=key, dataset_id=dataset_id,
                                 label=label,
                                 file_name=f"{label}-{i:03d}.jpg", width=image.shape[1], height=image.shape[0],
                                 provider="dir", query=query if label == "positive" else "rocks",
                                 source_url=f"https://photos.example.org/{i}.jpg",
                                 landing_url=f"https://photos.example.org/view/{i}", licence=licence,
                                 licence_url=url, creator=f"Ranger {chr(65 + i % 6)}"))
        s.add_all(rows)
        dataset = s.get(Dataset, dataset_id)
        dataset.summary = {"provider": "dir", "found": {"positive": n_pos + 2, "negative": n_neg},
                           "downloaded": n_pos + n_neg + 2, "images": n_pos + n_neg,
                           "duplicates": {"urls": 0, "exact_duplicates": 1, "near_duplicates": 1},
                           "failures": {}, "hard_negatives": ["rocks"], "random_words": []}
    _finish(job_id, {"dataset_id": dataset_id, "images": n_pos + n_neg}, started)
    if stop_after == "ingest":
        _leave_running(_next_job(run_id), 0.4)
        return BuiltRun(run_id, Path(), Path())

    # train: the red classifier, with validation metrics (and curves) from the trainer's own evaluate
    job_id = _next_job(run_id)
    started = time.time()
    model_dir = tmp / "classifier"
    write_red_model(model_dir)
    with session_scope() as s:
        images = s.query(ImageRow).filter(ImageRow.dataset_id == dataset_id).order_by(ImageRow.sha256).all()
        items = [(im.id, im.store_key, im.label) for im in images]
    net = OnnxClassifier(model_dir)
    pictures = {image_id: np.asarray(Image.open(store.local_path(key)).convert("RGB").resize((64, 64)))
                for image_id, key, _ in items}
    scores = np.array([float(net.run(pictures[i][None])["score"][0]) for i, _, _ in items])
    y = np.array([label == "positive" for _, _, label in items], int)
    metrics = {"validation": clf.evaluate(y, scores, 0.5),
               "counts": {"positive": int(y.sum()), "negative": int(len(y) - y.sum()), "validation": len(y)}}
    (model_dir / "metrics.json").write_text(json.dumps(metrics))
    classifier_id = new_id()
    store.put_dir(f"models/{classifier_id}", model_dir)
    with session_scope() as s:
        s.add(Model(id=classifier_id, kind="classifier", name=f"classifier-{query}",
                    store_prefix=f"models/{classifier_id}", dataset_id=dataset_id, job_id=job_id,
                    manifest=json.loads((model_dir / "manifest.json").read_text()),
                    metrics=metrics))
    _finish(job_id, {"model_id": classifier_id, "metrics": {"roc_auc": metrics["validation"]["roc_auc"]}}, started)

    # explain: the explain step's labeller over the positives (image ids as keys), boxes rows + COCO
    job_id = _next_job(run_id)
    started = time.time()
    labeller = ModelLabeller(model_dir, LabelConfig(method="cam"))
    positives = [(i, key) for i, key, label in items if label == "positive"]
    records = []
    for image_id, key in positives:  # with the overlay PNG the explain step stores for each
        record, picture, labelled = label_record(labeller, image_id, store.local_path(key), 0, keep=True)
        store.put(f"overlays/{job_id}/{image_id}.png", overlay_png(picture, labelled))
        records.append(record)
    with session_scope() as s:
        for record in records:
            for (x1, y1, x2, y2), score in zip(record["boxes"], record["scores"]):
                s.add(Box(image_id=record["key"], job_id=job_id, run_id=run_id, model_id=classifier_id,
                          source="explainer", x=x1, y=y1, w=x2 - x1, h=y2 - y1, score=score))
    names = dict(positives)
    coco = to_coco([{**r, "key": names[r["key"]]} for r in records], category=query)
    store.put(f"boxes/{job_id}.json", json.dumps(coco).encode())
    _finish(job_id, {"images": len(coco["images"]), "boxes": len(coco["annotations"]), "skipped": [],
                     "boxes_key": f"boxes/{job_id}.json", "coco_key": f"boxes/{job_id}.json", "method": "cam",
                     "dataset_id": dataset_id, "classifier_model_id": classifier_id,
                     "overlays_prefix": f"overlays/{job_id}", "foreground_key": None}, started)
    if stop_after == "explain":
        _leave_running(_next_job(run_id), 0.25)
        return BuiltRun(run_id, Path(), Path())

    # train_detector: the red-box detector, registered with a manifest like the trainer's
    job_id = _next_job(run_id)
    started = time.time()
    det_dir = write_red_detector(tmp / "detector")
    boxed = sum(1 for im in coco["images"] if any(a["image_id"] == im["id"] for a in coco["annotations"]))
    manifest = {"kind": "detector", "input_size": 96, "top_k": 2, "labels": [query], "category_ids": [1],
                "training": {"n_positive": boxed, "n_train": boxed - round(boxed * 0.25), "n_val": round(boxed * 0.25),
                             "n_boxes_teacher": len(coco["annotations"]), "self_train_rounds": 0,
                             "hard_negatives": 10.0,
                             "negative_scores_by_round": [{"n": 40, "median_top": 0.05, "share_at_0.5": 0.025}],
                             "config": {"val_fraction": 0.25, "max_val": 200, "seed": 0}}}
    (det_dir / "manifest.json").write_text(json.dumps(manifest))
    detector_id = new_id()
    store.put_dir(f"models/{detector_id}", det_dir)
    det_metrics = {"epoch": 12, "val_ap50": 0.91, "val_corloc": 0.93, "val_miou": 0.81}
    with session_scope() as s:
        s.add(Model(id=detector_id, kind="detector", name=f"detector-{query}", store_prefix=f"models/{detector_id}",
                    run_id=run_id, job_id=job_id, dataset_id=dataset_id, manifest=manifest, metrics=det_metrics))
    _finish(job_id, {"model_id": detector_id, "metrics": det_metrics}, started)

    # deploy
    job_id = _next_job(run_id)
    started = time.time()
    with session_scope() as s:
        s.get(Model, detector_id).deployed = True
    _finish(job_id, {"model_id": detector_id, "triton_version": None}, started)
    _next_job_or_finish(run_id)

    # human boxes on fresh photos (never in the run): COCO + a folder, names matched by base name
    gt_images = tmp / "gt_images"
    gt_images.mkdir()
    gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": query}]}
    for i, (_label, image, animals) in enumerate(scenes(8, 0, seed=7)):
        Image.fromarray(image).save(gt_images / f"cam{i:02d}.jpg", quality=92)
        gt["images"].append({"id": i + 1, "file_name": f"survey/cam{i:02d}.jpg", "width": image.shape[1],
                             "height": image.shape[0]})
        for a in animals:
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1, "bbox": animal_box(*a),
                                      "category_id": 1})
    (tmp / "gt.json").write_text(json.dumps(gt))
    return BuiltRun(run_id, tmp / "gt.json", gt_images)


def _next_job_or_finish(run_id: str) -> None:
    with session_scope() as s:
        runs.next_step(s, run_id)


def _leave_running(job_id: str, progress: float) -> None:
    with session_scope() as s:
        jobs.mark_job_running(s, job_id, worker="report-test")
    with session_scope() as s:
        jobs.set_progress(s, job_id, progress)
