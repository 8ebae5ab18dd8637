"""Box refinement by the classifier itself: pull each edge in while the box keeps the evidence.

For a box B, "keep B" means: show the image inside B, the neutral fill outside, and read the
classifier's logit. Each edge is moved inward by a few fractions of the box size; an edge
may move while the kept logit stays above ``L_none + keep * (L_B - L_none)`` (L_none: all
hidden). All candidates of one image are scored in ONE batch. Why: the CAM's coarse cells
spill half a cell of background around the animal; the classifier can tell that margin
carries no evidence.

Boxes: (4,) or (N, 4) float xyxy pixels of the image given.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from labelfree.explainer.lime import Predict


def keep_box_images(small: np.ndarray, fill: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) uint8: ``small`` inside each box (xyxy in small's pixels), ``fill`` outside."""
    h, w = small.shape[:2]
    ys, xs = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    inside = ((xs >= np.floor(b[:, 0, None, None])) & (xs < np.ceil(b[:, 2, None, None])) &
              (ys >= np.floor(b[:, 1, None, None])) & (ys < np.ceil(b[:, 3, None, None])))
    return np.where(inside[..., None], small[None], fill[None])


def refine_box(image: np.ndarray, box: np.ndarray, predict_logit: Predict, *, side: int = 224,
               steps: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3), keep: float = 0.9,
               fill: str = "blur") -> np.ndarray:
    """Shrink one xyxy box of an (H, W, 3) uint8 image edge by edge; returns the refined (4,) float32 box."""
    from labelfree.explainer.lime import fill_image

    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    h, w = image.shape[:2]
    small = np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR))
    background = fill_image(small, fill)
    sx, sy = side / w, side / h
    b = np.asarray(box, dtype=np.float64) * np.array([sx, sy, sx, sy])
    bw, bh = b[2] - b[0], b[3] - b[1]
    steps_arr = np.asarray(steps, dtype=np.float64)
    # Candidates: [B, left moved by each step, top ..., right ..., bottom ...]; one batch.
    deltas = np.zeros((1 + 4 * len(steps), 4))
    for edge, (sign, extent) in enumerate([(1, bw), (1, bh), (-1, bw), (-1, bh)]):
        deltas[1 + edge * len(steps):1 + (edge + 1) * len(steps), edge] = sign * steps_arr * extent
    candidates = b[None] + deltas
    images = keep_box_images(small, background, candidates)
    logits = np.asarray(predict_logit(np.concatenate([images, background[None]])), dtype=np.float64).reshape(-1)
    l_box, l_none = logits[0], logits[-1]
    floor = l_none + keep * (l_box - l_none)
    ok = (logits[1:-1] >= floor).reshape(4, len(steps))
    # Largest step per edge such that every smaller step also kept the evidence.
    run = np.cumprod(ok, axis=1)
    moved = np.where(run.any(axis=1), steps_arr[np.maximum(run.sum(axis=1) - 1, 0)] * run.any(axis=1), 0.0)
    out = b + np.array([moved[0] * bw, moved[1] * bh, -moved[2] * bw, -moved[3] * bh])
    return (out / np.array([sx, sy, sx, sy])).astype(np.float32)
