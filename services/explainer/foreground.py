"""A per-dataset foreground model: the classifier's CAM teaches a linear cell classifier.

Why: the CAM's cells are 32 px of a 224 input (7 x 7 per image): it peaks on heads and
bleeds half a cell onto the background, and two lions in one photo merge. The backbone's
last block output (before the 1280-d head) at a larger input (448 -> 14 x 14 cells) is finer
and less class-specific. On the dataset's own positives (no boxes, what the product has),
each cell at the fine grid gets the label "CAM > 0" (the model's own sign, no tuned
threshold), and a Fisher linear discriminant of fine features vs that label is fitted. The
many grass cells that the CAM labels background outvote the few it bled onto, so the
discriminant learns "lion fur vs savanna" rather than the CAM's blur.

Fitting streams: class counts, class sums and one sum of outer products, so partial
statistics from Spark partitions merge exactly (up to float64 rounding), memory is
O(C^2) (C = 320 channels for EfficientNet-Lite0) whatever the number of images.

Self-training (``self_train``): the fitted discriminant relabels every cell by its own sign and
is refitted on those labels, until fewer than ``tol`` of the cells change label between rounds.
The CAM's labels are a blurred, head-centred start; each round the fur-vs-background direction
pulls the labels toward itself and away from the CAM's bleed. On lion/dev (fitted on the pool)
CorLoc 0.777 -> 0.83 and mean IoU 0.628 -> 0.66 (bench/results/explainer.md). A round needs the
cells' features again but no network: callers keep each image's features (float16, 125 KB at
448, 300 KB with the stride-16 level) from the first pass, in memory or in a persisted Spark DataFrame.

Two levels (``ForegroundModel.fine``): the same fit, CAM-taught and self-trained on its own, runs
on the backbone's last stride-16 block output too (28 x 28 cells at 448, 112 channels for
EfficientNet-Lite0). Alone it traces outlines better but confuses more texture with fur; the
coarse level knows "lion" but blurs edges by half a 32 px cell. The labeller adds their
log-likelihood ratios on the fine grid (naive Bayes over the two levels, one prior), so a cell is
foreground where the two together say so: lion/dev CorLoc 0.830 -> 0.873, mean IoU 0.659 ->
0.719 (bench/results/explainer.md, "Two feature levels").

Conventions: features (C, h, w) float; labels (h, w) bool; evidence (h, w) float32 in
discriminant units (> 0: foreground, the prior log-odds included).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from typing import Callable, Iterable

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class ForegroundModel:
    """A linear cell classifier: evidence = coef . f(x, y) + intercept.

    side: the input side the features are taken at; coef (C,) float32; n_images, n_cells and
    fg_share (share of cells labelled foreground) describe what it was fitted on; rounds: the
    self-training rounds after the CAM-taught fit; fine: the same kind of model over the stride-16
    features (None: coarse level only, as fitted before it existed or on a graph without that tap).
    """

    side: int
    coef: np.ndarray
    intercept: float
    n_images: int
    n_cells: int
    fg_share: float
    rounds: int = 0
    fine: "ForegroundModel | None" = None

    @property
    def prior(self) -> float:
        """The prior log-odds of foreground inside ``intercept``; 0 for a constant model (fitted on one
        class only), whose intercept is a sign, not prior + likelihood."""
        if not self.coef.any():
            return 0.0
        share = min(max(self.fg_share, 1e-6), 1 - 1e-6)
        return float(np.log(share / (1 - share)))

    def evidence_map(self, features: np.ndarray, fine: np.ndarray | None = None) -> np.ndarray:
        """Both levels' evidence on the fine grid: coarse evidence upsampled, plus the fine level's
        log-likelihood ratio (its evidence less its prior: the prior is counted once).
        Coarse only (at the coarse grid) when this model has no fine level."""
        coarse = self.evidence(features)
        if self.fine is None:
            return coarse
        if fine is None:
            raise ValueError("this foreground model has a fine level: it needs the stride-16 features too")
        detail = self.fine.evidence(fine) - np.float32(self.fine.prior)
        return upsample(coarse, detail.shape) + detail

    def evidence(self, features: np.ndarray) -> np.ndarray:
        """(C, h, w) features -> (h, w) float32 evidence."""
        features = np.asarray(features)
        if features.ndim != 3 or features.shape[0] != self.coef.shape[0]:
            raise ValueError(f"features must be ({self.coef.shape[0]}, h, w), got {features.shape}")
        out = np.tensordot(self.coef.astype(np.float64), features.astype(np.float64), axes=(0, 0))
        return (out + self.intercept).astype(np.float32)

    def to_dict(self) -> dict:
        """JSON-friendly form (shipped to Spark executors, recorded in job results)."""
        return {"side": self.side, "coef": [float(v) for v in self.coef], "intercept": self.intercept,
                "n_images": self.n_images, "n_cells": self.n_cells, "fg_share": self.fg_share,
                "rounds": self.rounds, "fine": self.fine.to_dict() if self.fine is not None else None}

    def labels(self, features: np.ndarray) -> np.ndarray:
        """(C, h, w) features -> (h, w) bool: the cells this model calls foreground."""
        return self.evidence(features) > 0

    @classmethod
    def from_dict(cls, data: dict) -> "ForegroundModel":
        fine = cls.from_dict(data["fine"]) if data.get("fine") else None
        return cls(int(data["side"]), np.asarray(data["coef"], dtype=np.float32), float(data["intercept"]),
                   int(data["n_images"]), int(data["n_cells"]), float(data["fg_share"]), int(data.get("rounds", 0)),
                   fine)


def upsample(values: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize (PIL) of a float map to (H, W) float32: the evidence maps' one resampler."""
    img = Image.fromarray(np.asarray(values, dtype=np.float32), mode="F")
    return np.asarray(img.resize((hw[1], hw[0]), Image.BILINEAR), dtype=np.float32)


class ForegroundStats:
    """Streaming sufficient statistics of (fine feature, CAM label) cells; mergeable.
    ``fine_dim``: also keep a second level's statistics in ``fine`` (the stride-16 features)."""

    def __init__(self, dim: int, fine_dim: int | None = None):
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.count = np.zeros(2, dtype=np.float64)        # [background, foreground] cells
        self.sums = np.zeros((2, dim), dtype=np.float64)  # per-class feature sums
        self.outer = np.zeros((dim, dim), dtype=np.float64)  # sum of f f^T over all cells
        self.n_images = 0
        self.fine = ForegroundStats(fine_dim) if fine_dim is not None else None

    def add(self, features: np.ndarray, labels: np.ndarray) -> None:
        """Add one image: features (C, h, w), labels (h, w) bool (True = foreground)."""
        features = np.asarray(features, dtype=np.float64)
        labels = np.asarray(labels, dtype=bool)
        if features.ndim != 3 or features.shape[0] != self.dim or features.shape[1:] != labels.shape:
            raise ValueError(f"features {features.shape} and labels {labels.shape} do not match dim {self.dim}")
        x = features.reshape(self.dim, -1).T
        y = labels.reshape(-1)
        self.count += (np.sum(~y), np.sum(y))
        self.sums[0] += x[~y].sum(axis=0)
        self.sums[1] += x[y].sum(axis=0)
        self.outer += x.T @ x
        self.n_images += 1

    def merge(self, other: "ForegroundStats") -> "ForegroundStats":
        if other.dim != self.dim or (other.fine is None) != (self.fine is None):
            raise ValueError(f"cannot merge stats of dim {other.dim} into dim {self.dim} (or levels differ)")
        self.count += other.count
        self.sums += other.sums
        self.outer += other.outer
        self.n_images += other.n_images
        if self.fine is not None:
            self.fine.merge(other.fine)
        return self

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        arrays = {"count": self.count, "sums": self.sums, "outer": self.outer, "n_images": self.n_images}
        if self.fine is not None:
            arrays.update(fine=np.frombuffer(self.fine.to_bytes(), dtype=np.uint8))
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "ForegroundStats":
        arrays = np.load(io.BytesIO(data))
        stats = cls(int(arrays["sums"].shape[1]))
        stats.count, stats.sums, stats.outer = arrays["count"], arrays["sums"], arrays["outer"]
        stats.n_images = int(arrays["n_images"])
        if "fine" in arrays:
            stats.fine = cls.from_bytes(arrays["fine"].tobytes())
        return stats

    def fit(self, side: int) -> ForegroundModel:
        """Fisher discriminant: coef = S_w^-1 (mu_fg - mu_bg), midpoint + prior log-odds intercept.

        S_w (pooled within-class covariance) gets a ridge of 1e-6 x its mean variance only
        so that a singular S_w (few images, constant channels) still solves; it does not
        shape the answer on real data. When the CAM gave one sign only (every cell of every
        image foreground, or none), there is no contrast to learn: the model is constant
        (coef 0, intercept +-1) and every present image gets the whole-image box.
        Raises ValueError when no cell was added.
        """
        n = self.count.sum()
        if n < 1:
            raise ValueError("foreground fit needs at least one image the classifier calls positive")
        fine = self.fine.fit(side) if self.fine is not None else None
        if self.count.min() < 1:
            return ForegroundModel(int(side), np.zeros(self.dim, np.float32), 1.0 if self.count[1] else -1.0,
                                   self.n_images, int(n), float(self.count[1] / n), fine=fine)
        means = self.sums / self.count[:, None]
        within = (self.outer - sum(self.count[k] * np.outer(means[k], means[k]) for k in range(2))) / n
        within += np.eye(self.dim) * (1e-6 * max(np.trace(within) / self.dim, 1e-12))
        coef = np.linalg.solve(within, means[1] - means[0])
        prior = float(np.log(self.count[1] / self.count[0]))
        intercept = float(-coef @ (means[1] + means[0]) / 2 + prior)
        # float32 coefficients: what ships to executors, and it absorbs summation-order noise.
        return ForegroundModel(int(side), coef.astype(np.float32), round(intercept, 6), self.n_images, int(n),
                               float(self.count[1] / n), fine=fine)


def features_to_bytes(features: np.ndarray, fine: np.ndarray | None = None) -> bytes:
    """One image's features (C, h, w), and its stride-16 ones when given, as float16 .npz bytes:
    what self-training keeps per image (125 + 175 KB at 448 for EfficientNet-Lite0)."""
    buf = io.BytesIO()
    arrays = {"coarse": np.asarray(features, dtype=np.float16)}
    if fine is not None:
        arrays["fine"] = np.asarray(fine, dtype=np.float16)
    np.savez(buf, **arrays)
    return buf.getvalue()


def features_from_bytes(data: bytes, level: int = 0) -> np.ndarray:
    """The kept features of one level (0: coarse, 1: fine) as float32."""
    return np.load(io.BytesIO(data))["fine" if level else "coarse"].astype(np.float32)


def relabelled_stats(features: Iterable[np.ndarray], model: ForegroundModel,
                     previous: ForegroundModel | None = None) -> tuple[ForegroundStats | None, int, int]:
    """Statistics of the cells labelled by ``model``'s sign; plus (cells whose label differs from
    ``previous``'s, cells) for the stopping rule. Partial results of several calls merge."""
    stats, changed, cells = None, 0, 0
    for f in features:
        labels = model.labels(f)
        if previous is not None:
            changed += int(np.count_nonzero(labels != previous.labels(f)))
        cells += labels.size
        stats = stats if stats is not None else ForegroundStats(f.shape[0])
        stats.add(f, labels)
    return stats, changed, cells


Relabel = Callable[[ForegroundModel, "ForegroundModel | None"], "tuple[ForegroundStats | None, int, int]"]
LevelRelabel = Callable[[int, ForegroundModel, "ForegroundModel | None"], "tuple[ForegroundStats | None, int, int]"]


def self_train(model: ForegroundModel, relabel: Relabel, *, max_rounds: int = 10,
               tol: float = 0.01) -> ForegroundModel:
    """Refit ``model`` on its own labels until fewer than ``tol`` of the cells change label
    between two rounds, or ``max_rounds`` refits. ``relabel(model, previous)`` returns
    ``relabelled_stats`` over the dataset's kept features (in process or from Spark partitions).
    """
    previous = None
    for _ in range(max_rounds):
        stats, changed, cells = relabel(model, previous)
        if stats is None:
            break
        if previous is not None and changed < tol * cells:
            break  # a fixed point: another fit would barely move the labels
        fitted = stats.fit(model.side)
        previous, model = model, ForegroundModel(fitted.side, fitted.coef, fitted.intercept, fitted.n_images,
                                                 fitted.n_cells, fitted.fg_share, model.rounds + 1)
    return model


def self_train_levels(model: ForegroundModel, relabel: LevelRelabel, *, max_rounds: int = 10,
                      tol: float = 0.01) -> ForegroundModel:
    """``self_train`` each level on its own labels: the coarse model, then its fine level.
    ``relabel(level, model, previous)`` works as ``self_train``'s over that level's kept features
    (level 0: coarse, 1: fine)."""
    coarse = self_train(replace(model, fine=None), lambda m, prev: relabel(0, m, prev), max_rounds=max_rounds,
                        tol=tol)
    if model.fine is None:
        return coarse
    fine = self_train(model.fine, lambda m, prev: relabel(1, m, prev), max_rounds=max_rounds, tol=tol)
    return replace(coarse, fine=fine)
