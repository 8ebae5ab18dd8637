"""Label many images with one classifier: the loop shared by the CLI, Celery and Spark.

A record per image (plain dict, JSON- and Arrow-friendly):
``{"key", "width", "height", "probability", "boxes": [[x1, y1, x2, y2], ...], "scores": [...], "error"}``
with boxes xyxy in pixels of the original image. A record with ``error`` set is a skipped
image (unreadable, corrupt); its boxes are empty.

Method "foreground" needs a first pass over the dataset's images (``fit_foreground``):
its statistics are per dataset, then every image is labelled with the fitted model.

Randomness: each image's LIME masks come from ``np.random.default_rng([seed, crc32(key)])``,
so the output does not depend on order or partitioning (Spark path == local path).
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from labelfree.core.images import ImageDecodeError, load_rgb
from labelfree.explainer.foreground import (ForegroundModel, ForegroundStats, features_from_bytes, features_to_bytes,
                                            relabelled_stats, self_train_levels)
from labelfree.explainer.labeller import LabelConfig, Labelled, cam_labels, label_image, presence
from labelfree.explainer.model import load_classifier, resize


def image_rng(seed: int, key: str) -> np.random.Generator:
    """The per-image generator: independent of processing order."""
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


class ModelLabeller:
    """A classifier plus a LabelConfig: labels one image at a time. Load once per process/partition.

    ``device``: ``auto`` runs the classifier on a GPU when one is usable (``model.load_classifier``).
    """

    def __init__(self, model_dir: str | Path, config: LabelConfig = LabelConfig(), *, threads: int | None = None,
                 foreground: ForegroundModel | None = None, device: str = "auto"):
        self.model = load_classifier(model_dir, threads=threads, device=device)
        self.model_dir = Path(model_dir)
        self.config = config
        self.foreground = foreground
        self.threshold = float(self.model.manifest.get("threshold", 0.5))

    @property
    def needs_fit(self) -> bool:
        """True when the method needs per-dataset statistics that are not fitted yet."""
        return self.config.method == "foreground" and self.foreground is None

    def label(self, image: np.ndarray, rng: np.random.Generator) -> Labelled:
        """Boxes for one (H, W, 3) uint8 image (see ``labeller.label_image``)."""
        if self.needs_fit:
            raise ValueError("method 'foreground' needs fit_foreground over the dataset first")
        return label_image(image, rng=rng, config=self.config, predict_logit=self.model.lime_predict,
                           run_cam=self.model.run, model_side=self.model.input_size,
                           model_threshold=self.threshold, run_features=self.model.taps,
                           foreground=self.foreground)

    def add_to_stats(self, image: np.ndarray, stats: ForegroundStats | None,
                     kept: list[bytes] | None = None) -> ForegroundStats | None:
        """Add one image's (features, CAM > 0) cells to ``stats`` (created on first use), at both
        levels when ``config.fg_fine`` and the graph has the stride-16 tap; append its features
        to ``kept`` (float16 bytes) for self-training when given.

        Images the classifier calls absent are left out: web positives hold some misses.
        """
        cfg = self.config
        if presence(image, self.model.run, self.model.input_size) < (
                cfg.present_below if cfg.present_below is not None else self.threshold):
            return stats
        features, fine = self.model.taps(resize(image, cfg.fg_side)[None])
        features, fine = features[0], (fine[0] if fine is not None and cfg.fg_fine else None)
        grids = [features.shape[1:]] + ([fine.shape[1:]] if fine is not None else [])
        labels = cam_labels(image, self.model.run, cfg.cam_sizes, grids)
        if stats is None:
            stats = ForegroundStats(features.shape[0], fine.shape[0] if fine is not None else None)
        stats.add(features, labels[0])
        if stats.fine is not None:
            stats.fine.add(fine, labels[1])
        if kept is not None:
            kept.append(features_to_bytes(features, fine))
        return stats


def foreground_stats(labeller: ModelLabeller, paths: Iterable[str | Path],
                     kept: list[bytes] | None = None) -> ForegroundStats | None:
    """Streamed statistics over image files (unreadable ones skipped); None when no image counts.
    ``kept``: a list that receives each counted image's features (see ``add_to_stats``)."""
    stats = None
    for path in paths:
        try:
            image = load_rgb(path)
        except (ImageDecodeError, OSError):
            continue
        stats = labeller.add_to_stats(image, stats, kept)
    return stats


def fit_foreground(labeller: ModelLabeller, paths: Iterable[str | Path]) -> ForegroundModel:
    """First pass of method "foreground": fit on the dataset's images, self-train each level
    (``config.fg_rounds``), attach to ``labeller``. The kept features cost 300 KB a positive.

    Raises ValueError when no image is a confident positive (nothing to learn from).
    """
    cfg = labeller.config
    kept: list[bytes] | None = [] if cfg.fg_rounds > 0 else None
    stats = foreground_stats(labeller, paths, kept)
    if stats is None:
        raise ValueError("no image the classifier calls positive: cannot fit the foreground model")
    model = stats.fit(cfg.fg_side)
    if kept:
        model = self_train_levels(
            model, lambda level, m, prev: relabelled_stats((features_from_bytes(b, level) for b in kept), m, prev),
            max_rounds=cfg.fg_rounds, tol=cfg.fg_tol)
    labeller.foreground = model
    return model


def label_record(labeller: ModelLabeller, key: str, path: str | Path, seed: int,
                 *, keep: bool = False) -> tuple[dict, np.ndarray | None, Labelled | None]:
    """Label one file -> (record, image or None, Labelled or None); decode failures become error records."""
    try:
        image = load_rgb(path)
    except (ImageDecodeError, OSError) as exc:
        detail = getattr(exc, "detail", None) or str(exc)  # images.decode_image keeps it free of object reprs
        return {"key": key, "width": 0, "height": 0, "probability": None, "boxes": [], "scores": [],
                "error": detail}, None, None
    out = labeller.label(image, image_rng(seed, key))
    record = {"key": key, "width": int(image.shape[1]), "height": int(image.shape[0]),
              "probability": round(float(out.probability), 6),
              "boxes": [[round(float(v), 2) for v in box] for box in out.boxes],
              "scores": [round(float(s), 6) for s in out.scores], "error": None}
    return record, (image if keep else None), (out if keep else None)


def label_paths(labeller: ModelLabeller, items: Iterable[tuple[str, str | Path]], seed: int = 0) -> Iterator[dict]:
    """Records for (key, path) pairs, streamed: memory stays one image's worth."""
    for key, path in items:
        yield label_record(labeller, key, path, seed)[0]
