"""Synthetic detection data whose answer is known: bright ellipses on a noisy dark field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def make_image(size: int, n_objects: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(size, size, 3) uint8 image and (n_objects, 4) xyxy pixel boxes of its filled ellipses."""
    base = rng.integers(20, 70, size=(size, size, 3)).astype(np.uint8)
    image = Image.fromarray(base)
    draw = ImageDraw.Draw(image)
    boxes = []
    for _ in range(n_objects):
        for _attempt in range(50):
            w, h = rng.uniform(0.25, 0.5, size=2) * size
            x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
            box = np.array([x0, y0, x0 + w, y0 + h])
            if all(_iou(box, b) == 0 for b in boxes):
                break
        boxes.append(box)
        colour = tuple(int(c) for c in rng.integers(180, 256, size=3))
        draw.ellipse([float(v) for v in box], fill=colour)
    return np.asarray(image), np.array(boxes, dtype=np.float32).reshape(-1, 4)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def write_dataset(root: Path, n_images: int, size: int, rng: np.random.Generator, *,
                  n_negatives: int = 0, max_objects: int = 2) -> tuple[Path, dict[str, np.ndarray]]:
    """PNG images under ``root/images`` and COCO ``root/boxes.json``; returns (json path, truths).

    Negatives (no ellipse) are listed in the JSON without annotations.
    """
    images_dir = root / "images"
    (images_dir / "sub").mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "blob"}]}
    truths = {}
    for i in range(n_images + n_negatives):
        n_obj = int(rng.integers(1, max_objects + 1)) if i < n_images else 0
        image, boxes = make_image(size, n_obj, rng)
        name = f"sub/img_{i:03d}.png" if i % 3 == 0 else f"img_{i:03d}.png"
        Image.fromarray(image).save(images_dir / name)
        coco["images"].append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for box in boxes:
            x0, y0, x1, y1 = (float(v) for v in box)
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1,
                                        "bbox": [x0, y0, x1 - x0, y1 - y0], "score": 1.0, "category_id": 1})
        truths[name] = boxes
    path = root / "boxes.json"
    path.write_text(json.dumps(coco))
    return path, truths
