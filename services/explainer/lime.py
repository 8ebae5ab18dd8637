"""Vectorised LIME over SLIC superpixels: the model-agnostic explainer.

``explain(image, predict, ...)`` hides random subsets of superpixels, scores every
perturbed image in large batches through ``predict`` and fits a kernel-weighted ridge
regression of the score on the on/off indicators. The result is one weight per
superpixel, an intercept and the weighted R^2 of the fit.

Conventions: images are RGB ``uint8`` arrays ``(H, W, 3)``; ``segments`` is an
``(H, W)`` int32 label map with labels ``0..K-1``; ``predict`` maps a batch
``(N, H, W, 3) uint8`` to ``(N,)`` float scores (a logit is the better target: a
saturated probability hardly moves when half the image is hidden).

There is no Python loop over samples or segments: masks are drawn as one boolean
matrix, composed into images with a gather (``masks[:, segments]``) per batch, and
the regression is a single linear solve.

A ``predict`` may also offer ``score_masks(image, segments, masks, fill=, batch_size=)``
returning the same ``(n,)`` scores: then composing happens where the model runs (a GPU
``TorchClassifier`` uploads the image, fill and label map once and only the boolean masks
per batch), instead of shipping ``batch_size`` composed images per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
from scipy import ndimage
from skimage.segmentation import slic

Predict = Callable[[np.ndarray], np.ndarray]
Fill = Union[str, tuple[int, int, int]]


@dataclass(frozen=True)
class Explanation:
    """LIME result for one image.

    segments: (H, W) int32 superpixel labels 0..K-1.
    weights: (K,) float64 ridge coefficient per superpixel (target units per superpixel shown).
    intercept: fitted score with every superpixel hidden.
    r2: weighted coefficient of determination of the fit on the samples.
    base_score: ``predict`` on the unperturbed image.
    n_samples: number of perturbed images scored (the unperturbed one included).
    """

    segments: np.ndarray
    weights: np.ndarray
    intercept: float
    r2: float
    base_score: float
    n_samples: int

    def weight_map(self) -> np.ndarray:
        """(H, W) float32 map of each pixel's superpixel weight."""
        return self.weights.astype(np.float32)[self.segments]


def superpixels(image: np.ndarray, *, n_segments: int = 80, compactness: float = 10.0,
                sigma: float = 1.0) -> np.ndarray:
    """SLIC superpixels of an (H, W, 3) uint8 image -> (H, W) int32 labels 0..K-1 (K <= n_segments-ish)."""
    image = _check_image(image)
    if n_segments < 1:
        raise ValueError(f"n_segments must be >= 1, got {n_segments}")
    labels = slic(image, n_segments=n_segments, compactness=compactness, sigma=sigma,
                  start_label=0, enforce_connectivity=True)
    # SLIC can skip label values; relabel densely so weights index 0..K-1.
    _, dense = np.unique(labels, return_inverse=True)
    return dense.reshape(labels.shape).astype(np.int32)


def fill_image(image: np.ndarray, fill: Fill = "blur", *, blur_sigma: float | None = None) -> np.ndarray:
    """The neutral image that hidden superpixels show, (H, W, 3) uint8.

    fill: "blur" (Gaussian blur, sigma ~ 1/10 of the short side: keeps colours, removes shape),
    "mean" (per-channel image mean), "grey" (127) or an (r, g, b) tuple.
    """
    image = _check_image(image)
    if isinstance(fill, str):
        if fill == "blur":
            sigma = blur_sigma if blur_sigma is not None else max(1.0, min(image.shape[:2]) / 10.0)
            out = ndimage.gaussian_filter(image.astype(np.float32), sigma=(sigma, sigma, 0), mode="nearest")
            return np.clip(out + 0.5, 0, 255).astype(np.uint8)
        if fill == "mean":
            return np.broadcast_to(image.reshape(-1, 3).mean(0).round().astype(np.uint8), image.shape).copy()
        if fill == "grey":
            return np.full_like(image, 127)
        raise ValueError(f"fill must be 'blur', 'mean', 'grey' or an (r, g, b) tuple, got {fill!r}")
    colour = np.asarray(fill)
    if colour.shape != (3,) or colour.min() < 0 or colour.max() > 255:
        raise ValueError(f"fill colour must be three values in 0..255, got {fill!r}")
    return np.broadcast_to(colour.astype(np.uint8), image.shape).copy()


def sample_masks(n_samples: int, n_segments: int, rng: np.random.Generator, *, p_on: float = 0.5) -> np.ndarray:
    """(n_samples, K) bool perturbation masks; row 0 is all-on (the unperturbed image)."""
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2, got {n_samples}")
    if not 0.0 < p_on < 1.0:
        raise ValueError(f"p_on must be in (0, 1), got {p_on}")
    masks = rng.random((n_samples, n_segments)) < p_on
    masks[0] = True
    return masks


def score_masks(image: np.ndarray, segments: np.ndarray, masks: np.ndarray, predict: Predict, *,
                fill: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Score every perturbation: (n, K) bool masks -> (n,) float64 predict outputs.

    Each batch is composed with one gather, so memory is batch_size * H * W * 3 bytes.
    A ``predict`` with its own ``score_masks`` (see the module doc) does the whole job instead.
    """
    own = getattr(predict, "score_masks", None)
    if own is not None:
        out = np.asarray(own(image, segments, masks, fill=fill, batch_size=batch_size), dtype=np.float64)
        if out.shape != (len(masks),):
            raise ValueError(f"predict.score_masks returned shape {out.shape} for {len(masks)} masks")
        return out
    out = np.empty(len(masks), dtype=np.float64)
    for start in range(0, len(masks), batch_size):  # loop over batches, not samples
        on = masks[start:start + batch_size][:, segments]  # (b, H, W) bool
        batch = np.where(on[..., None], image[None], fill[None])
        scores = np.asarray(predict(batch), dtype=np.float64).reshape(-1)
        if scores.shape[0] != on.shape[0]:
            raise ValueError(f"predict returned {scores.shape[0]} scores for a batch of {on.shape[0]}")
        out[start:start + len(on)] = scores
    return out


def lime_kernel(masks: np.ndarray, *, kernel_width: float = 0.25) -> np.ndarray:
    """LIME's sample weights: exponential kernel on the cosine distance to the all-on mask, (n,) float64."""
    on = masks.sum(1).astype(np.float64)
    cosine = on / np.sqrt(masks.shape[1] * np.maximum(on, 1.0))
    distance = 1.0 - cosine
    return np.sqrt(np.exp(-(distance ** 2) / kernel_width ** 2))


def weighted_ridge(x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray, *,
                   alpha: float = 1.0) -> tuple[np.ndarray, float, float]:
    """Ridge with an unpenalised intercept: returns (coef (K,), intercept, weighted R^2)."""
    w = sample_weight / sample_weight.sum()
    x = x.astype(np.float64)
    x_mean = w @ x
    y_mean = float(w @ y)
    xc, yc = x - x_mean, y - y_mean
    gram = (xc * w[:, None]).T @ xc
    # alpha is scaled to one sample's weight so it means the same at any n_samples.
    gram[np.diag_indices_from(gram)] += alpha / len(y)
    coef = np.linalg.solve(gram, (xc * w[:, None]).T @ yc)
    intercept = y_mean - float(x_mean @ coef)
    residual = yc - xc @ coef
    total = float(w @ yc ** 2)
    r2 = 1.0 - float(w @ residual ** 2) / total if total > 0 else 0.0
    return coef, intercept, r2


def explain(image: np.ndarray, predict: Predict, *, rng: np.random.Generator, n_segments: int = 80,
            n_samples: int = 256, segments: np.ndarray | None = None, fill: Fill = "blur",
            p_on: float = 0.5, kernel_width: float = 0.25, alpha: float = 1.0,
            batch_size: int = 64, compactness: float = 10.0) -> Explanation:
    """Explain ``predict`` on one (H, W, 3) uint8 image with vectorised LIME.

    segments: optional precomputed (H, W) int labels 0..K-1 (else SLIC with ``n_segments``).
    fill: what hidden superpixels show (see ``fill_image``).
    p_on: chance that a superpixel is shown in a sample.
    Returns an ``Explanation``; row 0 of the design is the unperturbed image, whose score is ``base_score``.
    """
    image = _check_image(image)
    if segments is None:
        segments = superpixels(image, n_segments=n_segments, compactness=compactness)
    else:
        segments = np.asarray(segments)
        if segments.shape != image.shape[:2]:
            raise ValueError(f"segments shape {segments.shape} does not match image {image.shape[:2]}")
        if segments.min() < 0:
            raise ValueError(f"segment labels must be >= 0, got min {segments.min()}")
        segments = segments.astype(np.int32)
    k = int(segments.max()) + 1
    masks = sample_masks(n_samples, k, rng, p_on=p_on)
    background = fill_image(image, fill) if not isinstance(fill, np.ndarray) else fill
    y = score_masks(image, segments, masks, predict, fill=background, batch_size=batch_size)
    coef, intercept, r2 = weighted_ridge(masks, y, lime_kernel(masks, kernel_width=kernel_width), alpha=alpha)
    return Explanation(segments=segments, weights=coef, intercept=intercept, r2=r2,
                       base_score=float(y[0]), n_samples=n_samples)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got shape {image.shape} dtype {image.dtype}")
    return image
