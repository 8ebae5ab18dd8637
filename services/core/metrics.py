"""Prometheus metrics that stay whole when one service runs as several processes.

``labelfree up`` (and the chart, with ``workers`` > 1) serves an API from several uvicorn
processes. Each has its own counters, and ``/metrics`` is answered by whichever process the
connection lands on, so without help a scrape sees one process's share at random. With
``PROMETHEUS_MULTIPROC_DIR`` set in their environment, prometheus_client keeps every process's
values in files there, and ``exposition()`` adds them up: counts and histograms sum, in-flight
gauges are declared ``livesum`` (the sum over live processes). Without it, one process's
registry is served as usual.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
__all__ = ["CONTENT_TYPE_LATEST", "MULTIPROC_ENV", "exposition"]


def _multiprocess_dir() -> str | None:
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        os.makedirs(path, exist_ok=True)  # prometheus_client writes there from the first value on
    return path or None


_DIR = _multiprocess_dir()


def exposition() -> bytes:
    """The text exposition of every process of this service (or of this process alone)."""
    if _DIR is None:
        return generate_latest()
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=_DIR)
    return generate_latest(registry)
