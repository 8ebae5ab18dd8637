import pytest
from pydantic import ValidationError

from labelfree.core.settings import Settings


def test_embedded_profile_needs_no_servers(tmp_path):
    s = Settings(profile="embedded", data_dir=tmp_path, database_url=None, broker_url=None, store_url=None,
                 result_backend=None, inference_backend=None)
    assert s.database_url.startswith("sqlite:///") and s.broker_url.startswith("sqla+sqlite:///")
    assert s.store_url == str(tmp_path / "store") and s.inference_backend == "onnxruntime"
    assert s.spark_master.startswith("local")


def test_cluster_profile_requires_a_database_url(tmp_path):
    with pytest.raises(ValidationError, match="DATABASE_URL"):
        Settings(profile="cluster", data_dir=tmp_path, database_url=None, broker_url="redis://x", store_url="s3://b")


def test_postgres_dsn_is_normalised(tmp_path):
    s = Settings(profile="cluster", data_dir=tmp_path, database_url="postgres://u@h/db",
                 broker_url="redis://h", store_url="s3://b")
    assert s.database_url == "postgresql+psycopg2://u@h/db"


@pytest.mark.parametrize("secret", ["changeme", "dev", "", "secret"])
def test_placeholder_secrets_are_rejected_in_production(tmp_path, secret):
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(environment="production", secret_key=secret, data_dir=tmp_path)


def test_real_secret_is_accepted_in_production(tmp_path):
    assert Settings(environment="production", secret_key="k9-Jx2-long-random", data_dir=tmp_path).secret_key


def test_several_inference_processes_split_the_cores_between_their_onnx_runtimes(tmp_path, monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    metrics = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics" / "inference")}  # one /metrics for all
    auto = Settings(profile="embedded", data_dir=tmp_path)
    assert auto.inference_processes == 4
    assert auto.inference_process_env() == {"LABELFREE_ONNX_THREADS": "1", **metrics}
    two = Settings(profile="embedded", data_dir=tmp_path, inference_workers=2)
    assert two.inference_processes == 2 and two.inference_process_env() == {"LABELFREE_ONNX_THREADS": "3", **metrics}
    assert Settings(profile="embedded", data_dir=tmp_path, inference_workers=1).inference_process_env() == {}
    assert Settings(profile="embedded", data_dir=tmp_path, onnx_threads=2).inference_process_env() == metrics
