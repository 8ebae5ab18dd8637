"""COCO-style boxes export (architecture.md "Data contracts").

```
{"images": [{"id": 1, "file_name": "a/b.jpg", "width": 460, "height": 460}],
 "annotations": [{"id": 1, "image_id": 1, "bbox": [x, y, w, h], "score": 0.93, "category_id": 1,
                  "area": w*h, "iscrowd": 0}],
 "categories": [{"id": 1, "name": "lion"}],
 "skipped": [{"file_name": "bad.jpg", "error": "not a decodable image: ..."}]}
```
``bbox`` is pixels, origin top-left. An image with no annotation means "the classifier says
absent" (no boxes); a file in ``skipped`` could not be read. ``skipped`` is our extra key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import numpy as np


def to_coco(records: Iterable[dict], category: str = "object") -> dict:
    """Labeller records (see ``batch``) -> COCO-style dict; records are sorted by key for stable ids."""
    images, annotations, skipped = [], [], []
    for record in sorted(records, key=lambda r: r["key"]):
        if record.get("error"):
            skipped.append({"file_name": record["key"], "error": record["error"]})
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": record["key"], "width": record["width"],
                       "height": record["height"], "probability": record.get("probability")})
        for box, score in zip(record["boxes"], record["scores"]):
            x1, y1, x2, y2 = (float(v) for v in box)
            w, h = x2 - x1, y2 - y1
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "bbox": [round(x1, 2), round(y1, 2), round(w, 2), round(h, 2)],
                                "score": float(score), "category_id": 1, "area": round(w * h, 2), "iscrowd": 0})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": category}], "skipped": skipped}


def validate_coco(data: dict) -> None:
    """Raise ValueError unless ``data`` follows the boxes contract (ids resolve, bboxes are 4 non-negative sizes)."""
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"COCO boxes need a list {key!r}")
    ids = {im["id"] for im in data["images"]}
    for ann in data["annotations"]:
        if ann.get("image_id") not in ids:
            raise ValueError(f"annotation {ann.get('id')} points at unknown image {ann.get('image_id')}")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and bbox[2] >= 0 and bbox[3] >= 0):
            raise ValueError(f"annotation {ann.get('id')} has a bad bbox {bbox!r}")


def write_coco(data: dict, path: str | Path) -> None:
    """Validate, then write JSON (parents created)."""
    validate_coco(data)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def coco_predictions(data: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """COCO-style dict -> {file_name: (boxes (N, 4) xyxy, scores (N,))}, boxes sorted by score."""
    names = {im["id"]: im["file_name"] for im in data["images"]}
    grouped: dict[str, list] = {name: [] for name in names.values()}
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        grouped[names[ann["image_id"]]].append((ann.get("score", 1.0), [x, y, x + w, y + h]))
    out = {}
    for name, items in grouped.items():
        items.sort(key=lambda t: -t[0])
        out[name] = (np.array([b for _, b in items], dtype=np.float64).reshape(-1, 4),
                     np.array([s for s, _ in items], dtype=np.float64))
    return out
