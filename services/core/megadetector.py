"""MegaDetector batch output format 1.x: build, validate (raising), and write as CSV.

The format, as an annotated example (``*`` = required)::

    {
      "info": {                                   # * object
        "format_version": "1.4",                  # * string-formatted version, major 1
        "detector": "labelfree-detector",         #   optional: model file/name
        "detection_completion_time": "2026-11-26 19:00:00",
        "detector_metadata": {"typical_detection_threshold": 0.2, ...}
      },
      "detection_categories": {"1": "animal"},    # * ids are non-negative int strings, names non-blank
      "images": [                                 # * list, may be empty
        {"file": "a/b.jpg",                       # * relative to the images root, forward slashes
         "detections": [                          # list when processed; [] = processed, nothing found
            {"category": "1", "conf": 0.93,       # * conf in [0, 1]
             "bbox": [0.1, 0.2, 0.3, 0.4]}],      # * normalised [x_min, y_min, width, height], origin top-left
         "failure": null,                         #   optional; null (or absent) on success
         "datetime": "...", "camera": "...", "sequence_id": "..."},   # extras, under their own keys
        {"file": "bad.jpg", "failure": "not a decodable image", "detections": null}
      ]
    }

The three states of an image entry:

- ``detections: [...]`` (possibly ``[]``) with ``failure`` absent or ``null``: processed;
  an empty list means nothing found, never "not processed".
- ``failure: "reason"`` with ``detections: null`` (or absent): it failed. An empty list here is invalid.

Versions are compared as integer tuples (``"1.10" > "1.9"``), never as floats.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, TextIO

FORMAT_VERSION = "1.4"
MIN_VERSION = (1, 0)
MAX_MAJOR = 1
# Boxes are rounded as MegaDetector writes them: enough for pixels on a 10k-pixel image, short files.
BBOX_DIGITS = 4
# Confidences keep 3 significant digits (0.956, 0.0123, 0.000456). MegaDetector rounds to 3 decimals, which
# ties every detection under 0.0005 at 0.0 and loses their order: 0.006 AP@0.5 on lion/dev computed from the
# file (bench/results/detector.md). The values stay plain numbers in [0, 1].
CONF_DIGITS = 3
# Tolerance for boxes that touch the border after rounding.
_EPS = 1e-3
CSV_COLUMNS = ("file", "failure", "category", "category_name", "conf", "x", "y", "w", "h",
               "datetime", "camera", "sequence_id")
IMAGE_EXTRAS = ("datetime", "camera", "sequence_id")


class MegaDetectorFormatError(ValueError):
    """A document that is not valid MegaDetector batch output; the message names the bad field."""


def parse_version(version: str) -> tuple[int, ...]:
    """``"1.4"`` -> ``(1, 4)``. Raises MegaDetectorFormatError for anything not dotted integers."""
    if not isinstance(version, str) or not version:
        raise MegaDetectorFormatError(f"info.format_version must be a non-empty string, got {version!r}")
    try:
        parts = tuple(int(p) for p in version.split("."))
    except ValueError:
        raise MegaDetectorFormatError(f"info.format_version {version!r} is not dotted integers") from None
    if any(p < 0 for p in parts):
        raise MegaDetectorFormatError(f"info.format_version {version!r} has a negative part")
    return parts


def bbox_from_xyxy(xyxy: Sequence[float]) -> list[float]:
    """Normalised ``xyxy`` -> normalised MegaDetector ``[x, y, w, h]``, clipped to the image and rounded."""
    if len(xyxy) != 4:
        raise ValueError(f"xyxy must have 4 numbers, got {list(xyxy)!r}")
    x0, y0, x1, y1 = (min(1.0, max(0.0, float(v))) for v in xyxy)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"xyxy box has x1 < x0 or y1 < y0: {list(xyxy)!r}")
    return [round(x0, BBOX_DIGITS), round(y0, BBOX_DIGITS),
            round(x1 - x0, BBOX_DIGITS), round(y1 - y0, BBOX_DIGITS)]


def round_conf(conf: float) -> float:
    """A confidence to ``CONF_DIGITS`` significant digits (never a positive one to 0)."""
    return float(f"{float(conf):.{CONF_DIGITS}g}")


def detection(category: str | int, conf: float, bbox_xywh: Sequence[float]) -> dict:
    """One detection entry; ``bbox_xywh`` is normalised ``[x, y, w, h]``."""
    return {"category": str(int(category)), "conf": round_conf(conf),
            "bbox": [round(float(v), BBOX_DIGITS) for v in bbox_xywh]}


def image_entry(file: str, detections: list[dict] | None, *, failure: str | None = None,
                **extras: Any) -> dict:
    """One ``images[]`` entry. Pass ``detections=None`` and a ``failure`` reason for a failed image.

    ``extras`` must be among ``datetime``, ``camera``, ``sequence_id`` (None values are dropped).
    """
    unknown = set(extras) - set(IMAGE_EXTRAS)
    if unknown:
        raise ValueError(f"unknown image extras {sorted(unknown)}; allowed: {list(IMAGE_EXTRAS)}")
    if failure is not None and detections is not None:
        raise ValueError(f"image {file!r}: a failed image has detections=None, got {detections!r}")
    if failure is None and detections is None:
        raise ValueError(f"image {file!r}: give detections (maybe []) or a failure reason")
    entry: dict = {"file": str(file).replace("\\", "/"), "detections": detections, "failure": failure}
    entry.update({k: v for k, v in extras.items() if v is not None})
    return entry


def build_batch(images: Iterable[dict], categories: Mapping[str | int, str], *, detector: str,
                completion_time: _dt.datetime | None = None,
                detector_metadata: Mapping[str, Any] | None = None) -> dict:
    """Assemble a batch document (format ``FORMAT_VERSION``) and validate it before returning."""
    when = completion_time or _dt.datetime.now(_dt.timezone.utc)
    info: dict = {"format_version": FORMAT_VERSION, "detector": detector,
                  "detection_completion_time": when.strftime("%Y-%m-%d %H:%M:%S")}
    if detector_metadata:
        info["detector_metadata"] = dict(detector_metadata)
    doc = {"info": info, "detection_categories": {str(int(k)): str(v) for k, v in categories.items()},
           "images": list(images)}
    validate_batch(doc)
    return doc


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_categories(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise MegaDetectorFormatError(f"{where} must be an object, got {type(value).__name__}")
    for key, name in value.items():
        if not isinstance(key, str) or not key.isdigit():
            raise MegaDetectorFormatError(f"{where} key {key!r} is not a non-negative integer string")
        if not isinstance(name, str) or not name.strip():
            raise MegaDetectorFormatError(f"{where}[{key!r}] name must be a non-blank string, got {name!r}")
    return value


def _check_detection(det: Any, where: str, categories: dict, strict: bool) -> None:
    if not isinstance(det, dict):
        raise MegaDetectorFormatError(f"{where} must be an object, got {type(det).__name__}")
    for key in ("category", "conf", "bbox"):
        if key not in det:
            raise MegaDetectorFormatError(f"{where} lacks required field {key!r}")
    category = det["category"]
    if not isinstance(category, str) or not category.isdigit():
        raise MegaDetectorFormatError(f"{where}.category {category!r} is not an integer string")
    if strict and category not in categories:
        raise MegaDetectorFormatError(f"{where}.category {category!r} is not in detection_categories")
    conf = det["conf"]
    if not _is_number(conf) or not 0.0 <= conf <= 1.0:
        raise MegaDetectorFormatError(f"{where}.conf {conf!r} is not a number in [0, 1]")
    bbox = det["bbox"]
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        raise MegaDetectorFormatError(f"{where}.bbox {bbox!r} is not 4 finite numbers [x, y, w, h]")
    x, y, w, h = bbox
    if w < 0 or h < 0:
        raise MegaDetectorFormatError(f"{where}.bbox {bbox!r} has a negative width or height")
    if strict and (min(x, y) < -_EPS or x + w > 1 + _EPS or y + h > 1 + _EPS):
        raise MegaDetectorFormatError(f"{where}.bbox {bbox!r} is not normalised to the image [0, 1]")
    if "classifications" in det:
        cls = det["classifications"]
        if not isinstance(cls, list):
            raise MegaDetectorFormatError(f"{where}.classifications must be a list")
        previous = math.inf
        for j, pair in enumerate(cls):
            if (not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], str)
                    or not _is_number(pair[1])):
                raise MegaDetectorFormatError(f"{where}.classifications[{j}] {pair!r} is not [id, conf]")
            if pair[1] > previous:
                raise MegaDetectorFormatError(f"{where}.classifications are not in descending confidence")
            previous = pair[1]
    if "frame_number" in det and (not isinstance(det["frame_number"], int) or det["frame_number"] < 0):
        raise MegaDetectorFormatError(f"{where}.frame_number {det['frame_number']!r} is not an int >= 0")


def validate_batch(doc: Any, *, strict: bool = True) -> None:
    """Raise MegaDetectorFormatError unless ``doc`` is valid MegaDetector batch output, format 1.x.

    ``strict`` also requires what our own writers guarantee beyond the spec's letter: every
    detection category listed in ``detection_categories``, bboxes inside the image, unique files.
    """
    if not isinstance(doc, dict):
        raise MegaDetectorFormatError(f"document must be an object, got {type(doc).__name__}")
    for key in ("info", "detection_categories", "images"):
        if key not in doc:
            raise MegaDetectorFormatError(f"document lacks required field {key!r}")
    info = doc["info"]
    if not isinstance(info, dict) or "format_version" not in info:
        raise MegaDetectorFormatError("info must be an object with format_version")
    version = parse_version(info["format_version"])
    if not (MIN_VERSION <= version and version[0] == MAX_MAJOR):
        raise MegaDetectorFormatError(f"info.format_version {info['format_version']!r} is not 1.x")
    categories = _check_categories(doc["detection_categories"], "detection_categories")
    if "classification_categories" in doc:
        _check_categories(doc["classification_categories"], "classification_categories")
    images = doc["images"]
    if not isinstance(images, list):
        raise MegaDetectorFormatError(f"images must be a list, got {type(images).__name__}")
    seen: set[str] = set()
    for i, image in enumerate(images):
        where = f"images[{i}]"
        if not isinstance(image, dict):
            raise MegaDetectorFormatError(f"{where} must be an object")
        file = image.get("file")
        if not isinstance(file, str) or not file:
            raise MegaDetectorFormatError(f"{where}.file must be a non-empty string, got {file!r}")
        if strict and file in seen:
            raise MegaDetectorFormatError(f"{where}.file {file!r} appears twice")
        seen.add(file)
        failure = image.get("failure")
        detections = image.get("detections")
        if failure is not None:
            if not isinstance(failure, str) or not failure:
                raise MegaDetectorFormatError(f"{where}.failure must be null or a non-empty string")
            if detections is not None:
                raise MegaDetectorFormatError(
                    f"{where} ({file!r}) failed, so detections must be null or absent, got {detections!r}")
            continue
        if not isinstance(detections, list):
            raise MegaDetectorFormatError(
                f"{where} ({file!r}) succeeded, so detections must be a list (maybe empty), got {detections!r}")
        for j, det in enumerate(detections):
            _check_detection(det, f"{where}.detections[{j}]", categories, strict)


def write_csv(doc: Mapping, out: str | Path | TextIO) -> int:
    """Write the batch as CSV, one row per detection (columns ``CSV_COLUMNS``); return the row count.

    An image with no detections, or a failed one, still gets one row with empty detection
    fields, so the CSV carries the same content as the JSON.
    """
    validate_batch(doc, strict=False)
    names = doc["detection_categories"]
    rows: list[dict] = []
    for image in doc["images"]:
        base = {"file": image["file"], "failure": image.get("failure") or ""}
        base.update({k: image.get(k, "") for k in IMAGE_EXTRAS})
        detections = image.get("detections") or []
        if not detections:
            rows.append(base)
        for det in detections:
            x, y, w, h = det["bbox"]
            rows.append({**base, "category": det["category"], "category_name": names.get(det["category"], ""),
                         "conf": det["conf"], "x": x, "y": y, "w": w, "h": h})
    if isinstance(out, (str, Path)):
        with open(out, "w", newline="", encoding="utf-8") as handle:
            _write_rows(handle, rows)
    else:
        _write_rows(out, rows)
    return len(rows)


def _write_rows(handle: TextIO | io.StringIO, rows: list[dict]) -> None:
    writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, restval="")
    writer.writeheader()
    writer.writerows(rows)
