"""The Helm chart lints, renders with default, CI and all-optional values, and every rendering
passes kubernetes-validate --strict for the oldest and newest supported Kubernetes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.chart import (CHART, CRD_KINDS, KUBE_VERSIONS, all_on_values, by_kind, ci_values, helm_sdk,
                                pod_specs, render)

kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed")

RENDERINGS = {"default": None, "ci": ci_values, "all-on": all_on_values}


@pytest.fixture(scope="module", params=sorted(RENDERINGS))
def rendering(request) -> tuple[str, list[dict[str, Any]]]:
    make = RENDERINGS[request.param]
    return request.param, render(make() if make else None)


def test_helm_lint_has_no_errors_or_unexpected_warnings():
    for values in (None, ci_values(), all_on_values()):
        report = helm_sdk().lint(CHART, values, kube_version="v1.29.0")
        assert report["errors"] == []
        # Subcharts are declared but not vendored: `helm dependency build` needs the network.
        unexpected = [m for m in report["messages"] if m["severity"] >= 2
                      and "missing these dependencies" not in m["error"]]
        assert unexpected == []


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_core_object_passes_strict_schema_validation(rendering, kube_version):
    name, objects = rendering
    checked = 0
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kv.validate(obj, kube_version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']} invalid for {kube_version}: "
                        f"{exc.message} at {list(exc.path)}")
        checked += 1
    assert checked >= 15


def test_crd_objects_have_the_fields_their_controllers_require():
    objects = render(all_on_values())
    kinds = {o["kind"] for o in objects}
    assert CRD_KINDS <= kinds
    deployments = {d["metadata"]["name"] for d in by_kind(objects, "Deployment")}
    for so in by_kind(objects, "ScaledObject"):
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        assert so["spec"]["scaleTargetRef"]["name"] in deployments
        trigger = so["spec"]["triggers"][0]
        assert trigger["type"] == "redis"
        # KEDA's redis scaler takes string metadata only.
        assert all(isinstance(v, str) for v in trigger["metadata"].values())
        assert trigger["metadata"]["listName"] in {"ingest", "train", "explain", "detect"}
        assert trigger["authenticationRef"]["name"] in {t["metadata"]["name"] for t in by_kind(objects, "TriggerAuthentication")}
    for sm in by_kind(objects, "ServiceMonitor"):
        assert sm["apiVersion"] == "monitoring.coreos.com/v1"
        assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
        assert sm["metadata"]["labels"]["release"] == "prometheus"
    (app,) = by_kind(objects, "SparkApplication")
    assert app["apiVersion"] == "sparkoperator.k8s.io/v1beta2"
    assert app["spec"]["type"] == "Python" and app["spec"]["mode"] == "cluster"
    assert app["spec"]["image"].startswith("labelfree-spark:")
    assert app["spec"]["mainApplicationFile"].startswith("local:///")
    assert app["spec"]["driver"]["serviceAccount"] == "lf-labelfree-spark"


def test_crd_objects_match_their_operators_typed_models():
    """KEDA and Prometheus Operator objects against cloudcoil's models generated from their CRDs.

    The models ignore unknown fields, so a strict check is a round trip: any field the model
    does not know is dropped and the dump no longer equals the input.
    """
    keda = pytest.importorskip("cloudcoil.models.keda.v1alpha1", reason="pip install cloudcoil-models-keda")
    prom = pytest.importorskip("cloudcoil.models.prometheus_operator.v1",
                               reason="pip install cloudcoil-models-prometheus-operator")
    models = {"ScaledObject": keda.ScaledObject, "TriggerAuthentication": keda.TriggerAuthentication,
              "ServiceMonitor": prom.ServiceMonitor}
    objects = [o for o in render(all_on_values()) if o["kind"] in models]
    assert len(objects) == 7
    for obj in objects:
        model = models[obj["kind"]].model_validate(obj)
        assert model.model_dump(by_alias=True, exclude_unset=True, mode="json") == obj, obj["metadata"]["name"]
    bogus = dict(objects[0], spec=dict(objects[0]["spec"], bogus=1))
    assert models[bogus["kind"]].model_validate(bogus).model_dump(by_alias=True, exclude_unset=True, mode="json") != bogus


def test_worker_replicas_are_left_to_keda_when_it_scales_them():
    workers = [d for d in by_kind(render(all_on_values()), "Deployment") if "-worker-" in d["metadata"]["name"]]
    assert len(workers) == 4 and all("replicas" not in w["spec"] for w in workers)
    workers = [d for d in by_kind(render(ci_values()), "Deployment") if "-worker-" in d["metadata"]["name"]]
    assert all(w["spec"]["replicas"] == 1 for w in workers)


def test_optional_parts_are_absent_by_default():
    kinds = {o["kind"] for o in render()}
    assert not kinds & (CRD_KINDS | {"NetworkPolicy", "Ingress"})


def test_objects_are_named_uniquely_per_kind(rendering):
    name, objects = rendering
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), name
    assert all(len(o["metadata"]["name"]) <= 63 for o in objects)


def test_every_pod_mounts_only_volumes_it_declares(rendering):
    _, objects = rendering
    for name, spec in pod_specs(objects):
        declared = {v["name"] for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            assert {m["name"] for m in c.get("volumeMounts", [])} <= declared, name


def test_kubernetes_validate_cli_accepts_the_all_on_rendering(tmp_path):
    """The same check through the CLI operators would run: `kubernetes-validate --strict`."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    cli = Path(sys.executable).with_name("kubernetes-validate")
    if not cli.exists() and not shutil.which("kubernetes-validate"):
        pytest.skip("kubernetes-validate CLI not installed")
    manifest = tmp_path / "all-on.yaml"
    manifest.write_text(yaml.safe_dump_all([o for o in render(all_on_values()) if o["kind"] not in CRD_KINDS]))
    out = subprocess.run([str(cli) if cli.exists() else "kubernetes-validate", "--strict", "-k", KUBE_VERSIONS[0],
                          "--quiet", str(manifest)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
