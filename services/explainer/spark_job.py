"""The explainer as a Spark job: a DataFrame of (key, path) rows through ``mapInPandas``.

Each partition builds one ONNX Runtime session and streams its rows one image at a time,
so executor memory is one model plus one image's LIME batches, never all samples of all
images. The master is an argument (``local[2]`` in tests, Settings in the service):
``local[*]``, ``k8s://...`` or Spark Connect ``sc://...``. ``model_dir`` and the paths must
be readable from the executors (a shared volume or the object store's local mirror).

Method "foreground" runs two jobs: a first ``mapInPandas`` pass yields one row of partial
statistics per partition (``ForegroundStats``, O(C^2) bytes, about 1 MB), the driver merges
them and fits the per-dataset model (both levels), self-training rounds re-read each positive's features
(kept by the first pass in a persisted DataFrame, memory-and-disk) with the current model
shipped in the task closure, and the second pass ships the fitted model (a few KB
of JSON) to the executors inside the task closure: a broadcast that also works on Spark
Connect, which has no SparkContext.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Iterator

from labelfree.explainer.foreground import ForegroundModel, ForegroundStats, self_train_levels
from labelfree.explainer.labeller import LabelConfig

KEPT_CHUNK = 64  # images whose kept features (300 KB each) a fit task yields at a time
OUTPUT_SCHEMA = ("key string, width int, height int, probability double, boxes string, "
                 "scores string, error string")


def _config(config: dict) -> LabelConfig:
    cfg = dict(config)
    cfg["cam_sizes"] = tuple(cfg["cam_sizes"])
    return LabelConfig(**cfg)


def _stats_fn(model_dir: str, config: dict, threads: int):
    """mapInPandas function of the fit pass: one row of partial statistics per partition, and
    when self-training one row per counted image with its features (``stats`` null there)."""

    def run(frames: Iterator["pandas.DataFrame"]) -> Iterator["pandas.DataFrame"]:  # noqa: F821
        import pandas as pd

        from labelfree.explainer.batch import ModelLabeller, foreground_stats

        cfg = _config(config)
        labeller = ModelLabeller(model_dir, cfg, threads=threads)
        stats = None
        for frame in frames:  # one ForegroundStats per partition, whatever its number of rows
            paths = list(frame["path"])
            for i in range(0, len(paths), KEPT_CHUNK):  # kept features leave in chunks: memory stays bounded
                kept: list[bytes] | None = [] if cfg.fg_rounds > 0 else None
                part = foreground_stats(labeller, paths[i:i + KEPT_CHUNK], kept)
                if part is not None:
                    stats = part if stats is None else stats.merge(part)
                if kept:
                    yield pd.DataFrame({"stats": [None] * len(kept), "features": kept})
        if stats is not None:
            yield pd.DataFrame({"stats": [stats.to_bytes()], "features": [None]})

    return run


def _relabel_fn(model: dict, previous: dict | None, level: int):
    """mapInPandas function of a self-training round of one level over kept features: one row per partition."""

    def run(frames: Iterator["pandas.DataFrame"]) -> Iterator["pandas.DataFrame"]:  # noqa: F821
        import pandas as pd

        from labelfree.explainer.foreground import features_from_bytes, relabelled_stats

        current = ForegroundModel.from_dict(model)
        before = ForegroundModel.from_dict(previous) if previous is not None else None
        stats, changed, cells = None, 0, 0
        for frame in frames:
            part, c, n = relabelled_stats((features_from_bytes(b, level) for b in frame["features"]), current, before)
            if part is not None:
                stats = part if stats is None else stats.merge(part)
            changed, cells = changed + c, cells + n
        if stats is not None:
            yield pd.DataFrame({"stats": [stats.to_bytes()], "changed": [changed], "cells": [cells]})

    return run


def _merged(rows) -> ForegroundStats:
    # A fixed merge order (sorted bytes), so the float64 sums do not depend on task finish order.
    parts = sorted(bytes(r["stats"]) for r in rows)
    stats = ForegroundStats.from_bytes(parts[0])
    for part in parts[1:]:
        stats.merge(ForegroundStats.from_bytes(part))
    return stats


def fit_foreground_with_spark(paths: Iterable[str | Path], model_dir: str | Path, *, master: str,
                              config: LabelConfig = LabelConfig(), partitions: int | None = None,
                              threads_per_task: int = 1, spark=None) -> ForegroundModel:
    """The foreground model's fit pass on Spark; raises ValueError when no image counts."""
    import pandas as pd

    paths = sorted(str(p) for p in paths)
    if not paths:
        raise ValueError("no images to fit the foreground model on")
    spark = spark or _session(master)
    n = partitions or max(1, min(len(paths), _parallelism(spark)))
    frame = spark.createDataFrame(pd.DataFrame({"path": paths})).repartition(n)
    out = frame.mapInPandas(_stats_fn(str(model_dir), asdict(config), threads_per_task),
                            "stats binary, features binary")
    if config.fg_rounds > 0:  # the rounds re-read the kept features, not the images
        out = out.persist()
    try:
        rows = out.where("stats is not null").select("stats").collect()
        if not rows:
            raise ValueError("no image the classifier calls positive: cannot fit the foreground model")
        model = _merged(rows).fit(config.fg_side)
        if config.fg_rounds == 0:
            return model
        kept = out.where("features is not null").select("features")

        def relabel(level: int, current: ForegroundModel, previous: ForegroundModel | None):
            fn = _relabel_fn(current.to_dict(), previous.to_dict() if previous is not None else None, level)
            parts = kept.mapInPandas(fn, "stats binary, changed long, cells long").collect()
            if not parts:
                return None, 0, 0
            return _merged(parts), sum(r["changed"] for r in parts), sum(r["cells"] for r in parts)

        return self_train_levels(model, relabel, max_rounds=config.fg_rounds, tol=config.fg_tol)
    finally:
        if config.fg_rounds > 0:
            out.unpersist()


def overlay_path(overlay_dir: str | Path, key: str) -> Path:
    """Where the job writes the overlay PNG of image ``key``."""
    return Path(overlay_dir) / (key.replace("/", "_") + ".png")


def _partition_fn(model_dir: str, config: dict, seed: int, threads: int, foreground: dict | None = None,
                  overlay_dir: str | None = None):
    """The mapInPandas function; a closure over plain values so it pickles to executors."""

    def run(frames: Iterator["pandas.DataFrame"]) -> Iterator["pandas.DataFrame"]:  # noqa: F821
        import pandas as pd

        from labelfree.core.store import atomic_write
        from labelfree.explainer.batch import ModelLabeller, label_record
        from labelfree.explainer.overlay import overlay_png

        fitted = ForegroundModel.from_dict(foreground) if foreground is not None else None
        labeller = ModelLabeller(model_dir, _config(config), threads=threads, foreground=fitted)  # once per partition
        for frame in frames:
            rows = []
            for key, path in zip(frame["key"], frame["path"]):
                record, image, labelled = label_record(labeller, key, path, seed, keep=overlay_dir is not None)
                if image is not None:  # one image's overlay at a time: memory stays bounded
                    atomic_write(overlay_path(overlay_dir, key), overlay_png(image, labelled))
                record["boxes"] = json.dumps(record["boxes"])
                record["scores"] = json.dumps(record["scores"])
                rows.append(record)
            yield pd.DataFrame(rows, columns=["key", "width", "height", "probability", "boxes", "scores", "error"])

    return run


def explain_with_spark(items: Iterable[tuple[str, str | Path]], model_dir: str | Path, *, master: str,
                       config: LabelConfig = LabelConfig(), seed: int = 0, partitions: int | None = None,
                       threads_per_task: int = 1, spark=None, foreground: ForegroundModel | None = None,
                       overlay_dir: str | Path | None = None) -> list[dict]:
    """Label (key, path) pairs on Spark; returns batch-style records (see ``batch``), sorted by key.

    foreground: the fitted model for method "foreground"; None fits it first on these images.
    overlay_dir: when given (a folder the executors can write, like the paths they read), each
        labelled image's overlay PNG goes to ``overlay_path(overlay_dir, key)``.
    partitions: number of partitions (default: Spark's default parallelism).
    threads_per_task: ONNX Runtime threads per task; keep tasks x threads <= cores.
    spark: an existing SparkSession (else one from ``core.spark.spark_session(master)``).
    """
    import pandas as pd

    items = [(str(k), str(p)) for k, p in items]
    if not items:
        return []
    spark = spark or _session(master)
    if config.method == "foreground" and foreground is None:
        foreground = fit_foreground_with_spark([p for _, p in items], model_dir, master=master, config=config,
                                               partitions=partitions, threads_per_task=threads_per_task,
                                               spark=spark)
    # Keep each task's Arrow batch small: one image per row, a few rows per batch.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "8")
    n = partitions or max(1, min(len(items), _parallelism(spark)))
    frame = spark.createDataFrame(pd.DataFrame(items, columns=["key", "path"])).repartition(n)
    fn = _partition_fn(str(model_dir), asdict(config), seed, threads_per_task,
                       foreground.to_dict() if foreground is not None and config.method == "foreground" else None,
                       None if overlay_dir is None else str(overlay_dir))
    rows = frame.mapInPandas(fn, OUTPUT_SCHEMA).collect()
    records = []
    for row in rows:
        record = row.asDict()
        record["boxes"] = json.loads(record["boxes"])
        record["scores"] = json.loads(record["scores"])
        records.append(record)
    return sorted(records, key=lambda r: r["key"])


def _session(master: str):
    from labelfree.core.spark import spark_session

    return spark_session(master, "labelfree-explainer")


def _parallelism(spark) -> int:
    try:
        return int(spark.sparkContext.defaultParallelism)
    except Exception:  # Spark Connect has no SparkContext: ask the conf, else assume 2
        return int(spark.conf.get("spark.default.parallelism", "2"))
