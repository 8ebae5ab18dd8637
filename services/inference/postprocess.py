"""Turn the detector's raw top-K output into MegaDetector detections.

Raw output per image: ``boxes`` (K, 4) float32 normalised xyxy, ``scores`` (K,) float32,
``classes`` (K,) int64 (0-based index into the manifest ``labels``). MegaDetector category ids
are integer strings: class ``c`` becomes ``str(category_ids[c])`` when the manifest lists
``category_ids``, else ``str(c + 1)``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from labelfree.core.megadetector import bbox_from_xyxy, detection

DEFAULT_THRESHOLD = 0.1


def categories_from_labels(labels: Sequence[str] | Mapping[str | int, str] | None,
                           category_ids: Sequence[int] | None = None) -> dict[str, str]:
    """Manifest labels -> MegaDetector ``detection_categories`` (``{"1": "animal"}`` style).

    A list is 0-based class order, keyed by ``category_ids`` (default 1, 2, ...); a mapping
    is taken as already keyed by category id.
    """
    if not labels:
        return {"1": "animal"}
    if isinstance(labels, Mapping):
        return {str(int(k)): str(v) for k, v in labels.items()}
    ids = list(category_ids) if category_ids else [i + 1 for i in range(len(labels))]
    if len(ids) != len(labels):
        raise ValueError(f"category_ids {ids} do not match labels {list(labels)}")
    return {str(int(c)): str(name) for c, name in zip(ids, labels)}


def to_detections(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, *,
                  threshold: float = DEFAULT_THRESHOLD, category_ids: Sequence[int] | None = None) -> list[dict]:
    """One image's raw output -> detections with ``conf >= threshold``, highest first.

    ``boxes``: (K, 4) normalised xyxy; ``scores``: (K,); ``classes``: (K,) 0-based;
    ``category_ids[c]`` is class ``c``'s MegaDetector id (default ``c + 1``).
    Boxes with x1 < x0 or y1 < y0 (padding slots in a fixed-size top-K) are dropped.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], got {threshold}")
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    classes = np.asarray(classes).reshape(-1)
    if not (len(boxes) == len(scores) == len(classes)):
        raise ValueError(f"boxes/scores/classes lengths differ: {len(boxes)}/{len(scores)}/{len(classes)}")
    keep = np.flatnonzero((scores >= threshold) & np.isfinite(scores)
                          & (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1]))
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    def category(c: int) -> int:
        if category_ids is None:
            return c + 1
        if not 0 <= c < len(category_ids):
            raise ValueError(f"class index {c} is outside the manifest's {len(category_ids)} category_ids")
        return int(category_ids[c])

    return [detection(category(int(classes[i])), float(min(1.0, scores[i])), bbox_from_xyxy(boxes[i].tolist()))
            for i in keep]


def max_conf(detections: list[dict] | None) -> float:
    """Highest ``conf`` among detections; 0.0 for none or a failed image."""
    return max((d["conf"] for d in detections or ()), default=0.0)
