"""Survey results as MegaDetector batch JSON (1.x, Timelapse-loadable) and as CSV.

JSON: ``labelfree.core.megadetector`` builds and validates it; each image carries the
extras ``datetime``, ``camera`` and ``sequence_id``, and a top-level ``sequences`` object
gives each burst's verdict (``max_conf``, frame count, best frame). Readers that do not know
``sequences`` ignore it.

CSV: one row per detection (an image with none, or a failed one, still gets one row),
columns ``CSV_COLUMNS``; ``bbox`` is the normalised ``[x, y, w, h]`` as a JSON list.

Neither format ever carries GPS: rows are built from an explicit allow-list of fields.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Mapping

from labelfree.core.megadetector import build_batch, image_entry, round_conf, validate_batch

CSV_COLUMNS = ("file", "datetime", "camera", "sequence", "category", "conf", "bbox")


@dataclass(frozen=True)
class ImageResult:
    """One image's outcome: ``detections`` (list, maybe empty) or a ``failure`` reason."""

    file: str
    detections: list[dict] | None
    failure: str | None = None
    captured_at: datetime | None = None
    camera: str | None = None
    sequence_id: str | None = None


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat(timespec="seconds") if ts is not None else None


def results_json(results: Iterable[ImageResult], categories: Mapping[str, str], *, detector: str,
                 sequences: Mapping[str, dict] | None = None,
                 detector_metadata: Mapping | None = None) -> dict:
    """Build a validated MegaDetector batch document (plus ``sequences`` verdicts)."""
    images = [image_entry(r.file, None if r.failure else list(r.detections or []), failure=r.failure,
                          datetime=_iso(r.captured_at), camera=r.camera, sequence_id=r.sequence_id)
              for r in results]
    doc = build_batch(images, categories, detector=detector, detector_metadata=detector_metadata)
    if sequences:
        doc["sequences"] = {seq: {"max_conf": round_conf(v["max_conf"]), "images": int(v["images"]),
                                  "best_file": v.get("best_file")}
                            for seq, v in sorted(sequences.items())}
    validate_batch(doc)
    return doc


def results_csv(doc: Mapping) -> str:
    """The batch document as CSV text (columns ``CSV_COLUMNS``), one row per detection."""
    validate_batch(doc, strict=False)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    for image in doc["images"]:
        base = {"file": image["file"], "datetime": image.get("datetime") or "",
                "camera": image.get("camera") or "", "sequence": image.get("sequence_id") or ""}
        detections = image.get("detections") or []
        if not detections:
            writer.writerow(base)
        for det in detections:
            writer.writerow({**base, "category": det["category"], "conf": det["conf"],
                             "bbox": json.dumps(det["bbox"])})
    return buf.getvalue()
