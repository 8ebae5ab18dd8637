"""The explainer as a Spark job: a DataFrame of (key, path) rows through ``mapInPandas``.

Each partition builds one ONNX Runtime session and streams its rows one image at a time,
so executor memory is one model plus one image's LIME batches, never all samples of all
images. The master is an argument (``local[2]`` in tests, Settings in the service):
``local[*]``, ``k8s://...`` or Spark Connect ``sc://...``. ``model_dir`` and the paths must
be readable from the executors (a shared volume or the object store's local mirror).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Iterator

from labelfree.explainer.labeller import LabelConfig

OUTPUT_SCHEMA = ("key string, width int, height int, probability double, boxes string, "
                 "scores string, error string")


def _partition_fn(model_dir: str, config: dict, seed: int, threads: int):
    """The mapInPandas function; a closure over plain values so it pickles to executors."""

    def run(frames: Iterator["pandas.DataFrame"]) -> Iterator["pandas.DataFrame"]:  # noqa: F821
        import pandas as pd

        from labelfree.explainer.batch import ModelLabeller, label_record
        from labelfree.explainer.labeller import LabelConfig

        cfg = dict(config)
        cfg["cam_sizes"] = tuple(cfg["cam_sizes"])
        labeller = ModelLabeller(model_dir, LabelConfig(**cfg), threads=threads)  # once per partition
        for frame in frames:
            rows = []
            for key, path in zip(frame["key"], frame["path"]):
                record = label_record(labeller, key, path, seed)[0]
                record["boxes"] = json.dumps(record["boxes"])
                record["scores"] = json.dumps(record["scores"])
                rows.append(record)
            yield pd.DataFrame(rows, columns=["key", "width", "height", "probability", "boxes", "scores", "error"])

    return run


def explain_with_spark(items: Iterable[tuple[str, str | Path]], model_dir: str | Path, *, master: str,
                       config: LabelConfig = LabelConfig(), seed: int = 0, partitions: int | None = None,
                       threads_per_task: int = 1, spark=None) -> list[dict]:
    """Label (key, path) pairs on Spark; returns batch-style records (see ``batch``), sorted by key.

    partitions: number of partitions (default: Spark's default parallelism).
    threads_per_task: ONNX Runtime threads per task; keep tasks x threads <= cores.
    spark: an existing SparkSession (else one from ``core.spark.spark_session(master)``).
    """
    import pandas as pd

    items = [(str(k), str(p)) for k, p in items]
    if not items:
        return []
    if spark is None:
        from labelfree.core.spark import spark_session

        spark = spark_session(master, "labelfree-explainer")
    # Keep each task's Arrow batch small: one image per row, a few rows per batch.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "8")
    n = partitions or max(1, min(len(items), _parallelism(spark)))
    frame = spark.createDataFrame(pd.DataFrame(items, columns=["key", "path"])).repartition(n)
    fn = _partition_fn(str(model_dir), asdict(config), seed, threads_per_task)
    rows = frame.mapInPandas(fn, OUTPUT_SCHEMA).collect()
    records = []
    for row in rows:
        record = row.asDict()
        record["boxes"] = json.loads(record["boxes"])
        record["scores"] = json.loads(record["scores"])
        records.append(record)
    return sorted(records, key=lambda r: r["key"])


def _parallelism(spark) -> int:
    try:
        return int(spark.sparkContext.defaultParallelism)
    except Exception:  # Spark Connect has no SparkContext: ask the conf, else assume 2
        return int(spark.conf.get("spark.default.parallelism", "2"))
