"""Offline rendering helpers for the labelfree Helm chart (no cluster, no helm binary).

Rendering goes through helm-python-sdk (Helm 4's Go SDK over a C ABI). Core Kubernetes
kinds are checked with kubernetes-validate against the JSON schemas it ships; CRD kinds
(KEDA, Prometheus Operator, Spark Operator) have no schema there and get explicit checks
in the tests instead.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "labelfree"
CI_VALUES = CHART / "ci" / "ci-values.yaml"
RELEASE = "lf"
NAMESPACE = "labelfree"
# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas shipped.
KUBE_VERSIONS = ("1.29.0", "1.37.0")
CRD_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "SparkApplication"}



def helm_sdk():
    """helm_python, or skip the calling test: without it nothing can be rendered offline."""
    return pytest.importorskip("helm_python", reason="helm-python-sdk not installed (pip install helm-python-sdk)")


def ci_values() -> dict[str, Any]:
    return yaml.safe_load(CI_VALUES.read_text())


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated recursively with ``extra`` (like Helm's value coalescing)."""
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def all_on_values() -> dict[str, Any]:
    """CI values with every optional part switched on (subcharts stay off: CI is offline)."""
    return deep_merge(ci_values(), {
        "keda": {"enabled": True, "address": "redis-master.labelfree-deps.svc:6379", "passwordKey": "redis-password"},
        "networkPolicy": {"enabled": True},
        "ingress": {"enabled": True, "tls": [{"secretName": "labelfree-tls", "hosts": ["ingest.labelfree.local"]}]},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "spark": {"operator": {"enabled": True, "arguments": ["--job-id", "demo"]}},
        "triton": {
            "gpu": {"enabled": True, "count": 1},
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "modelRepository": {"source": "s3", "s3Url": "s3://minio.labelfree-deps.svc:9000/labelfree/triton"},
        },
        "images": {"pullSecrets": [{"name": "regcred"}]},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/labelfree"}},
    })


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Render the chart as an install would and return every object, hooks included.

    Raises helm_python.HelmRenderError when a template (e.g. validateConfig) fails. Results
    are cached per values (renders are the slow part of these tests); callers get a copy.
    """
    return copy.deepcopy(_render_cached(json.dumps(values, sort_keys=True)))


@functools.lru_cache(maxsize=32)
def _render_cached(values_json: str) -> list[dict[str, Any]]:
    values = json.loads(values_json)
    with helm_sdk().Chart.load(CHART) as chart:
        manifests = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(object name, pod spec) for every Deployment, Job and bare Pod (the helm test)."""
    specs = [(o["metadata"]["name"], o["spec"]["template"]["spec"])
             for o in objects if o["kind"] in ("Deployment", "Job")]
    return specs + [(o["metadata"]["name"], o["spec"]) for o in objects if o["kind"] == "Pod"]
