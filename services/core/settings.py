"""One Settings object, read from LABELFREE_* environment variables.

Two profiles:
- ``embedded``: no servers. SQLite file, kombu's SQLAlchemy transport on a SQLite
  file as the broker, a local object-store directory, ``local[*]`` Spark, ONNX Runtime.
- ``cluster``: Postgres, Redis, an S3-compatible store, a Spark master URL, Triton.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "password", "dev", "development"}


def normalise_dsn(url: str) -> str:
    """SQLAlchemy wants ``postgresql+psycopg2://``; people write ``postgres://``."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABELFREE_", env_file=None, extra="forbid")

    profile: Literal["embedded", "cluster"] = "embedded"
    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Field(default=Path.home() / ".labelfree")
    secret_key: str = "dev"

    database_url: str | None = None
    broker_url: str | None = None
    result_backend: str | None = None

    # Object store: a directory, or s3://bucket/prefix with an S3-compatible endpoint.
    store_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None

    spark_master: str = "local[*]"
    spark_executor_image: str | None = None
    spark_namespace: str = "default"
    spark_service_account: str = "labelfree-spark"
    inference_backend: Literal["onnxruntime", "triton"] | None = None
    triton_url: str = "127.0.0.1:8001"
    triton_model: str = "labelfree_detector"
    triton_model_version: str = ""
    triton_repository: Path | None = None
    detector_dir: Path | None = None
    onnx_providers: str = "auto"
    # ONNX Runtime intra-op threads per serving process; 0 = every usable core. `labelfree up` sets it
    # to cores / inference processes when it starts several, so they do not oversubscribe the cores.
    onnx_threads: int = Field(0, ge=0, le=256)
    # In-process detection (REST and gRPC): images of concurrent requests run as one ONNX Runtime call of
    # up to this many (1 = each request alone). A lone request never waits for others.
    inference_batch: int = Field(8, ge=1, le=64)

    # Optional Openverse OAuth client credentials: lift the anonymous rate limit.
    openverse_client_id: str | None = None
    openverse_client_secret: str | None = None

    backbone: str = "efficientnet-lite0"
    # A job whose worker has not beaten its heart for this long is taken over by a redelivery.
    job_lease_seconds: int = 120
    # Redis redelivers an unacknowledged message after this long (worker killed with SIGKILL).
    broker_visibility_timeout: int = 3600
    # Seconds between sweeps that look for such messages.
    broker_restore_interval: int = 10
    max_upload_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 64_000_000
    max_archive_bytes: int = 4 * 1024**3
    max_archive_files: int = 100_000
    log_level: str = "INFO"
    log_json: bool = True

    api_host: str = "127.0.0.1"
    ingest_port: int = 8101
    trainer_port: int = 8102
    explainer_port: int = 8103
    inference_port: int = 8104
    grpc_port: int = 8105
    # Processes serving the inference API on this machine (`labelfree up`): 0 = one per usable core,
    # up to 4. Python request handling holds the GIL, so one process leaves cores idle under load
    # (16 clients, S=128 int8 detector, 2 cores: 0.73 of the bare in-process throughput with one,
    # 0.97 with two; bench/RESULTS.md). In Kubernetes the chart's per-service ``workers`` decides.
    inference_workers: int = Field(0, ge=0, le=64)

    @property
    def inference_processes(self) -> int:
        """``inference_workers`` resolved: 0 -> usable cores, at most 4."""
        import os

        return self.inference_workers or max(1, min(4, len(os.sched_getaffinity(0))))

    def inference_process_env(self) -> dict[str, str]:
        """Extra environment for each of ``inference_processes`` serving processes: with several, ONNX
        Runtime gets cores / processes threads each (unless ``onnx_threads`` is set): +8% req/s with two
        processes on 2 cores against two threads each (bench/RESULTS.md); and their metrics are kept
        in one folder, so that ``/metrics`` adds up every process."""
        import os

        processes = self.inference_processes
        if processes < 2:
            return {}
        # one /metrics for all of them (core/metrics.py); `up` empties the folder before starting
        env = {"PROMETHEUS_MULTIPROC_DIR": str(self.data_dir / "metrics" / "inference")}
        if not self.onnx_threads:
            env["LABELFREE_ONNX_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // processes))
        return env

    @model_validator(mode="after")
    def _fill_profile_defaults(self) -> "Settings":
        self.data_dir = Path(self.data_dir).expanduser()
        if self.profile == "embedded":
            self.database_url = self.database_url or f"sqlite:///{self.data_dir / 'labelfree.db'}"
            self.broker_url = self.broker_url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"
            self.result_backend = self.result_backend or f"db+sqlite:///{self.data_dir / 'results.db'}"
            self.store_url = self.store_url or str(self.data_dir / "store")
            self.inference_backend = self.inference_backend or "onnxruntime"
        else:
            missing = [n for n in ("database_url", "broker_url", "store_url") if not getattr(self, n)]
            if missing:
                raise ValueError(f"cluster profile needs LABELFREE_{missing[0].upper()}")
            self.inference_backend = self.inference_backend or "triton"
        self.database_url = normalise_dsn(self.database_url)
        if self.environment == "production":
            for name in ("secret_key", "s3_secret_key"):
                value = getattr(self, name)
                if name == "s3_secret_key" and value is None:
                    continue
                if value is None or value.strip().lower() in PLACEHOLDER_SECRETS:
                    raise ValueError(f"LABELFREE_{name.upper()} is a placeholder; set a real secret")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def ensure_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if "://" not in (self.store_url or ""):
            Path(self.store_url).mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    settings = Settings()
    settings.ensure_dirs()
    return settings


def reset_settings() -> None:
    """Forget the cached Settings (tests change the environment between cases)."""
    get_settings.cache_clear()
