"""Score images with a classifier MODEL_DIR through ONNX Runtime."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import IO, Iterable

import numpy as np

from labelfree.core.images import ImageDecodeError, decode_image, iter_image_files
from labelfree.trainer.export import FORMAT
from labelfree.trainer.featurize import image_views, make_session


class ClassifierModel:
    """A loaded MODEL_DIR: ``score(images)`` with images uint8 ``(N, S, S, 3)``, S = ``input_size``."""

    def __init__(self, model_dir: str | Path, threads: int | None = None):
        model_dir = Path(model_dir)
        onnx_path, manifest_path = model_dir / "model.onnx", model_dir / "manifest.json"
        for p in (onnx_path, manifest_path):
            if not p.is_file():
                raise ValueError(f"{model_dir} is not a classifier MODEL_DIR: {p.name} is missing")
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{manifest_path} has format {self.manifest.get('format')!r}, expected {FORMAT!r}")
        self.input_size = int(self.manifest["input_size"])
        self.session = make_session(onnx_path, threads)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """``{"score": (N,), "logit": (N,), "cam": (N, h, w)}`` for uint8 ``(N, H, W, 3)``."""
        names = ["score", "logit", "cam"]
        return dict(zip(names, self.session.run(names, {"images": images})))

    def score(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(["score"], {"images": images})[0]


def classify_folder(model_dir: str | Path, images_dir: str | Path, *, batch_size: int = 32,
                    max_pixels: int = 64_000_000) -> tuple[list[tuple[str, float]], list[tuple[str, str]]]:
    """``([(file relative to images_dir, P(positive))], [(file, reason) skipped])``, in file order."""
    model = ClassifierModel(model_dir)
    images_dir = Path(images_dir)
    rows: list[tuple[str, float]] = []
    skipped: list[tuple[str, str]] = []
    names: list[str] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        if batch:
            rows.extend(zip(names, map(float, model.score(np.stack(batch)))))
            names.clear(), batch.clear()

    for path in iter_image_files([images_dir]):
        rel = path.relative_to(images_dir).as_posix()
        try:
            image = decode_image(path.read_bytes(), max_pixels=max_pixels)
        except (ImageDecodeError, OSError) as exc:
            skipped.append((rel, getattr(exc, "detail", None) or str(exc)))
            continue
        names.append(rel)
        batch.append(image_views(image, model.input_size)["full"])
        if len(batch) >= batch_size:
            flush()
    flush()
    return rows, skipped


def write_scores(rows: Iterable[tuple[str, float]], out: str | Path | IO[str]) -> None:
    """CSV with header ``file,score``."""
    if isinstance(out, (str, Path)):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as fh:
            write_scores(rows, fh)
        return
    writer = csv.writer(out)
    writer.writerow(["file", "score"])
    for name, score in rows:
        writer.writerow([name, f"{score:.6f}"])
