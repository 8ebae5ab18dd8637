"""Featurisation as a Spark job, for datasets too big for one process.

A DataFrame of ``(idx, path)`` rows goes through ``mapInPandas``; each partition opens ONE
ONNX Runtime session (the featuriser bytes arrive by broadcast, so executors need no
shared model path) and reuses :func:`labelfree.trainer.featurize.featurize_files`, so the
Spark path and the local path compute identical features. Image paths must be readable
from the executors (a shared filesystem, or a local master).

The feature cache is written on the driver from the collected rows. Cache lookups happen
on the driver too, before the job: only the misses go to Spark.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from labelfree.trainer.featurize import FeatureCache, FeatureSet, featurize_files


def get_spark(master: str, app_name: str = "labelfree-featurize"):
    """A SparkSession on ``master`` (``local[2]``, ``k8s://...``, ``sc://...``), from core's one factory."""
    from labelfree.core.spark import spark_session

    return spark_session(master, app_name)


def _partition_fn(model_bc, input_size: int, views: tuple[str, ...], batch_size: int):
    """The ``mapInPandas`` function: one ORT session per partition, featurize_files inside."""

    def run(frames: Iterator["pd.DataFrame"]) -> Iterator["pd.DataFrame"]:  # noqa: F821
        import pandas as pd

        from labelfree.trainer.featurize import make_session

        session = make_session(model_bc.value, threads=1)  # one core per task: Spark owns parallelism

        def featurizer(images: np.ndarray) -> np.ndarray:
            return session.run(["features"], {"images": images})[0]

        for frame in frames:
            paths = [Path(p) for p in frame["path"]]
            fs = featurize_files(paths, featurizer, input_size, views=views, batch_size=batch_size)
            index = dict(zip(map(str, paths), frame["idx"]))
            ok_idx = [int(index[str(f)]) for f in fs.files]
            bad_idx = [int(index[str(f)]) for f, _ in fs.skipped]
            n_bad = len(bad_idx)
            columns = {"idx": ok_idx + bad_idx, "sha256": fs.sha256 + [None] * n_bad,
                       "phash": fs.phash + [None] * n_bad,
                       "error": [""] * len(ok_idx) + [reason for _, reason in fs.skipped]}
            for v in views:
                columns[v] = [row.tolist() for row in fs.features[v]] + [None] * n_bad
            # object columns: pandas 3's arrow-backed strings break Spark's Arrow conversion
            yield pd.DataFrame({k: pd.Series(c, dtype="int64" if k == "idx" else object) for k, c in columns.items()})

    return run


def spark_featurize_files(
    files: Sequence[str | Path],
    onnx_path: str | Path,
    input_size: int,
    *,
    master: str = "local[*]",
    views: Sequence[str] = ("full",),
    cache: FeatureCache | None = None,
    batch_size: int = 32,
    num_partitions: int | None = None,
) -> FeatureSet:
    """Same contract as ``featurize_files`` but the misses are computed by Spark executors."""
    files = [Path(f) for f in files]
    views = tuple(views)
    cached: dict[int, tuple[str, str, dict[str, np.ndarray]]] = {}
    todo: list[int] = []
    for i, path in enumerate(files):
        hit = None
        if cache is not None:
            try:
                sha = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                sha = None
            got = {v: cache.get(sha, v) for v in views} if sha else {}
            if sha and all(g is not None for g in got.values()):
                hit = (sha, got["full"][1], {v: g[0] for v, g in got.items()})
        if hit:
            cached[i] = hit
        else:
            todo.append(i)

    computed: dict[int, tuple[str, str, dict[str, np.ndarray]]] = {}
    errors: dict[int, str] = {}
    if todo:
        from pyspark.sql.types import ArrayType, FloatType, LongType, StringType, StructField, StructType

        spark = get_spark(master)
        model_bc = spark.sparkContext.broadcast(Path(onnx_path).read_bytes())
        schema = StructType([StructField("idx", LongType()), StructField("sha256", StringType()),
                             StructField("phash", StringType()), StructField("error", StringType())]
                            + [StructField(v, ArrayType(FloatType())) for v in views])
        parts = num_partitions or max(1, min(len(todo), spark.sparkContext.defaultParallelism))
        df = spark.createDataFrame([(i, str(files[i])) for i in todo], "idx long, path string").repartition(parts)
        result = df.mapInPandas(_partition_fn(model_bc, input_size, views, batch_size), schema).toPandas()
        model_bc.unpersist()
        for row in result.itertuples(index=False):
            if isinstance(row.error, str) and row.error:  # "" on success (pandas may turn None into NaN)
                errors[int(row.idx)] = row.error
                continue
            feats = {v: np.asarray(getattr(row, v), np.float32) for v in views}
            computed[int(row.idx)] = (row.sha256, row.phash, feats)
            if cache is not None:
                for v in views:
                    cache.put(row.sha256, v, feats[v], row.phash)

    kept = [i for i in range(len(files)) if i in cached or i in computed]
    rows = [cached.get(i) or computed[i] for i in kept]
    dim = rows[0][2]["full"].shape[0] if rows else 0
    features = {v: np.stack([r[2][v] for r in rows]) if rows else np.zeros((0, dim), np.float32) for v in views}
    return FeatureSet(
        files=[files[i] for i in kept], sha256=[r[0] for r in rows], phash=[r[1] for r in rows],
        features=features, skipped=[(files[i], errors[i]) for i in sorted(errors)],
        cache_hits=len(cached) * len(views), computed=len(computed) * len(views),
    )
