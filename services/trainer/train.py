"""Train a classifier from folders of positives and negatives into a MODEL_DIR.

One pure entry point, :func:`train_classifier`, shared by the CLI and the Celery task.
MODEL_DIR gets ``model.onnx`` (backbone + head, see ``export.py``), ``manifest.json``,
``metrics.json`` and ``training_images.csv`` (sha256, label, split, file).

Evaluation protocol: images are split by phash group (near-duplicates stay together) into
train / validation; C is chosen by grouped K-fold on train; the threshold maximises
balanced accuracy on the out-of-fold scores; validation metrics come from the head fitted
on train. The exported head is refitted on train + validation with the same C.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from labelfree.core.images import decode_image, iter_image_files
from labelfree.trainer import classifier as clf
from labelfree.trainer.export import build_manifest, export_classifier, write_json
from labelfree.trainer.featurize import FeatureCache, FeatureSet, featurize_files, get_featurizer, image_views
from labelfree.core.version import code_version


def list_images(dirs: Sequence[str | Path]) -> list[Path]:
    """Image files under each directory, recursively, de-duplicated by path."""
    if not dirs:
        raise ValueError("no directories given")
    return list(dict.fromkeys(iter_image_files(dirs)))


def train_classifier(
    pos_dirs: Sequence[str | Path],
    neg_dirs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    backbone: str = "efficientnet-lite0",
    work_dir: str | Path,
    store=None,
    augment: Sequence[str] = (),
    val_fraction: float = 0.2,
    Cs: Sequence[float] = clf.DEFAULT_CS,
    seed: int = 0,
    batch_size: int = 32,
    spark_master: str | None = None,
    threads: int | None = None,
    labels: dict | None = None,
    sources: dict | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> dict:
    """Featurise, split, cross-validate, fit, export; return the metrics dict (also in metrics.json).

    ``work_dir`` holds the exported featuriser per backbone version; ``store`` (object
    store or None) holds the feature cache. ``augment``: extra views from ``("flip", "crop")``
    added as training rows. ``spark_master``: featurise through Spark ``mapInPandas``
    instead of in-process. ``pos_dirs``/``neg_dirs`` entries may also be single files.
    ``sources`` replaces the folder lists in the manifest's provenance (e.g. a dataset id).
    Raises ValueError for an empty or too small class.
    """
    from labelfree.core.backbone import load_backbone

    report = progress or (lambda fraction, stage: None)
    rng = np.random.default_rng(seed)
    bad = set(augment) - {"flip", "crop"}
    if bad:
        raise ValueError(f"unknown augmentation {sorted(bad)}; choose from flip, crop")
    views = ("full", *augment)
    out_dir = Path(out_dir)
    pos_files, neg_files = list_images(pos_dirs), list_images(neg_dirs)
    clf.check_class_sizes(len(pos_files), len(neg_files), what="image files")  # fail before featurising

    t0 = time.perf_counter()
    featurizer = get_featurizer(backbone, work_dir, threads)
    cache = FeatureCache(store, featurizer.version) if store is not None else None
    sets: list[FeatureSet] = []
    for i, files in enumerate((pos_files, neg_files)):
        if spark_master:
            from labelfree.trainer.spark_features import spark_featurize_files

            fs = spark_featurize_files(files, featurizer.onnx_path, featurizer.input_size, master=spark_master,
                                       views=views, cache=cache, batch_size=batch_size)
        else:
            fs = featurize_files(files, featurizer, featurizer.input_size, views=views, cache=cache,
                                 batch_size=batch_size,
                                 progress=lambda n, total, i=i: report(0.7 * (i + n / total) / 2, "featurise"))
        sets.append(fs)
    featurize_s = time.perf_counter() - t0
    pos, neg = sets
    clf.check_class_sizes(len(pos.files), len(neg.files))

    # Rows: original images first, then augmented views of the same images (same group).
    y0 = np.r_[np.ones(len(pos.files), int), np.zeros(len(neg.files), int)]
    feats = {v: np.vstack([pos.features[v], neg.features[v]]) for v in views}
    files = pos.files + neg.files
    shas = pos.sha256 + neg.sha256
    groups0 = clf.phash_groups(pos.phash + neg.phash)
    n0 = len(y0)
    X = np.vstack([feats[v] for v in views])
    y = np.tile(y0, len(views))
    groups = np.tile(groups0, len(views))
    is_aug = np.repeat(np.arange(len(views)) > 0, n0)

    report(0.72, "cross-validate")
    t1 = time.perf_counter()
    train0, val0 = clf.group_split(y0, groups0, val_fraction, rng)
    train = np.concatenate([train0 + k * n0 for k in range(len(views))])
    cv = clf.cross_validate_c(X[train], y[train], groups[train], is_aug[train], Cs=Cs, rng=rng)
    oof = cv.pop("oof_score")[: len(train0)]  # the first len(train0) training rows are the originals
    threshold = clf.choose_threshold(y0[train0], oof)
    head = clf.fit_head(X[train], y[train], cv["C"])
    validation = clf.evaluate(y0[val0], head.score(feats["full"][val0]), threshold)
    report(0.85, "fit")
    final = clf.fit_head(X, y, cv["C"])
    head_s = time.perf_counter() - t1

    report(0.9, "export")
    t2 = time.perf_counter()
    net = load_backbone(backbone)
    check = np.stack([image_views(decode_image(f.read_bytes()), net.input_size)["full"]
                      for f in (files[0], files[-1])])
    onnx_diff = export_classifier(net, final.coef, final.intercept, out_dir / "model.onnx", check_images=check)
    export_s = time.perf_counter() - t2

    skipped = pos.skipped + neg.skipped
    metrics = {
        "validation": validation,
        "cv": {"C": cv["C"], "folds_scores": cv["cv"], "oof_roc_auc_at_C": cv["cv"][f"{cv['C']:g}"]["roc_auc"]},
        "threshold": threshold,
        "counts": {"positive": len(pos.files), "negative": len(neg.files), "train": int(len(train0)),
                   "validation": int(len(val0)), "phash_groups": int(groups0.max() + 1),
                   "augmented_rows": int(is_aug.sum()), "skipped": len(skipped)},
        "skipped": [{"file": str(f), "reason": r} for f, r in skipped[:100]],
        "feature_cache": {"hits": pos.cache_hits + neg.cache_hits, "computed": pos.computed + neg.computed},
        "timings_s": {"featurize": round(featurize_s, 3), "head": round(head_s, 3), "export": round(export_s, 3)},
        "onnx_check_max_abs_diff": onnx_diff,
        "exported_head": "refit on train + validation with the CV-chosen C; validation metrics are from the "
                         "head fitted on train only",
    }
    training = {
        **(sources or {"positive_dirs": [str(d) for d in pos_dirs], "negative_dirs": [str(d) for d in neg_dirs]}),
        "augment": list(augment), "val_fraction": val_fraction, "seed": seed, "C": cv["C"],
        "n_positive": len(pos.files), "n_negative": len(neg.files),
        "images_file": "training_images.csv",
    }
    manifest = build_manifest(backbone=net, threshold=threshold, labels=labels or {"positive": "positive",
                              "negative": "negative"}, training=training,
                              metrics={k: validation[k] for k in ("roc_auc", "pr_auc", "accuracy")},
                              onnx_check_max_abs_diff=onnx_diff, code_version=code_version())
    write_json(out_dir / "manifest.json", manifest)
    write_json(out_dir / "metrics.json", metrics)
    split = np.full(n0, "train", dtype=object)
    split[val0] = "validation"
    with open(out_dir / "training_images.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sha256", "label", "split", "file"])
        for i in range(n0):
            writer.writerow([shas[i], "positive" if y0[i] else "negative", split[i], str(files[i])])
    report(1.0, "done")
    return metrics
