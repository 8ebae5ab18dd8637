"""The few box operations the detector needs (no torchvision).

Formats are named as in ``torchvision.ops.box_convert``: ``xyxy`` (corners), ``xywh``
(top-left corner + size, COCO and MegaDetector), ``cxcywh`` (centre + size). Functions taking
``torch.Tensor`` work on any device and keep gradients; the numpy ones are for data and metrics.
"""

from __future__ import annotations

import numpy as np
import torch

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def box_convert(boxes: np.ndarray, in_fmt: str, out_fmt: str) -> np.ndarray:
    """Convert ``(N, 4)`` boxes between :data:`BOX_FORMATS`; returns float64 for numpy input."""
    for fmt in (in_fmt, out_fmt):
        if fmt not in BOX_FORMATS:
            raise ValueError(f"unknown box format {fmt!r}; one of {BOX_FORMATS}")
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if in_fmt == "xywh":
        b = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
    elif in_fmt == "cxcywh":
        b = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], axis=1)
    if out_fmt == "xywh":
        b = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
    elif out_fmt == "cxcywh":
        b = np.concatenate([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], axis=1)
    return b


def box_area(boxes: np.ndarray) -> np.ndarray:
    """``(N, 4)`` xyxy -> ``(N,)`` areas (0 for degenerate boxes)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` xyxy boxes -> ``(N, M)``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def clip_boxes(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Clip ``(N, 4)`` xyxy boxes to ``[0, width] x [0, height]``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
    b[:, 0::2] = np.clip(b[:, 0::2], 0, width)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, height)
    return b


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, highest score first."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        overlaps = box_iou(boxes[i : i + 1], boxes[order[1:]])[0]
        order = order[1:][overlaps <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def giou_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Elementwise ``1 - GIoU`` of aligned ``(..., 4)`` xyxy boxes -> ``(...)``.

    GIoU stays informative when boxes do not overlap, which plain IoU does not.
    """
    px0, py0, px1, py1 = pred.unbind(-1)
    tx0, ty0, tx1, ty1 = target.unbind(-1)
    area_p = (px1 - px0).clamp(min=0) * (py1 - py0).clamp(min=0)
    area_t = (tx1 - tx0).clamp(min=0) * (ty1 - ty0).clamp(min=0)
    iw = (torch.minimum(px1, tx1) - torch.maximum(px0, tx0)).clamp(min=0)
    ih = (torch.minimum(py1, ty1) - torch.maximum(py0, ty0)).clamp(min=0)
    inter = iw * ih
    union = area_p + area_t - inter
    iou = inter / (union + eps)
    hull = (torch.maximum(px1, tx1) - torch.minimum(px0, tx0)) * (torch.maximum(py1, ty1) - torch.minimum(py0, ty0))
    return 1.0 - (iou - (hull - union) / (hull + eps))


def match_detections(pred_boxes: list[np.ndarray], pred_scores: list[np.ndarray], true_boxes: list[np.ndarray],
                     iou: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching by score over images: ``(scores, hits)``, every detection by descending
    score and whether it took a still-unmatched truth at IoU >= ``iou``.

    Each list has one entry per image: ``(P, 4)`` xyxy predictions, ``(P,)`` scores and
    ``(T, 4)`` xyxy truths, all in the same units.
    """
    if not len(pred_boxes) == len(pred_scores) == len(true_boxes):
        raise ValueError("pred_boxes, pred_scores and true_boxes need one entry per image")
    records = [(float(s), i, j) for i, scores in enumerate(pred_scores) for j, s in enumerate(scores)]
    records.sort(key=lambda r: -r[0])
    used = [np.zeros(len(t), dtype=bool) for t in true_boxes]
    hits = np.zeros(len(records), dtype=bool)
    for k, (_, i, j) in enumerate(records):
        if len(true_boxes[i]) == 0:
            continue
        overlaps = box_iou(pred_boxes[i][j : j + 1], true_boxes[i])[0]
        overlaps[used[i]] = -1.0
        best = int(np.argmax(overlaps))
        if overlaps[best] >= iou:
            used[i][best] = True
            hits[k] = True
    return np.array([r[0] for r in records], np.float64), hits


def match_ap(pred_boxes: list[np.ndarray], pred_scores: list[np.ndarray], true_boxes: list[np.ndarray],
             iou: float = 0.5) -> float:
    """Single-class AP at one IoU over images (VOC all-point; greedy matching by score, see
    ``match_detections``). Used for per-epoch validation."""
    _, hits = match_detections(pred_boxes, pred_scores, true_boxes, iou)
    n_true = sum(len(t) for t in true_boxes)
    if n_true == 0 or not len(hits):
        return 0.0
    tp = hits.astype(np.float64)
    recall = np.concatenate([[0.0], np.cumsum(tp) / n_true])
    precision = np.cumsum(tp) / np.arange(1, len(tp) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum((recall[1:] - recall[:-1]) * precision))


def top_box_iou(pred_boxes: list[np.ndarray], pred_scores: list[np.ndarray],
                true_boxes: list[np.ndarray]) -> np.ndarray:
    """``(n_images,)`` IoU of each image's top-scored box with its best-matching truth (0 if none).

    ``mean`` of it is the mean IoU; ``(>= 0.5).mean()`` is CorLoc.
    """
    out = np.zeros(len(true_boxes))
    for i, (boxes, scores, truth) in enumerate(zip(pred_boxes, pred_scores, true_boxes)):
        if len(boxes) and len(truth):
            out[i] = box_iou(boxes[int(np.argmax(scores))][None], truth).max()
    return out
