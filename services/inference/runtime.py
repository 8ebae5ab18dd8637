"""The process-wide detector (built once from Settings) and single-image detection with timing.

REST, gRPC and the survey task all call ``detect_one``/``get_detector`` here, so every
entry point shares one backend: one ONNX Runtime session, or one Triton connection.
If the detector cannot be built (Triton down at start), the next call tries again, so the
service recovers when Triton returns without a restart.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

from prometheus_client import Gauge, Histogram

from labelfree.core.errors import LabelfreeError
from labelfree.core.images import decode_image
from labelfree.core.megadetector import image_entry
from labelfree.core.settings import get_settings
from labelfree.inference.backends import Detector, make_backend, make_detector

STAGE_SECONDS = Histogram(
    "labelfree_inference_stage_seconds", "Time per detection stage", ["backend", "stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
IN_FLIGHT = Gauge("labelfree_inference_in_flight", "Images being detected now", ["backend", "entry"])
IMAGES = Histogram("labelfree_inference_batch_images", "Images per backend call", ["backend"],
                   buckets=(1, 2, 4, 8, 16, 32, 64))

_lock = threading.Lock()
_detector: Detector | None = None


def get_detector() -> Detector:
    """The configured detector, built on first use (thread-safe)."""
    global _detector
    if _detector is not None:
        return _detector
    with _lock:
        if _detector is None:
            s = get_settings()
            backend = make_backend(s.inference_backend, detector_dir=s.detector_dir, triton_url=s.triton_url,
                                   triton_model=s.triton_model, triton_version=s.triton_model_version,
                                   onnx_providers=s.onnx_providers)
            try:
                _detector = make_detector(backend, s.detector_dir)
            except BaseException:
                backend.close()
                raise
    return _detector


def reset_detector() -> None:
    """Drop the detector (tests switch models and backends between cases)."""
    global _detector
    with _lock:
        if _detector is not None:
            _detector.close()
        _detector = None


def detector_ready() -> None:
    """Readiness check for /readyz: raise unless the model can serve now."""
    get_detector().backend.check_ready()


@contextmanager
def _in_flight(backend: str, entry: str) -> Iterator[None]:
    gauge = IN_FLIGHT.labels(backend, entry)
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


def detect_one(data: bytes, *, file: str = "image", threshold: float | None = None,
               entry: str = "rest") -> dict:
    """Decode and detect one encoded image.

    Returns ``{"image": <MegaDetector images[] entry>, "detection_categories": {...},
    "detector": name, "timing_ms": {"decode", "inference", "total"}}``. Raises
    ImageDecodeError (4xx) for a bad image and LabelfreeError("unavailable") when the
    model cannot serve.
    """
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise LabelfreeError("bad_request", f"threshold must be within [0, 1], got {threshold}")
    start = time.perf_counter()
    s = get_settings()
    image = decode_image(data, max_pixels=s.max_image_pixels)
    decoded = time.perf_counter()
    detector = get_detector()
    backend = detector.backend.name
    with _in_flight(backend, entry):
        detections = detector.detect([image], threshold=threshold)[0]
    done = time.perf_counter()
    STAGE_SECONDS.labels(backend, "decode").observe(decoded - start)
    STAGE_SECONDS.labels(backend, "inference").observe(done - decoded)
    IMAGES.labels(backend).observe(1)
    return {
        "image": image_entry(file, detections),
        "detection_categories": detector.spec.categories,
        "detector": detector.spec.name,
        "backend": backend,
        "timing_ms": {"decode": round((decoded - start) * 1000, 3), "inference": round((done - decoded) * 1000, 3),
                      "total": round((done - start) * 1000, 3)},
    }
