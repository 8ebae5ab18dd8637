"""Training targets and losses (TTFNet-style: Gaussian centre heat maps + GIoU on many cells).

Plain CenterNet supervises box size at the single centre cell, which converges slowly;
regressing the box from every cell near the centre (weighted by a Gaussian) trains in a few
epochs, which is what a CPU budget allows.

Boxes here are normalised xyxy in ``[0, 1]``; maps are ``(H, W)`` at stride 8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from labelfree.trainer.detector.boxops import giou_loss
from labelfree.trainer.detector.model import ltrb_to_boxes

# Gaussian radius as a share of the box (TTFNet's alpha and beta): heat spread, regression area.
HEAT_ALPHA = 0.54
REG_BETA = 0.54
# Cells whose regression Gaussian is below this are not regression samples.
REG_MIN_WEIGHT = 0.05


@dataclass
class Targets:
    """``heat`` ``(N, C, H, W)`` in [0, 1] (a box's weight at its centre); ``peak`` ``(N, C, H, W)``
    the weight at centre cells, 0 elsewhere; ``box`` ``(N, H, W, 4)`` xyxy; ``weight`` ``(N, H, W)``
    regression weight (0 where no box); ``num_boxes`` the boxes' summed weight."""

    heat: torch.Tensor
    peak: torch.Tensor
    box: torch.Tensor
    weight: torch.Tensor
    num_boxes: float

    def to(self, device: torch.device) -> "Targets":
        return Targets(self.heat.to(device), self.peak.to(device), self.box.to(device), self.weight.to(device),
                       self.num_boxes)


def _gaussian(h: int, w: int, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    return np.exp(-((xs - cx) ** 2 / (2 * sx * sx) + (ys - cy) ** 2 / (2 * sy * sy)))


def image_targets(boxes: np.ndarray, labels: np.ndarray, num_classes: int, height: int, width: int,
                  weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One image's targets: ``(C, H, W)`` heat, ``(C, H, W)`` peaks, ``(H, W, 4)`` boxes, ``(H, W)`` weights.

    ``boxes`` ``(M, 4)`` normalised xyxy, ``labels`` ``(M,)`` int class indices, ``weights``
    ``(M,)`` in (0, 1] (default 1): the heat a box's centre is taught to reach. Where boxes
    overlap, the heavier one owns the regression cells, and at equal weight the smaller one (it
    would otherwise be swallowed).
    """
    heat = np.zeros((num_classes, height, width), np.float32)
    peak = np.zeros((num_classes, height, width), np.float32)
    target = np.zeros((height, width, 4), np.float32)
    weight = np.zeros((height, width), np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    weights = np.ones(len(boxes), np.float32) if weights is None else np.asarray(weights, np.float32).reshape(-1)
    if len(boxes) != len(labels) or len(boxes) != len(weights):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels and {len(weights)} weights")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels {labels.tolist()} outside [0, {num_classes})")
    if len(weights) and (weights.min() < 0 or weights.max() > 1):
        raise ValueError(f"box weights must be in [0, 1], got {weights.tolist()}")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for k in np.lexsort((-areas, weights)):  # later boxes own shared cells: heavier, then smaller
        x0, y0, x1, y1 = boxes[k]
        bw, bh = (x1 - x0) * width, (y1 - y0) * height
        if bw <= 0 or bh <= 0 or weights[k] <= 0:
            continue
        # Centre cell (integer) so the heat peak is exactly 1 there.
        cx = min(width - 1, int((x0 + x1) / 2 * width))
        cy = min(height - 1, int((y0 + y1) / 2 * height))
        g = _gaussian(height, width, cx, cy, max(HEAT_ALPHA * bw / 6, 0.5), max(HEAT_ALPHA * bh / 6, 0.5))
        heat[labels[k]] = np.maximum(heat[labels[k]], weights[k] * g)
        peak[labels[k], cy, cx] = max(peak[labels[k], cy, cx], weights[k])
        r = _gaussian(height, width, cx, cy, max(REG_BETA * bw / 6, 0.5), max(REG_BETA * bh / 6, 0.5))
        xs = (np.arange(width) + 0.5) / width
        ys = (np.arange(height) + 0.5) / height
        inside = (ys[:, None] > y0) & (ys[:, None] < y1) & (xs[None, :] > x0) & (xs[None, :] < x1)
        mask = (r >= REG_MIN_WEIGHT) & inside
        mask[cy, cx] = True
        # Larger boxes get more total weight (log of area in cells), spread over their cells.
        share = r * mask
        share *= weights[k] * np.log(bw * bh + 1.0) / share.sum()
        target[mask] = boxes[k]
        weight[mask] = share[mask]
    return heat, peak, target, weight


def build_targets(boxes: list[np.ndarray], labels: list[np.ndarray], num_classes: int, height: int,
                  width: int, weights: list[np.ndarray] | None = None) -> Targets:
    """Batch targets from per-image normalised xyxy boxes, class labels and box weights (empty for
    negatives; no weights: every box weighs 1)."""
    weights = weights if weights is not None else [None] * len(boxes)
    parts = [image_targets(b, l, num_classes, height, width, w) for b, l, w in zip(boxes, labels, weights)]
    stacked = [torch.from_numpy(np.stack([p[k] for p in parts])) for k in range(4)]
    num_boxes = sum(len(b) if w is None else float(np.sum(w)) for b, w in zip(boxes, weights))
    return Targets(*stacked, float(num_boxes))


def focal_heat_loss(logits: torch.Tensor, target: torch.Tensor, num_boxes: float,
                    peak: torch.Tensor | None = None) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, summed and divided by the number of boxes.

    Cells near a centre (target close to 1) are barely penalised for firing, so the peak
    need not land on exactly one cell. ``peak`` (default: cells where ``target`` is 1) holds
    each centre's target value y; a centre with y < 1 (a ranked candidate) gets the quality
    focal loss ``|y - p|^2 * BCE(p, y)``, which pulls its score to y rather than to 1. At y = 1
    both losses are the same.
    """
    logits = logits.float()
    y = target.eq(1.0).float() if peak is None else peak.float()
    pos = (y > 0).float()
    p = torch.sigmoid(logits)
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    pos_loss = -((y - p).abs() ** 2) * (y * log_p + (1 - y) * log_not_p) * pos
    neg_loss = -((1 - target) ** 4) * p ** 2 * log_not_p * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / max(num_boxes, 1.0)


def detection_loss(heat_logits: torch.Tensor, ltrb: torch.Tensor, targets: Targets,
                   reg_weight: float = 5.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts (``heat``, ``giou``) for one batch."""
    heat = focal_heat_loss(heat_logits, targets.heat, targets.num_boxes, targets.peak)
    w = targets.weight
    if float(w.sum()) > 0:
        pred = ltrb_to_boxes(ltrb.float())
        giou = (giou_loss(pred, targets.box) * w).sum() / w.sum()
    else:
        giou = ltrb.sum() * 0.0  # keeps the graph connected for negatives-only batches
    total = heat + reg_weight * giou
    return total, {"heat": float(heat.detach()), "giou": float(giou.detach())}
