"""From evidence maps to boxes.

An evidence map is an (H, W) float map of "how much this pixel speaks for the class"
(LIME superpixel weights, or an upsampled class-activation map). Boxes come from the
connected regions of the pixels that hold most of the positive evidence.

Conventions: ``boxes`` are (N, 4) float32 xyxy in pixels (x1, y1 exclusive-end x2, y2);
``scores`` are (N,) float32 in [0, 1], the share of the positive evidence inside a region.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def select_segments(weights: np.ndarray, threshold: float = 0.8) -> np.ndarray:
    """(K,) bool: the fewest superpixels whose positive weights sum to ``threshold`` of all positive weight."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    weights = np.asarray(weights, dtype=np.float64)
    positive = np.clip(weights, 0.0, None)
    total = positive.sum()
    selected = np.zeros(weights.shape, dtype=bool)
    if total <= 0:
        return selected
    order = np.argsort(-positive, kind="stable")
    cumulative = np.cumsum(positive[order]) / total
    n = int(np.searchsorted(cumulative, threshold - 1e-12) + 1)
    selected[order[:n]] = True
    selected &= positive > 0
    return selected


def select_pixels(evidence: np.ndarray, threshold: float = 0.8) -> np.ndarray:
    """(H, W) bool: the highest-evidence pixels holding ``threshold`` of the positive evidence mass."""
    flat = np.asarray(evidence, dtype=np.float64).reshape(-1)
    return select_segments(flat, threshold).reshape(np.shape(evidence))


def mask_boxes(mask: np.ndarray, evidence: np.ndarray, *, min_area: float = 0.01,
               min_share: float = 0.05, merge_gap: float = 0.05,
               split_h: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Boxes around the connected regions of ``mask`` (8-connectivity), largest evidence first.

    mask: (H, W) bool selected pixels. evidence: (H, W) float, positive part counts.
    split_h: if set, a connected region is further split by a watershed on the evidence
        between peaks that stand at least ``split_h`` * max evidence above their saddle
        (h-maxima), so two touching animals with two clear evidence peaks give two boxes,
        while one animal with a bumpy map stays whole.
    min_area: drop regions whose box covers less than this share of the image.
    min_share: drop regions holding less than this share of the selected positive evidence.
    merge_gap: boxes closer than this share of the image diagonal are merged, so that one
        animal cut in two by a low-evidence stripe stays one box.
    Returns (boxes (N, 4) float32 xyxy pixels, scores (N,) float32 evidence share).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != np.shape(evidence):
        raise ValueError(f"mask shape {mask.shape} does not match evidence {np.shape(evidence)}")
    h, w = mask.shape
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    positive = np.clip(np.asarray(evidence, dtype=np.float64), 0.0, None)
    boxes, mass = _label_boxes(labels, n, positive)
    # Fragments of one animal are separate components; merge those that nearly touch first.
    boxes, mass, group = merge_close_boxes(boxes, mass, gap=merge_gap * float(np.hypot(h, w)), return_groups=True)
    if split_h is not None and positive.max() > 0:
        boxes, mass = _split_groups(boxes, mass, group, labels, positive, mask, split_h, min_share)
    share = mass / max(mass.sum(), 1e-12)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / float(h * w)
    keep = (area >= min_area) & (share >= min_share)
    if not keep.any():  # never drop everything: the strongest region stands
        keep = share == share.max()
    boxes, share = boxes[keep], share[keep]
    order = np.argsort(-share, kind="stable")
    return boxes[order].astype(np.float32), share[order].astype(np.float32)


def _label_boxes(labels: np.ndarray, n: int, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 4) xyxy boxes and (n,) positive mass of labels 1..n."""
    mass = np.asarray(ndimage.sum_labels(positive, labels, index=np.arange(1, n + 1)), dtype=np.float64)
    slices = ndimage.find_objects(labels, max_label=n)
    boxes = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] if s is not None else [0, 0, 0, 0]
                      for s in slices], dtype=np.float64)
    return boxes, mass


def _split_groups(boxes, mass, group, cc_labels, positive, mask, split_h, min_share):
    """Replace a merged group's box by its watershed basins' boxes when 2+ basins each hold min_share of it."""
    ws, n_ws = _watershed_split(positive, mask, split_h)
    if n_ws <= len(boxes):
        return boxes, mass
    ws_boxes, ws_mass = _label_boxes(ws, n_ws, positive)
    # Each basin lies inside one connected component (watershed floods within the mask).
    ws_cc = np.asarray(ndimage.maximum(cc_labels, ws, index=np.arange(1, n_ws + 1)), dtype=int)
    ws_group = group[ws_cc - 1]
    out_boxes, out_mass = [], []
    for g in range(len(boxes)):  # loop over a handful of regions, not pixels
        members = np.nonzero((ws_group == g) & (ws_mass > 0))[0]
        strong = members[ws_mass[members] >= min_share * max(mass[g], 1e-12)]
        if len(strong) >= 2:
            out_boxes.append(ws_boxes[strong])
            out_mass.append(ws_mass[strong])
        else:
            out_boxes.append(boxes[g:g + 1])
            out_mass.append(mass[g:g + 1])
    return np.concatenate(out_boxes), np.concatenate(out_mass)


def _watershed_split(positive: np.ndarray, mask: np.ndarray, h: float) -> tuple[np.ndarray, int]:
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    peaks = h_maxima(np.where(mask, positive, 0.0), h * positive.max()).astype(bool) & mask
    markers, _ = ndimage.label(peaks, structure=np.ones((3, 3), dtype=bool))
    labels = watershed(-positive, markers, mask=mask)
    # Regions of the mask that hold no peak (possible on flat maps) keep their own label.
    rest, n_rest = ndimage.label(mask & (labels == 0), structure=np.ones((3, 3), dtype=bool))
    labels = np.where(rest > 0, rest + labels.max(), labels)
    return labels, int(labels.max())


def merge_close_boxes(boxes: np.ndarray, mass: np.ndarray, *, gap: float, return_groups: bool = False):
    """Union boxes that overlap or lie within ``gap`` pixels of each other, until none do.

    boxes: (N, 4) xyxy; mass: (N,) summed into the merged box. Returns the merged (boxes, mass)
    and, with ``return_groups``, also (N,) int: the merged box each input went into.
    """
    boxes = np.asarray(boxes, dtype=np.float64).copy()
    mass = np.asarray(mass, dtype=np.float64).copy()
    owner = np.arange(len(boxes))
    while len(boxes) > 1:
        dx = np.maximum(boxes[:, None, 0], boxes[None, :, 0]) - np.minimum(boxes[:, None, 2], boxes[None, :, 2])
        dy = np.maximum(boxes[:, None, 1], boxes[None, :, 1]) - np.minimum(boxes[:, None, 3], boxes[None, :, 3])
        close = (np.maximum(dx, 0) ** 2 + np.maximum(dy, 0) ** 2 <= gap ** 2)
        np.fill_diagonal(close, False)
        if not close.any():
            break
        # Merge whole connected groups at once (graph components of the "close" relation).
        n_groups, group = _components(close)
        merged = np.zeros((n_groups, 4))
        merged[:, :2] = np.inf
        merged[:, 2:] = -np.inf
        np.minimum.at(merged[:, 0], group, boxes[:, 0])
        np.minimum.at(merged[:, 1], group, boxes[:, 1])
        np.maximum.at(merged[:, 2], group, boxes[:, 2])
        np.maximum.at(merged[:, 3], group, boxes[:, 3])
        boxes, mass = merged, np.bincount(group, weights=mass, minlength=n_groups)
        owner = group[owner]
    return (boxes, mass, owner) if return_groups else (boxes, mass)


def _components(adjacency: np.ndarray) -> tuple[int, np.ndarray]:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    return connected_components(csr_matrix(adjacency), directed=False)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of (N, 4) and (M, 4) xyxy boxes -> (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def scale_boxes(boxes: np.ndarray, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> np.ndarray:
    """Rescale (N, 4) xyxy boxes from an image of size from_hw to one of size to_hw, clipped."""
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    out = np.asarray(boxes, dtype=np.float64) * np.array([sx, sy, sx, sy])
    out[:, 0::2] = np.clip(out[:, 0::2], 0, to_hw[1])
    out[:, 1::2] = np.clip(out[:, 1::2], 0, to_hw[0])
    return out.astype(np.float32)


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy -> (N, 4) xywh (COCO)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xywh (COCO) -> (N, 4) xyxy."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
