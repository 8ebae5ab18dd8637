"""Overlay PNGs for reports: evidence heat map, superpixel edges and boxes over the photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from skimage.segmentation import find_boundaries

from labelfree.explainer.labeller import Labelled


def render_overlay(image: np.ndarray, labelled: Labelled, *, alpha: float = 0.45) -> Image.Image:
    """An RGB PIL image: evidence in red (for) / blue (against), LIME superpixel edges, boxes in yellow.

    image: (H, W, 3) uint8, the photo ``labelled`` was computed on.
    """
    base = image.astype(np.float32)
    h, w = image.shape[:2]
    if labelled.evidence is not None:
        ev = labelled.evidence.astype(np.float32)
        scale = max(float(np.abs(ev).max()), 1e-6)
        pos, neg = np.clip(ev / scale, 0, 1), np.clip(-ev / scale, 0, 1)
        tint = np.stack([255 * pos, np.zeros_like(pos), 255 * neg], axis=-1)
        strength = (alpha * np.maximum(pos, neg))[..., None]
        base = base * (1 - strength) + tint * strength
    out = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    if labelled.explanation is not None:
        seg = np.asarray(Image.fromarray(labelled.explanation.segments.astype(np.int32), mode="I").resize(
            (w, h), Image.NEAREST))
        edges = find_boundaries(seg, mode="inner")
        arr = np.asarray(out).copy()
        arr[edges] = (arr[edges] * 0.5 + 127).astype(np.uint8)
        out = Image.fromarray(arr)
    draw = ImageDraw.Draw(out)
    width = max(2, round(min(h, w) / 150))
    for box, score in zip(labelled.boxes, labelled.scores):
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=(255, 230, 0), width=width)
        draw.text((x1 + width + 1, y1 + width + 1), f"{score:.2f}", fill=(255, 230, 0))
    draw.text((4, h - 14), f"P={labelled.probability:.3f}", fill=(255, 255, 255))
    return out


def save_overlay(image: np.ndarray, labelled: Labelled, path: str | Path) -> Path:
    """Render and write a PNG (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    render_overlay(image, labelled).save(path, format="PNG")
    return path
