"""validateConfig refuses impossible values at render time, naming the key to change."""

from __future__ import annotations

import pytest

from tests.deploy.chart import by_kind, ci_values, deep_merge, helm_sdk, render

IMPOSSIBLE = {
    "embedded_profile": ({"config": {"profile": "embedded"}}, "only \"cluster\" is deployable"),
    "no_existing_secret": ({"secrets": {"existingSecret": ""}}, "needs a database URL"),
    "no_database_url_key": ({"secrets": {"keys": {"databaseUrl": ""}}}, "without a database URL"),
    "no_broker_url_key": ({"secrets": {"keys": {"brokerUrl": ""}}}, "a broker URL"),
    "local_store": ({"config": {"storeUrl": "/var/lib/labelfree"}}, "needs an s3://bucket/prefix store"),
    "unknown_backend": ({"inference": {"backend": "tensorrt"}}, "use triton or onnxruntime"),
    "triton_backend_without_triton": ({"triton": {"enabled": False}}, "nothing to send requests to"),
    "pvc_without_claim": ({"triton": {"modelRepository": {"source": "pvc", "existingClaim": ""}}},
                          "needs triton.modelRepository.existingClaim"),
    "s3_repo_bad_url": ({"triton": {"modelRepository": {"source": "s3", "s3Url": "/models"}}}, "needs an s3:// URL"),
    "unknown_repo_source": ({"triton": {"modelRepository": {"source": "gcs"}}}, "use pvc or s3"),
    "gpu_with_zero_gpus": ({"triton": {"gpu": {"enabled": True, "count": 0}}}, "at least one GPU"),
    "k8s_master_without_rbac": ({"spark": {"enabled": False}}, "no ServiceAccount or RBAC"),
    "operator_without_spark": ({"spark": {"enabled": False, "master": "local[*]", "operator": {"enabled": True}}},
                               "needs spark.enabled=true"),
    "quote_in_spark_conf": ({"spark": {"extraConf": {"spark.executorEnv.X": "it's"}}}, "single quotes cannot"),
    "keda_without_address": ({"keda": {"enabled": True, "address": ""}}, "needs keda.address"),
    "keda_min_over_max": ({"keda": {"enabled": True, "address": "r:6379"},
                           "workers": {"train": {"keda": {"minReplicas": 3, "maxReplicas": 1}}}}, "minReplicas > maxReplicas"),
    "zero_concurrency": ({"workers": {"ingest": {"concurrency": 0}}}, "at least one process"),
    "worker_unknown_image": ({"workers": {"detect": {"image": "gpu-detector"}}}, "is not a key of images"),
    "ingress_to_disabled_api": ({"ingress": {"enabled": True}, "api": {"trainer": {"enabled": False}}},
                                "not an enabled api.* service"),
    "ingress_without_hosts": ({"ingress": {"enabled": True, "hosts": []}}, "no ingress.hosts"),
}


@pytest.mark.parametrize("case", sorted(IMPOSSIBLE))
def test_validate_config_fails_on_impossible_values(case):
    override, message = IMPOSSIBLE[case]
    with pytest.raises(helm_sdk().HelmError) as err:
        render(deep_merge(ci_values(), override))
    assert message in str(err.value)


def test_external_triton_url_replaces_the_triton_deployment():
    objects = render(deep_merge(ci_values(), {"triton": {"enabled": False}, "inference": {"tritonUrl": "triton.gpu:8001"}}))
    assert not [d for d in by_kind(objects, "Deployment") if d["metadata"]["name"].endswith("-triton")]
    (cm,) = by_kind(objects, "ConfigMap")
    assert cm["data"]["LABELFREE_TRITON_URL"] == "triton.gpu:8001"


def test_embedded_onnxruntime_and_local_spark_need_neither_triton_nor_rbac():
    objects = render(deep_merge(ci_values(), {"triton": {"enabled": False}, "inference": {"backend": "onnxruntime"},
                                              "spark": {"enabled": False, "master": "local[*]"}}))
    assert not by_kind(objects, "Role") and not by_kind(objects, "RoleBinding")
    accounts = {sa["metadata"]["name"] for sa in by_kind(objects, "ServiceAccount")}
    for d in by_kind(objects, "Deployment"):
        spec = d["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] in accounts and spec["automountServiceAccountToken"] is False
    (cm,) = by_kind(objects, "ConfigMap")
    assert cm["data"]["LABELFREE_INFERENCE_BACKEND"] == "onnxruntime"
