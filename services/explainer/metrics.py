"""Localisation metrics against human boxes (measurement only; never used for fitting).

All boxes here are (N, 4) xyxy pixels. ``predictions`` and ``truths`` are dicts keyed by
image key: predictions map to (boxes, scores) with boxes sorted by score, truths to boxes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from labelfree.explainer.boxes import box_iou, xywh_to_xyxy


def load_coco_truths(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, int]]]:
    """COCO boxes.json -> ({file_name: (M, 4) xyxy}, {file_name: (height, width)})."""
    data = json.loads(Path(path).read_text())
    names = {im["id"]: im["file_name"] for im in data["images"]}
    sizes = {im["file_name"]: (int(im["height"]), int(im["width"])) for im in data["images"]}
    truths: dict[str, list] = {name: [] for name in names.values()}
    for ann in data["annotations"]:
        truths[names[ann["image_id"]]].append(ann["bbox"])
    return {k: xywh_to_xyxy(np.array(v, dtype=np.float64).reshape(-1, 4)) for k, v in truths.items()}, sizes


def top_box_ious(predictions: dict[str, tuple[np.ndarray, np.ndarray]], truths: dict[str, np.ndarray]) -> np.ndarray:
    """(n_images,) best IoU of each image's top-scored box with any human box (0 when no box)."""
    out = []
    for key, gt in truths.items():
        boxes, scores = predictions.get(key, (np.zeros((0, 4)), np.zeros(0)))
        if len(boxes) == 0 or len(gt) == 0:
            out.append(0.0)
            continue
        top = np.asarray(boxes)[int(np.argmax(scores))]
        out.append(float(box_iou(top[None], gt).max()))
    return np.array(out)


def corloc(predictions, truths, *, iou: float = 0.5) -> float:
    """Share of images whose top box has IoU >= ``iou`` with a human box."""
    return float((top_box_ious(predictions, truths) >= iou).mean())


def average_precision(predictions, truths, *, iou: float = 0.5) -> float:
    """Single-class AP at one IoU (all-point interpolation, greedy matching by score, as in VOC/COCO)."""
    records = []  # (score, image key, box)
    for key, (boxes, scores) in predictions.items():
        if key in truths:
            records += [(float(s), key, np.asarray(b)) for b, s in zip(boxes, scores)]
    n_truth = sum(len(g) for g in truths.values())
    if n_truth == 0 or not records:
        return 0.0
    records.sort(key=lambda r: -r[0])
    used = {k: np.zeros(len(g), dtype=bool) for k, g in truths.items()}
    tp = np.zeros(len(records))
    for i, (_, key, box) in enumerate(records):
        gt = truths[key]
        if len(gt) == 0:
            continue
        overlaps = box_iou(box[None], gt)[0]
        overlaps[used[key]] = -1.0
        j = int(np.argmax(overlaps))
        if overlaps[j] >= iou:
            used[key][j] = True
            tp[i] = 1.0
    recall = np.cumsum(tp) / n_truth
    precision = np.cumsum(tp) / np.arange(1, len(tp) + 1)
    # Precision envelope, then area under the recall steps.
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    recall = np.concatenate([[0.0], recall])
    return float(np.sum((recall[1:] - recall[:-1]) * precision))


def summarise(predictions, truths) -> dict[str, float]:
    """CorLoc, mean top-box IoU and AP@0.5 in one dict."""
    ious = top_box_ious(predictions, truths)
    return {"corloc": float((ious >= 0.5).mean()), "miou": float(ious.mean()),
            "ap50": average_precision(predictions, truths)}
