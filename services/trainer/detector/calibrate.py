"""Score calibration: make a detection's confidence the chance that the teacher boxed it.

A converged CenterNet-style heat map scores a clearly found animal well under 1 when its centre
cell is uncertain (a large animal, a loose pseudo-box): on snow-leopard close-ups the median top
score of a detector was 0.62, on photos it had trained on, and a quarter of them scored under
0.5. How far under 1 depends on the concept, the seed and the epoch the checkpoint came from, so
a survey threshold meant nothing from one detector to the next (bench/results/detector.md,
"Calibrated scores").

After training, the detector's own held-out split, animals and backgrounds, is matched against
the teacher's boxes (greedy by score at IoU >= 0.5, as AP counts), and a logistic fit on the
score logit, Platt's method, maps logit -> ``scale * logit + bias``. Without held-out
backgrounds the build does not calibrate: the curve would lift every weak peak on an empty
scene. The map is monotone: the peaks, their order, AP and CorLoc are unchanged; only what a
threshold keeps changes. It is baked into the exported graph (``model.ExportModel``), so every
backend serves calibrated scores.
"""

from __future__ import annotations

import numpy as np

from labelfree.trainer.detector.boxops import match_detections

# Detections under this raw score are left out of the fit: the top-K list is mostly empty cells.
FLOOR = 0.01
# Fewer matched (or unmatched) detections than this and the fit is not trusted: identity.
MIN_EACH = 8
# Bounds on the fitted slope: a fit outside them says the split is too small or too odd to trust.
SCALE_RANGE = (0.2, 8.0)
IDENTITY = (1.0, 0.0)


def fit_score_calibration(pred_boxes: list[np.ndarray], pred_scores: list[np.ndarray],
                          true_boxes: list[np.ndarray], *, iou: float = 0.5) -> dict:
    """Platt scaling of detection scores against held-out truths (one entry per image; negatives
    have no truths). Returns ``{"scale", "bias", "fitted", ...}`` with the fit's size and its
    Brier score before and after; identity (``fitted`` False, with a ``reason``) when the split
    cannot support a fit."""
    from scipy.special import expit, logit
    from sklearn.linear_model import LogisticRegression

    scores, hits = match_detections(pred_boxes, pred_scores, true_boxes, iou)
    keep = scores >= FLOOR
    scores, hits = scores[keep], hits[keep]
    out = {"scale": IDENTITY[0], "bias": IDENTITY[1], "fitted": False, "n_detections": int(len(scores)),
           "n_matched": int(hits.sum()), "iou": iou, "floor": FLOOR}
    if hits.sum() < MIN_EACH or (~hits).sum() < MIN_EACH:
        return {**out, "reason": f"needs >= {MIN_EACH} matched and unmatched detections at score >= {FLOOR}"}
    z = logit(np.clip(scores, 1e-6, 1 - 1e-6))[:, None]
    model = LogisticRegression(C=10.0).fit(z, hits.astype(int))
    scale, bias = float(model.coef_[0, 0]), float(model.intercept_[0])
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        return {**out, "reason": f"fitted scale {scale:.3g} outside {SCALE_RANGE}"}
    calibrated = expit(scale * z[:, 0] + bias)
    return {**out, "scale": scale, "bias": bias, "fitted": True,
            "brier_before": float(np.mean((scores - hits) ** 2)),
            "brier_after": float(np.mean((calibrated - hits) ** 2))}
