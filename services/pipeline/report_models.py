"""The report's pictures and its ground-truth check: the run's own models, run again on a few images.

- Explainer tiles: the teacher (classifier + the explain step's LabelConfig) recomputes its
  evidence map on a photo; the boxes drawn are the ones the explain step recorded.
- Detector tiles: the detector's ONNX graph through the trainer's ``DetectorRunner``.
- Against human boxes: teacher, detector and a whole-image box, scored with
  ``labelfree.explainer.metrics`` exactly as the benches do (detections kept from conf 0.01).

Boxes are (N, 4) float xyxy pixels of the original image unless a name says otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from labelfree.explainer.overlay import OVERLAY_SIDE, draw_boxes, draw_ranked, scaled, shrink
from labelfree.pipeline.report import thumbnail

TILE_SIDE = OVERLAY_SIDE  # the explain step stores its overlays at the report's tile size
SHOW_CONF = 0.3  # detections drawn on tiles: MegaDetector's "typical" threshold, as detect_folder writes it
EVAL_CONF = 0.01  # detections scored for AP, as bench/bench_detector.py scores them
HUMAN, DETECTOR = (255, 255, 255), (0, 230, 118)  # the teacher: overlay.draw_ranked


class Teacher:
    """The explain step's labeller: its classifier, its LabelConfig and its seed."""

    def __init__(self, classifier_dir: Path, explain_params: dict, foreground: dict | None = None):
        """foreground: the explain step's fitted model (its ``foreground_key`` JSON), for method "foreground"."""
        from labelfree.explainer.batch import ModelLabeller
        from labelfree.explainer.foreground import ForegroundModel
        from labelfree.explainer.tasks import explain_params as to_config

        self.config = to_config(explain_params)
        self.seed = int(explain_params.get("seed", 0))
        fitted = ForegroundModel.from_dict(foreground) if foreground is not None else None
        self.labeller = ModelLabeller(classifier_dir, self.config, foreground=fitted)
        if self.labeller.needs_fit:
            raise ValueError("the explain step kept no fitted foreground model (a run from before it did)")

    def label(self, image: np.ndarray, key: str):
        """``Labelled`` for one image; ``key`` picks the per-image LIME masks (the explain step's image id)."""
        from labelfree.explainer.batch import image_rng

        return self.labeller.label(image, image_rng(self.seed, key))


def overlay_tile(image: np.ndarray, recorded: np.ndarray, scores: np.ndarray, teacher: Teacher | None,
                 key: str) -> tuple[bytes, float | None]:
    """The explain overlay of one photo at tile size: evidence map (when a teacher is given) and the
    recorded boxes. Returns (JPEG bytes, P(positive) or None)."""
    small, scale = shrink(image, TILE_SIDE)
    boxes = np.asarray(recorded, np.float32).reshape(-1, 4) * scale
    if teacher is None:
        return thumbnail(draw_ranked(Image.fromarray(small), boxes, scores), TILE_SIDE), None
    from labelfree.explainer.overlay import render_overlay

    labelled = teacher.label(image, key)
    # the evidence and superpixels from render_overlay; the boxes drawn here, with tags readable at tile size
    shown = replace(scaled(labelled, small.shape[:2], scale), boxes=np.zeros((0, 4), np.float32),
                    scores=np.zeros(0, np.float32))
    picture = render_overlay(small, shown)
    return thumbnail(draw_ranked(picture, boxes, scores), TILE_SIDE), labelled.probability


class DetectorModel:
    """A DET_DIR run through the trainer's ONNX Runtime runner; boxes come back in pixels."""

    def __init__(self, det_dir: Path):
        from labelfree.trainer.detector.infer import DetectorRunner

        self.runner = DetectorRunner(det_dir)

    def detect(self, images: list[np.ndarray], batch_size: int = 16) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image: (boxes (K, 4) xyxy pixels, scores (K,)) sorted by score, all top-K outputs."""
        out = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            boxes, scores, _ = self.runner.predict(np.stack([self.runner.prepare(im) for im in chunk]))
            for image, b, s in zip(chunk, boxes, scores):
                h, w = image.shape[:2]
                order = np.argsort(-s)
                out.append((b[order] * np.array([w, h, w, h], np.float32), s[order]))
        return out


def detector_tile(image: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                  human: np.ndarray | None = None) -> tuple[bytes, int]:
    """A detector tile: detections from ``SHOW_CONF`` in green, human boxes (if any) in white.
    Returns (JPEG bytes, number of detections drawn)."""
    small, scale = shrink(image, TILE_SIDE)
    picture = Image.fromarray(small)
    if human is not None and len(human):
        draw_boxes(picture, np.asarray(human, float) * scale, None, HUMAN, width=max(2, round(max(small.shape) / 120)))
    keep = scores >= SHOW_CONF
    draw_boxes(picture, boxes[keep] * scale, scores[keep], DETECTOR)
    return thumbnail(picture, TILE_SIDE), int(keep.sum())


@dataclass
class GroundTruth:
    """Human boxes matched to image files by base name."""

    truths: dict[str, np.ndarray]  # base name -> (M, 4) xyxy
    paths: dict[str, Path]         # base name -> file
    unmatched: int                 # boxed images in the JSON with no file of that name


def match_ground_truth(gt: Path, images: Path) -> GroundTruth:
    """Read COCO ``gt`` and pair its ``file_name``s with files under ``images`` by base name."""
    from labelfree.core.images import iter_image_files
    from labelfree.explainer.metrics import load_coco_truths

    try:
        truths, _sizes = load_coco_truths(gt)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--gt {gt} is not COCO-style boxes ({type(exc).__name__}: {exc})") from exc
    by_base = {Path(name).name: boxes for name, boxes in truths.items()}
    files = {p.name: p for p in iter_image_files([images])}
    matched = sorted(set(by_base) & set(files))
    if not matched:
        raise ValueError(f"no image under {images} has the base name of a file_name in {gt}")
    return GroundTruth({k: by_base[k] for k in matched}, {k: files[k] for k in matched},
                       unmatched=len(by_base) - len(matched))


def evaluate(truth: GroundTruth, *, teacher: Teacher | None, detector: DetectorModel | None,
             progress: Callable[[str], None] = lambda message: None) -> tuple[dict, dict]:
    """Score each labeller against the human boxes.

    Returns (evaluation {name: {corloc, mean_iou, ap50, seconds_per_image}, plus n_images},
    detector predictions {base name: (boxes, scores)} for the tiles).
    """
    from labelfree.core.images import ImageDecodeError, load_rgb
    from labelfree.explainer.metrics import summarise

    names, scored = list(truth.truths), []
    predictions: dict[str, dict] = {"whole image": {}}
    seconds = {"whole image": None}
    if teacher is not None:
        predictions["teacher"], seconds["teacher"] = {}, 0.0
    if detector is not None:
        predictions["detector"], seconds["detector"] = {}, 0.0
    for i, name in enumerate(names):
        try:
            image = load_rgb(truth.paths[name])
        except (ImageDecodeError, OSError):
            continue
        scored.append(name)
        h, w = image.shape[:2]
        predictions["whole image"][name] = (np.array([[0.0, 0.0, w, h]]), np.ones(1))
        if teacher is not None:
            started = time.perf_counter()
            labelled = teacher.label(image, name)
            seconds["teacher"] += time.perf_counter() - started
            predictions["teacher"][name] = (labelled.boxes, labelled.scores)
        if detector is not None:
            started = time.perf_counter()
            (boxes, scores), = detector.detect([image])
            seconds["detector"] += time.perf_counter() - started
            keep = scores >= EVAL_CONF
            predictions["detector"][name] = (boxes[keep], scores[keep])
        if (i + 1) % 25 == 0:
            progress(f"scored {i + 1}/{len(names)} human-boxed images")
    if not scored:
        raise ValueError("none of the human-boxed images could be read")
    truths = {name: truth.truths[name] for name in scored}
    evaluation: dict = {"n_images": len(scored), "n_boxes": int(sum(len(b) for b in truths.values())),
                        "unreadable": len(names) - len(scored)}
    for who in ("detector", "teacher", "whole image"):
        if who in predictions:
            m = summarise(predictions[who], truths)
            evaluation[who] = {"corloc": m["corloc"], "mean_iou": m["miou"], "ap50": m["ap50"],
                               "seconds_per_image": (seconds[who] / len(scored)) if seconds[who] is not None
                               else None}
    return evaluation, predictions.get("detector", {})
