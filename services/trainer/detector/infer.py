"""Run an exported detector (DET_DIR) with ONNX Runtime over image folders -> MegaDetector 1.x.

Images are decoded with :func:`labelfree.core.images.load_rgb` (EXIF-oriented RGB),
stretched to the manifest's ``input_size`` and fed in batches; decoding is overlapped with
inference on a small thread pool. A file that fails to decode becomes a ``failure`` entry.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from labelfree.core.images import ImageDecodeError, detector_preview_side, iter_image_files, load_rgb
from labelfree.core.megadetector import bbox_from_xyxy, build_batch, detection, image_entry
from labelfree.trainer.detector.data import stretch_resize
from labelfree.trainer.detector.export import make_session

DEFAULT_THRESHOLD = 0.1


class DetectorRunner:
    """A loaded DET_DIR: ``predict(uint8 (N, S, S, 3))`` -> (boxes (N, K, 4) normalised xyxy,
    scores (N, K), classes (N, K) int64)."""

    def __init__(self, model_dir: str | Path, *, threads: int | None = None, gpu: bool = False,
                 graph: str = "model.onnx"):
        model_dir = Path(model_dir)
        manifest_path = model_dir / "manifest.json"
        if not manifest_path.is_file() or not (model_dir / graph).is_file():
            raise ValueError(f"{model_dir} is not a detector directory (needs model.onnx and manifest.json)")
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("kind") != "detector":
            raise ValueError(f"{model_dir} holds a {self.manifest.get('kind')!r} model, not a detector")
        self.input_size = int(self.manifest["input_size"])
        self.labels: list[str] = list(self.manifest["labels"])
        self.category_ids: list[int] = [int(c) for c in self.manifest.get("category_ids")
                                        or range(1, len(self.labels) + 1)]
        # ``graph``: the deployed model.onnx, or model_fp32.onnx beside an int8 one (for comparisons).
        self.session = make_session(model_dir / graph, threads=threads, gpu=gpu)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return stretch_resize(image, self.input_size)

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        boxes, scores, classes = self.session.run(["boxes", "scores", "classes"], {"images": batch})
        return boxes, scores, classes

    def categories(self) -> dict[str, str]:
        """MegaDetector ``detection_categories``: COCO category id (as string) -> label."""
        return {str(cid): name for cid, name in zip(self.category_ids, self.labels)}

    def detections(self, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                   threshold: float) -> list[dict]:
        """One image's top-K -> MegaDetector detections with ``conf >= threshold``."""
        keep = scores >= threshold
        return [detection(self.category_ids[int(c)], float(s), bbox_from_xyxy(b))
                for b, s, c in zip(boxes[keep], scores[keep], classes[keep])]


def _load(path: Path, size: int) -> np.ndarray | str:
    try:
        return stretch_resize(load_rgb(path, preview_side=detector_preview_side(size)), size)
    except (ImageDecodeError, OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


def _batches(paths: Sequence[Path], size: int, batch_size: int, workers: int) -> Iterator[list]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = pool.map(lambda p: (p, _load(p, size)), paths)
        batch: list = []
        for item in pending:
            batch.append(item)
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def detect_folder(model_dir: str | Path, images: str | Path, *, threshold: float = DEFAULT_THRESHOLD,
                  batch_size: int = 16, threads: int | None = None, decode_workers: int = 2,
                  gpu: bool = False, progress: Callable[[int, int], None] | None = None,
                  graph: str = "model.onnx") -> dict:
    """Detect on every image under ``images`` (recursive); ``file`` is relative to ``images``.

    Returns a validated MegaDetector batch document. ``progress(done, total)`` after each batch.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    root = Path(images)
    if not root.is_dir():
        raise ValueError(f"--images {root} is not a directory")
    runner = DetectorRunner(model_dir, threads=threads, gpu=gpu, graph=graph)
    paths = list(iter_image_files([root]))
    entries: list[dict] = []
    done = 0
    for batch in _batches(paths, runner.input_size, batch_size, decode_workers):
        good = [(p, a) for p, a in batch if not isinstance(a, str)]
        results = runner.predict(np.stack([a for _, a in good])) if good else ([], [], [])
        by_path = {p: (results[0][i], results[1][i], results[2][i]) for i, (p, _) in enumerate(good)}
        for path, loaded in batch:
            rel = path.relative_to(root).as_posix()
            if isinstance(loaded, str):
                entries.append(image_entry(rel, None, failure=loaded))
            else:
                entries.append(image_entry(rel, runner.detections(*by_path[path], threshold)))
        done += len(batch)
        if progress:
            progress(done, len(paths))
    manifest = runner.manifest
    return build_batch(entries, runner.categories(), detector=f"labelfree-detector {manifest.get('code_version', '')}".strip(),
                       detector_metadata={"image_size": runner.input_size, "top_k": manifest.get("top_k"),
                                          "typical_detection_threshold": 0.3,
                                          "conservative_detection_threshold": threshold})
