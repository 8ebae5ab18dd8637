"""Logistic-regression head on pooled backbone features: split, CV, fit, metrics.

Pure numpy / scikit-learn on arrays:
- ``X``: float32 ``(N, D)`` pooled features; ``y``: int ``(N,)`` with 1 = positive;
- ``groups``: int ``(N,)`` near-duplicate group ids (rows sharing a group stay on one side);
- ``is_aug``: bool ``(N,)`` rows that are augmented views (trained on, never scored).

The fitted head is returned in raw-feature space (standardisation folded in), so
``logit = X @ coef + intercept`` and the exported graph needs no scaler.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_CS = tuple(float(c) for c in np.logspace(-4, 1, 6))
MIN_PER_CLASS = 10


def phash_groups(phashes: list[str], max_distance: int = 4) -> np.ndarray:
    """Group ids ``(N,)`` joining images whose 64-bit phashes differ in <= ``max_distance`` bits."""
    n = len(phashes)
    if n == 0:
        return np.zeros(0, np.int64)
    bits = np.array([int(h, 16) for h in phashes], dtype=np.uint64)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n - 1):  # O(N^2) popcounts, vectorised per row: fine for tens of thousands
        close = np.nonzero(np.bitwise_count(bits[i + 1:] ^ bits[i]) <= max_distance)[0] + i + 1
        for j in close:
            ri, rj = find(i), find(int(j))
            if ri != rj:
                parent[rj] = ri
    roots = np.array([find(i) for i in range(n)])
    return np.unique(roots, return_inverse=True)[1]


def group_split(y: np.ndarray, groups: np.ndarray, val_fraction: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation row indices with every group on one side."""
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0 < val_fraction < 0.5:
        raise ValueError(f"val_fraction must be in (0, 0.5), got {val_fraction}")
    n_splits = max(2, int(round(1 / val_fraction)))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=int(rng.integers(2**31)))
    train, val = next(splitter.split(np.zeros(len(y)), y, groups))
    return train, val


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """Per-row weights ``n / (2 n_class)`` so both classes weigh the same in the loss."""
    counts = np.bincount(y, minlength=2).astype(np.float64)
    if (counts == 0).any():
        raise ValueError(f"both classes are needed, got counts {counts.astype(int).tolist()}")
    return (len(y) / (2 * counts))[y]


@dataclass
class Head:
    """Logistic head in raw-feature space: ``logit = X @ coef + intercept``."""

    coef: np.ndarray  # (D,) float64
    intercept: float
    C: float

    def logit(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, np.float64) @ self.coef + self.intercept

    def score(self, X: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logit(X)))


def fit_head_path(X: np.ndarray, y: np.ndarray, Cs, max_iter: int = 2000) -> list[Head]:
    """Class-balanced L2 logistic regression on standardised features for each C (ascending),
    folded back to raw space. Each fit warm-starts from the previous, less regularised one.
    """
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    X = np.asarray(X, np.float64)
    mean, std = X.mean(0), X.std(0) + 1e-6
    Xs, weights = (X - mean) / std, balanced_weights(y)
    model = LogisticRegression(max_iter=max_iter, warm_start=True)
    heads = []
    # One BLAS thread: these matrices are small, and on a busy machine multi-threaded BLAS
    # spins and contends (measured 7x slower with 2 threads under load).
    with threadpool_limits(limits=1, user_api="blas"):
        for C in sorted(Cs):
            model.set_params(C=C)
            model.fit(Xs, y, sample_weight=weights)
            coef = model.coef_[0] / std
            heads.append(Head(coef=coef, intercept=float(model.intercept_[0] - coef @ mean), C=float(C)))
    return heads


def fit_head(X: np.ndarray, y: np.ndarray, C: float, max_iter: int = 2000) -> Head:
    """Class-balanced L2 logistic regression on standardised features, folded back to raw space."""
    return fit_head_path(X, y, [C], max_iter)[0]


def cross_validate_c(X: np.ndarray, y: np.ndarray, groups: np.ndarray, is_aug: np.ndarray,
                     Cs=DEFAULT_CS, n_splits: int = 5, rng: np.random.Generator | None = None) -> dict:
    """Pick C by grouped, stratified K-fold mean log loss on original (non-augmented) rows.

    Returns ``{"C", "cv": {C: {"log_loss", "roc_auc"}}, "oof_score": (N,) out-of-fold
    P(positive) at the chosen C (NaN on augmented rows)}``.
    """
    from sklearn.metrics import log_loss, roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold

    rng = rng if rng is not None else np.random.default_rng(0)
    orig = np.nonzero(~is_aug)[0]
    n_splits = int(min(n_splits, np.bincount(y[orig]).min()))
    if n_splits < 2:
        raise ValueError(f"cross-validation needs >= 2 rows per class, got counts {np.bincount(y[orig]).tolist()}")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=int(rng.integers(2**31)))
    folds = []
    for _, val_o in splitter.split(orig, y[orig], groups[orig]):
        val_groups = np.unique(groups[orig[val_o]])
        in_val = np.isin(groups, val_groups)
        folds.append((np.nonzero(~in_val)[0], orig[val_o]))  # train on every row of the other groups
    Cs = sorted(float(c) for c in Cs)
    preds = {C: np.full(len(y), np.nan) for C in Cs}
    for train, val in folds:
        for head in fit_head_path(X[train], y[train], Cs):
            preds[head.C][val] = head.score(X[val])
    results, oof = {}, {}
    for C in Cs:
        pred = preds[C]
        p = np.clip(pred[orig], 1e-7, 1 - 1e-7)
        results[C] = {"log_loss": float(log_loss(y[orig], p, sample_weight=balanced_weights(y[orig]))),
                      "roc_auc": float(roc_auc_score(y[orig], p))}
        oof[C] = pred
    best = min(Cs, key=lambda c: (results[c]["log_loss"], -c))
    return {"C": float(best), "cv": {f"{c:g}": r for c, r in results.items()}, "oof_score": oof[best]}


def choose_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """Threshold maximising balanced accuracy (Youden's J) on scores ``(N,)``."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(y, score)
    best = int(np.argmax(tpr - fpr))
    return float(np.clip(thr[best], 0.0, 1.0))


def calibration(y: np.ndarray, score: np.ndarray, n_bins: int = 10) -> dict:
    """Expected calibration error over equal-width bins, with the per-bin table."""
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(score, edges[1:-1]), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        sel = idx == b
        if not sel.any():
            continue
        conf, acc = float(score[sel].mean()), float(y[sel].mean())
        ece += sel.mean() * abs(conf - acc)
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(sel.sum()),
                     "mean_score": conf, "positive_rate": acc})
    return {"ece": float(ece), "brier": float(np.mean((score - y) ** 2)), "bins": bins}


def _thin(xs: np.ndarray, ys: np.ndarray, max_points: int) -> tuple[list[float], list[float]]:
    """At most ``max_points`` of a curve, endpoints kept, spread along its length; rounded to 4 places."""
    if len(xs) > max_points:
        step = np.r_[0.0, np.cumsum(np.hypot(np.diff(xs), np.diff(ys)))]
        targets = np.linspace(0.0, step[-1], max_points)
        idx = np.unique(np.r_[0, np.searchsorted(step, targets).clip(0, len(xs) - 1), len(xs) - 1])
        xs, ys = xs[idx], ys[idx]
    return [round(float(v), 4) for v in xs], [round(float(v), 4) for v in ys]


def curves(y: np.ndarray, score: np.ndarray, max_points: int = 64) -> dict:
    """ROC ``{fpr, tpr}`` (fpr ascending) and PR ``{recall, precision}`` (recall ascending) points
    of scores ``(N,)`` against labels ``(N,)`` in {0, 1}; a compact list for reports and plots."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    fpr, tpr, _ = roc_curve(y, score)
    precision, recall, _ = precision_recall_curve(y, score)
    fpr_pts, tpr_pts = _thin(fpr, tpr, max_points)
    recall_pts, precision_pts = _thin(recall[::-1], precision[::-1], max_points)
    return {"roc": {"fpr": fpr_pts, "tpr": tpr_pts}, "pr": {"recall": recall_pts, "precision": precision_pts}}


def evaluate(y: np.ndarray, score: np.ndarray, threshold: float) -> dict:
    """ROC-AUC, PR-AUC (average precision), accuracy at ``threshold``, calibration, and the
    ROC/PR curve points (``curves``, see :func:`curves`; absent when one class is missing)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y)
    pred = score >= threshold
    both = len(np.unique(y)) == 2
    tpr = float(pred[y == 1].mean()) if (y == 1).any() else float("nan")
    tnr = float((~pred[y == 0]).mean()) if (y == 0).any() else float("nan")
    return {
        "n": int(len(y)), "n_positive": int((y == 1).sum()), "n_negative": int((y == 0).sum()),
        "roc_auc": float(roc_auc_score(y, score)) if both else None,
        "pr_auc": float(average_precision_score(y, score)) if both else None,
        "threshold": float(threshold),
        "accuracy": float((pred == (y == 1)).mean()),
        "balanced_accuracy": float(np.nanmean([tpr, tnr])),
        "true_positive_rate": tpr, "true_negative_rate": tnr,
        "calibration": calibration(y.astype(np.float64), score),
        **({"curves": curves(y, score)} if both else {}),
    }


def check_class_sizes(n_pos: int, n_neg: int, minimum: int = MIN_PER_CLASS, what: str = "readable images") -> None:
    """Raise ValueError naming the class that is empty or has fewer than ``minimum`` ``what``."""
    for name, n in (("positive", n_pos), ("negative", n_neg)):
        if n == 0:
            raise ValueError(f"the {name} class is empty: no {what}")
        if n < minimum:
            raise ValueError(f"the {name} class has {n} {what}; at least {minimum} are needed")
