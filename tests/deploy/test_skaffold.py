"""skaffold.yaml parses, builds one artifact per chart image, and feeds each into the chart."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.deploy.chart import CHART, ROOT, by_kind, ci_values, deep_merge, render

kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed")


@pytest.fixture(scope="module")
def skaffold() -> dict:
    return yaml.safe_load((ROOT / "skaffold.yaml").read_text())


def template_key(image: str) -> str:
    # Skaffold exposes IMAGE_REPO_<name> with "/" and "-" turned into "_" (Go template names).
    return re.sub(r"[/\-.]", "_", image)


def test_skaffold_config_parses_with_a_v4beta_api(skaffold):
    assert re.fullmatch(r"skaffold/v4beta\d+", skaffold["apiVersion"])
    assert skaffold["kind"] == "Config"


def test_one_artifact_per_chart_image_with_an_existing_dockerfile(skaffold):
    chart_images = yaml.safe_load((CHART / "values.yaml").read_text())["images"]
    repos = {k: v["repository"] for k, v in chart_images.items() if isinstance(v, dict)}
    artifacts = {a["image"]: a for a in skaffold["build"]["artifacts"]}
    assert len(artifacts) == len(skaffold["build"]["artifacts"]) == len(repos) == 5
    # The chart's default repositories and the CI values name the same images skaffold builds.
    assert {r.rsplit("/", 1)[-1] for r in repos.values()} == set(artifacts)
    assert {k: v["repository"] for k, v in ci_values()["images"].items() if isinstance(v, dict)} == {
        k: r.rsplit("/", 1)[-1] for k, r in repos.items()}
    for name, art in artifacts.items():
        assert (ROOT / art["context"] / art["docker"]["dockerfile"]).is_file(), name


def test_helm_release_sets_each_image_repository_and_tag(skaffold):
    (release,) = skaffold["deploy"]["helm"]["releases"]
    assert (ROOT / release["chartPath"]).resolve() == CHART
    templates = release["setValueTemplates"]
    chart_images = yaml.safe_load((CHART / "values.yaml").read_text())["images"]
    keys = [k for k, v in chart_images.items() if isinstance(v, dict)]
    assert set(templates) == {f"images.{k}.{f}" for k in keys for f in ("repository", "tag")}
    for key in keys:
        name = template_key(chart_images[key]["repository"].rsplit("/", 1)[-1])
        assert templates[f"images.{key}.repository"] == f"{{{{.IMAGE_REPO_{name}}}}}"
        assert templates[f"images.{key}.tag"] == f"{{{{.IMAGE_TAG_{name}}}}}@{{{{.IMAGE_DIGEST_{name}}}}}"


def _profile_values(skaffold: dict, name: str) -> list[str]:
    (profile,) = [p for p in skaffold["profiles"] if p["name"] == name]
    return [p["value"] for p in profile["patches"] if p["path"].endswith("/valuesFiles/-")]


@pytest.mark.parametrize("profile", ["local", "gpu"])
def test_profiles_render_valid_manifests_with_their_values_files(skaffold, profile):
    files = _profile_values(skaffold, profile)
    assert files and all((ROOT / f).is_file() for f in files)
    values = ci_values() if profile == "local" else {}
    for f in files:
        values = deep_merge(values, yaml.safe_load((ROOT / f).read_text()))
    # Image values as skaffold would set them (a tag with a digest).
    for key in ("ingest", "trainer", "explainer", "inference", "spark"):
        values = deep_merge(values, {"images": {key: {"repository": f"labelfree-{key}",
                                                      "tag": "abc123@sha256:" + "0" * 64}}})
    objects = render(values)
    for obj in objects:
        if obj["apiVersion"].startswith(("apps/", "v1", "batch/", "policy/", "rbac.")):
            kv.validate(obj, "1.29.0", strict=True)
    triton = [d for d in by_kind(objects, "Deployment") if d["metadata"]["name"].endswith("-triton")][0]
    limits = triton["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert ("nvidia.com/gpu" in limits) == (profile == "gpu")


def test_gpu_profile_builds_the_trainer_against_a_cuda_torch_index(skaffold):
    (gpu,) = [p for p in skaffold["profiles"] if p["name"] == "gpu"]
    (patch,) = [p for p in gpu["patches"] if p["path"].endswith("/docker/buildArgs")]
    idx = int(patch["path"].split("/")[3])
    assert skaffold["build"]["artifacts"][idx]["image"] == "labelfree-trainer"
    assert "/whl/cu" in patch["value"]["TORCH_INDEX_URL"]
