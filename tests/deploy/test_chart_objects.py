"""Unit assertions on rendered objects: probes, users, resources, GPU, RBAC, secrets."""

from __future__ import annotations

import os
from typing import Any

import pytest

from labelfree.core.http_protocol import PROTOCOL as HTTP_PROTOCOL
from tests.deploy.chart import NAMESPACE, all_on_values, by_kind, ci_values, pod_specs, render

APIS = ("ingest", "trainer", "explainer", "inference")
QUEUES = {"ingest": "ingest", "train": "trainer", "explain": "explainer", "detect": "inference"}


@pytest.fixture(scope="module")
def ci() -> list[dict[str, Any]]:
    return render(ci_values())


@pytest.fixture(scope="module")
def all_on() -> list[dict[str, Any]]:
    return render(all_on_values())


def deployment(objects, name: str) -> dict[str, Any]:
    (found,) = [d for d in by_kind(objects, "Deployment") if d["metadata"]["name"] == f"lf-labelfree-{name}"]
    return found


def container(objects, name: str) -> dict[str, Any]:
    return deployment(objects, name)["spec"]["template"]["spec"]["containers"][0]


def port_number(c: dict[str, Any], port: str | int) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in c["ports"] if p["name"] == port]
    return number


@pytest.mark.parametrize("svc", APIS)
def test_api_probes_hit_healthz_and_readyz_on_the_uvicorn_port(ci, svc):
    c = container(ci, svc)
    assert c["command"][:2] == ["uvicorn", f"labelfree.{svc}.api:app"]
    assert c["command"][c["command"].index("--http") + 1] == HTTP_PROTOCOL  # one send per response
    uvicorn_port = int(c["command"][c["command"].index("--port") + 1])
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path
        assert port_number(c, get["port"]) == uvicorn_port == 8000


def test_inference_exposes_grpc_on_8001(ci):
    c = container(ci, "inference")
    assert port_number(c, "grpc") == 8001
    (svc,) = [s for s in by_kind(ci, "Service") if s["metadata"]["name"] == "lf-labelfree-inference"]
    assert {p["port"] for p in svc["spec"]["ports"]} == {8000, 8001}


def test_triton_probes_use_the_kserve_v2_health_paths(ci):
    c = container(ci, "triton")
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert port_number(c, c["readinessProbe"]["httpGet"]["port"]) == 8000
    assert "--http-port=8000" in c["args"] and "--grpc-port=8001" in c["args"]


@pytest.mark.parametrize("values", [None, ci_values, all_on_values], ids=["default", "ci", "all-on"])
def test_no_container_runs_as_root_or_keeps_capabilities(values):
    for name, spec in pod_specs(render(values() if values else None)):
        pod_sc = spec.get("securityContext", {})
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, name
            assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc.get("privileged", False) is False, name
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", name


@pytest.mark.parametrize("values", [None, ci_values, all_on_values], ids=["default", "ci", "all-on"])
def test_every_deployment_and_job_sets_requests_and_a_memory_limit(values):
    for name, spec in pod_specs(render(values() if values else None)):
        for c in spec["containers"]:
            res = c["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]), name
            assert "memory" in res["limits"], name


def _gpu_requests(objects) -> dict[str, Any]:
    found = {}
    for name, spec in pod_specs(objects):
        for c in spec["containers"]:
            for part in ("requests", "limits"):
                if "nvidia.com/gpu" in c["resources"].get(part, {}):
                    found[name] = c["resources"][part]["nvidia.com/gpu"]
    return found


def test_triton_requests_a_gpu_only_when_gpu_is_enabled(ci, all_on):
    assert _gpu_requests(render()) == {}
    assert _gpu_requests(ci) == {}
    assert _gpu_requests(all_on) == {"lf-labelfree-triton": 1}
    spec = deployment(all_on, "triton")["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_triton_reads_its_model_repository_from_the_pvc_or_s3(ci, all_on):
    pvc = deployment(ci, "triton")["spec"]["template"]["spec"]
    assert "--model-repository=/models" in pvc["containers"][0]["args"]
    (models,) = [v for v in pvc["volumes"] if v["name"] == "models"]
    assert models["persistentVolumeClaim"] == {"claimName": "labelfree-models", "readOnly": True}
    s3 = deployment(all_on, "triton")["spec"]["template"]["spec"]
    assert "--model-repository=s3://minio.labelfree-deps.svc:9000/labelfree/triton" in s3["containers"][0]["args"]
    assert "models" not in {v["name"] for v in s3["volumes"]}


def test_spark_rbac_is_the_minimum_spark_submit_needs(ci):
    assert not by_kind(ci, "ClusterRole") and not by_kind(ci, "ClusterRoleBinding")
    (role,) = by_kind(ci, "Role")
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert rules == {
        (("",), ("pods",)): {"create", "get", "list", "watch", "delete", "deletecollection"},
        (("",), ("configmaps",)): {"create", "get", "list", "delete", "deletecollection"},
        (("",), ("services",)): {"create", "get", "delete"},
    }
    (binding,) = by_kind(ci, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "lf-labelfree-spark", "namespace": NAMESPACE}]


def test_only_spark_submitters_get_a_kubernetes_api_token(ci):
    accounts = {sa["metadata"]["name"] for sa in by_kind(ci, "ServiceAccount")} | {"default"}
    for name, spec in pod_specs(ci):
        assert spec["serviceAccountName"] in accounts, name
        submitter = name in ("lf-labelfree-explainer", "lf-labelfree-worker-explain")
        assert spec["automountServiceAccountToken"] is submitter, name
        assert (spec["serviceAccountName"] == "lf-labelfree-spark") is submitter, name


def test_spark_settings_point_at_the_executor_image_and_account(ci):
    (cm,) = by_kind(ci, "ConfigMap")
    assert cm["data"]["LABELFREE_SPARK_MASTER"] == "k8s://https://kubernetes.default.svc"
    assert cm["data"]["LABELFREE_SPARK_EXECUTOR_IMAGE"] == "labelfree-spark:dev"
    assert cm["data"]["LABELFREE_SPARK_SERVICE_ACCOUNT"] == "lf-labelfree-spark"
    assert cm["data"]["LABELFREE_SPARK_NAMESPACE"] == NAMESPACE
    assert cm["data"]["LABELFREE_TRITON_URL"] == "lf-labelfree-triton:8001"


def test_spark_driver_pods_advertise_their_ip_and_fixed_ports(ci):
    for name, spec in pod_specs(ci):
        env = [e["name"] for e in spec["containers"][0].get("env", [])]
        submitter = name in ("lf-labelfree-explainer", "lf-labelfree-worker-explain")
        assert ("PYSPARK_SUBMIT_ARGS" in env) is submitter, name
        if not submitter:
            continue
        # $(VAR) expands only from variables defined earlier in the list.
        assert env.index("POD_NAME") < env.index("PYSPARK_SUBMIT_ARGS")
        assert env.index("POD_IP") < env.index("PYSPARK_SUBMIT_ARGS")
        args = next(e["value"] for e in spec["containers"][0]["env"] if e["name"] == "PYSPARK_SUBMIT_ARGS")
        assert "'spark.driver.host=$(POD_IP)'" in args and "'spark.kubernetes.driver.pod.name=$(POD_NAME)'" in args
        assert "'spark.driver.port=7078'" in args and "'spark.blockManager.port=7079'" in args
        assert args.endswith("pyspark-shell")


def test_configmap_sets_only_variables_settings_knows():
    settings = pytest.importorskip("labelfree.core.settings")
    (cm,) = by_kind(render(), "ConfigMap")
    names = {k.removeprefix("LABELFREE_").lower() for k in cm["data"] if k.startswith("LABELFREE_")}
    assert names <= set(settings.Settings.model_fields)


@pytest.mark.parametrize("queue", sorted(QUEUES))
def test_one_celery_worker_per_queue_with_its_concurrency(ci, queue):
    d = deployment(ci, f"worker-{queue}")
    c = d["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == f"labelfree-{QUEUES[queue]}:dev"
    assert c["command"][:5] == ["celery", "-A", "labelfree.core.celery_app", "worker", "-Q"]
    assert c["command"][5] == queue
    assert int(c["command"][c["command"].index("--concurrency") + 1]) == ci_values()["workers"].get(queue, {}).get(
        "concurrency", {"ingest": 4, "train": 1, "explain": 1, "detect": 2}[queue])


def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook(ci):
    (job,) = by_kind(ci, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    spec = job["spec"]["template"]["spec"]
    assert spec["containers"][0]["command"] == ["labelfree", "db", "upgrade"]
    assert spec["restartPolicy"] == "Never"
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["LABELFREE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "labelfree-dev"


def test_secrets_only_arrive_by_reference_to_the_existing_secret(all_on):
    assert not by_kind(all_on, "Secret")
    secret_names = {"LABELFREE_DATABASE_URL", "LABELFREE_BROKER_URL", "LABELFREE_RESULT_BACKEND", "LABELFREE_SECRET_KEY",
                    "LABELFREE_S3_ACCESS_KEY", "LABELFREE_S3_SECRET_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    for name, spec in pod_specs(all_on):
        for c in spec["containers"]:
            for e in c.get("env", []):
                if e["name"] in secret_names:
                    assert "value" not in e, (name, e["name"])
                    assert e["valueFrom"]["secretKeyRef"]["name"] == "labelfree-dev", (name, e["name"])
    (cm,) = by_kind(all_on, "ConfigMap")
    assert not secret_names & set(cm["data"])


@pytest.mark.parametrize("svc", [*APIS, "triton"])
def test_each_service_has_a_pdb_selecting_its_pods(ci, svc):
    (pdb,) = [p for p in by_kind(ci, "PodDisruptionBudget") if p["metadata"]["name"] == f"lf-labelfree-{svc}"]
    labels = deployment(ci, svc)["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_network_policies_deny_by_default_then_allow_named_flows(all_on):
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(all_on, "NetworkPolicy")}
    deny = policies["lf-labelfree-default-deny"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny
    triton_from = policies["lf-labelfree-triton"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"]
    assert {"inference-api", "worker-detect"} == set(triton_from[1]["values"])
    driver = policies["lf-labelfree-spark-driver"]
    assert driver["podSelector"]["matchLabels"]["labelfree.io/spark-submitter"] == "true"
    assert {p["port"] for p in driver["ingress"][0]["ports"]} == {7078, 7079}
    assert driver["ingress"][0]["from"] == [{"podSelector": {"matchLabels": {"spark-role": "executor"}}}]


def test_helm_test_pod_checks_healthz_of_every_enabled_api(ci):
    (pod,) = by_kind(ci, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    urls = pod["spec"]["containers"][0]["command"][3:]
    assert urls == [f"http://lf-labelfree-{svc}:8000/healthz" for svc in APIS]


def test_ingress_routes_each_host_to_an_existing_service(all_on):
    services = {s["metadata"]["name"] for s in by_kind(all_on, "Service")}
    (ing,) = by_kind(all_on, "Ingress")
    backends = [p["backend"]["service"]["name"] for r in ing["spec"]["rules"] for p in r["http"]["paths"]]
    assert len(backends) == 4 and set(backends) <= services


def test_settings_accept_the_environment_the_chart_gives_a_pod(monkeypatch, ci):
    """ConfigMap + secret references, with stand-in secret values, make a valid cluster Settings."""
    settings_mod = pytest.importorskip("labelfree.core.settings")
    (cm,) = by_kind(ci, "ConfigMap")
    container_env = container(ci, "explainer")["env"]
    secrets = {"database-url": "postgres://lf:pw@db:5432/lf", "broker-url": "redis://redis:6379/0",
               "result-backend": "redis://redis:6379/1", "secret-key": "a-real-looking-secret-0123456789",
               "s3-access-key": "AKIAEXAMPLE", "s3-secret-key": "s3-real-looking-secret-0123456789"}
    for name in [k for k in os.environ if k.startswith("LABELFREE_")]:
        monkeypatch.delenv(name)
    for key, value in cm["data"].items():
        monkeypatch.setenv(key, value)
    for e in container_env:
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            monkeypatch.setenv(e["name"], secrets[ref["key"]])
    monkeypatch.setenv("LABELFREE_ENVIRONMENT", "production")
    s = settings_mod.Settings()
    assert s.profile == "cluster" and s.database_url.startswith("postgresql+psycopg2://")
    assert s.triton_url == "lf-labelfree-triton:8001" and s.inference_backend == "triton"
    assert s.spark_executor_image == "labelfree-spark:dev" and s.spark_service_account == "lf-labelfree-spark"
    assert s.grpc_port == 8001 and s.api_host == "0.0.0.0" and str(s.data_dir) == "/tmp/labelfree"


def test_api_with_several_uvicorn_processes_shares_one_metrics_folder():
    from tests.deploy.chart import deep_merge

    one = container(render(ci_values()), "inference")
    assert "PROMETHEUS_MULTIPROC_DIR" not in {e["name"] for e in one.get("env", [])}
    several = container(render(deep_merge(ci_values(), {"api": {"inference": {"workers": 3}}})), "inference")
    env = {e["name"]: e.get("value") for e in several["env"]}
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")  # the writable emptyDir of a read-only root
    assert several["command"][several["command"].index("--workers") + 1] == "3"
