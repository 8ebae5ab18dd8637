"""Group camera-trap shots into bursts (sequences) and give each sequence a verdict.

Camera traps fire bursts (snow-leopard cameras shoot 5 frames). A sequence is a run of
shots from the same camera whose consecutive capture times differ by less than
``gap_seconds``. The sequence verdict is the highest detection confidence of any frame in
it: an animal seen in one frame of a burst is in the burst.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Iterable, Mapping

DEFAULT_GAP_SECONDS = 10.0
UNKNOWN_CAMERA = "unknown"


@dataclass(frozen=True)
class Shot:
    """One photo: a stable ``key`` (the image id), its camera and EXIF capture time (naive local)."""

    key: str
    camera: str | None
    captured_at: datetime | None


def camera_of(file_name: str | None, *, survey_camera: str | None = None, make: str | None = None,
              model: str | None = None) -> str:
    """The camera a survey photo came from.

    Surveys are uploaded one folder per camera station, so the file's folder path names the
    camera when there is one. The whole path, not one level: a Reconyx card nests frames in
    ``100RECNX/`` under every station (``site/CAM07/100RECNX/IMG_0001.JPG``), and a shared
    top folder wraps whole uploads. Else the survey's camera; else EXIF make and model (which
    names a model, not a unit, so it is the last resort).
    """
    parent = PurePosixPath((file_name or "").replace("\\", "/")).parent
    if str(parent) not in ("", "."):
        return str(parent)
    if survey_camera:
        return survey_camera
    label = " ".join(p for p in (make, model) if p).strip()
    return label or UNKNOWN_CAMERA


def assign_sequences(shots: Iterable[Shot], gap_seconds: float = DEFAULT_GAP_SECONDS) -> dict[str, str]:
    """Map each shot key to its sequence id.

    Same camera and a gap below ``gap_seconds`` to the previous shot (by capture time) joins
    the previous shot's sequence. A shot with no capture time is a sequence of its own.
    Sequence ids read ``<camera>/<start %Y%m%dT%H%M%S>`` and are stable across reruns.
    """
    if gap_seconds < 0:
        raise ValueError(f"gap_seconds must be >= 0, got {gap_seconds}")
    by_camera: dict[str, list[Shot]] = defaultdict(list)
    result: dict[str, str] = {}
    for shot in shots:
        camera = shot.camera or UNKNOWN_CAMERA
        if shot.captured_at is None:
            result[shot.key] = f"{camera}/untimed-{shot.key}"
        else:
            by_camera[camera].append(shot)
    used: set[str] = set()
    for camera, camera_shots in sorted(by_camera.items()):
        camera_shots.sort(key=lambda s: (s.captured_at, s.key))
        current = None
        previous: datetime | None = None
        for shot in camera_shots:
            if current is None or (shot.captured_at - previous).total_seconds() >= gap_seconds:
                base = f"{camera}/{shot.captured_at:%Y%m%dT%H%M%S}"
                current, n = base, 1
                while current in used:  # two bursts starting within one second (gap_seconds < 1)
                    n += 1
                    current = f"{base}-{n}"
                used.add(current)
            result[shot.key] = current
            previous = shot.captured_at
    return result


def sequence_verdicts(sequence_of: Mapping[str, str], conf_of: Mapping[str, float]) -> dict[str, dict]:
    """Per sequence: ``max_conf`` over its frames, ``images`` (frame count) and ``best`` (key of the top frame)."""
    verdicts: dict[str, dict] = {}
    for key, seq in sequence_of.items():
        conf = float(conf_of.get(key, 0.0))
        v = verdicts.setdefault(seq, {"max_conf": conf, "images": 0, "best": key})
        v["images"] += 1
        if conf > v["max_conf"]:
            v["max_conf"], v["best"] = conf, key
    return verdicts
