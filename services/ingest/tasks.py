"""The dataset-building job on the ``ingest`` queue: a thin wrapper around dataset.build_dataset.

Params (written by the API or the pipeline) name the dataset row and the request. A
redelivered job rebuilds from scratch: the dataset's image rows are replaced, and the
object store is content-addressed, so nothing is duplicated.
"""

from __future__ import annotations

import json
import logging

import numpy as np
from sqlalchemy import delete

from labelfree.core import jobs
from labelfree.core.celery_app import QUEUE_INGEST, enqueue, job_task
from labelfree.core.db import session_scope
from labelfree.core.errors import LabelfreeError, not_found
from labelfree.core.models import Dataset, Image
from labelfree.core.settings import get_settings
from labelfree.core.store import get_store
from labelfree.ingest.dataset import DatasetRequest, IngestedImage, build_dataset
from labelfree.ingest.download import DownloadConfig, Downloader
from labelfree.ingest.providers import make_provider

log = logging.getLogger(__name__)

TASK_BUILD_DATASET = "labelfree.ingest.build_dataset"
REQUEST_KEYS = ("query", "positive_pages", "page_size", "random_words", "per_word", "hard_negatives",
                "hard_negative_pages", "min_side", "max_distance", "seed")
DOWNLOAD_KEYS = ("timeout", "max_bytes", "retries", "per_host", "workers")


def parse_negatives(spec: str | None) -> int:
    """``random:K`` -> K images per random word; None or ``none`` -> 0."""
    if spec is None or spec.strip().lower() in ("", "none", "0"):
        return 0
    kind, _, count = spec.partition(":")
    if kind.strip().lower() != "random" or not count.strip().isdigit() or int(count) < 1:
        raise ValueError(f"negatives must look like 'random:K' with K >= 1, got {spec!r}")
    return int(count)


def request_from_params(params: dict) -> DatasetRequest:
    """A DatasetRequest from job params (raises ValueError naming the bad value)."""
    unknown = set(params) - set(REQUEST_KEYS) - {"dataset_id", "provider", "provider_options", "download"}
    if unknown:
        raise ValueError(f"unknown dataset parameter(s) {sorted(unknown)}")
    values = {k: params[k] for k in REQUEST_KEYS if k in params}
    values["hard_negatives"] = tuple(values.get("hard_negatives") or ())
    values["max_pixels"] = get_settings().max_image_pixels
    return DatasetRequest(**values)


def download_config(params: dict) -> DownloadConfig:
    options = params.get("download") or {}
    unknown = set(options) - set(DOWNLOAD_KEYS)
    if unknown:
        raise ValueError(f"unknown download option(s) {sorted(unknown)}")
    return DownloadConfig(**options)


def validate_params(params: dict) -> dict:
    """Check dataset job params as the worker will read them; raises LabelfreeError (422)."""
    try:
        request = request_from_params(params)
        download_config(params)
        provider = make_provider(params.get("provider", "openverse"), **provider_options(params))
        provider.close()
    except (ValueError, TypeError) as exc:
        raise LabelfreeError("invalid", str(exc)) from exc
    if request.page_size > provider.max_page_size:
        raise LabelfreeError("invalid", f"page_size {request.page_size} is over {provider.name}'s limit of "
                                        f"{provider.max_page_size} for this client")
    return params


def submit_dataset(params: dict, *, project_id: str | None = None, run_id: str | None = None) -> tuple[str, str]:
    """Write a dataset row and its ingest job, enqueue it; returns ``(dataset_id, job_id)``.

    ``params``: the job params (``query``, ``provider``, ``positive_pages``, ``page_size``, ``random_words``,
    ``per_word``, ``hard_negatives``, ``hard_negative_pages``, ``min_side``, ``seed``,
    ``provider_options``, ``download``); see :func:`request_from_params`.
    """
    validate_params(params)
    with session_scope() as session:
        job = jobs.create_job(session, jobs.JobKind.INGEST, params, project_id=project_id, run_id=run_id)
        dataset = Dataset(query=params["query"], provider=params.get("provider", "openverse"), params=params,
                          job_id=job.id, project_id=project_id)
        session.add(dataset)
        session.flush()
        job.params = {**params, "dataset_id": dataset.id}
        dataset_id, job_id = dataset.id, job.id
    enqueue(build_dataset_task, job_id)
    return dataset_id, job_id


def image_row(image: IngestedImage, dataset_id: str) -> Image:
    return Image(sha256=image.sha256, store_key=image.store_key, dataset_id=dataset_id, label=image.label,
                 file_name=image.title, width=image.width, height=image.height, content_type=image.content_type,
                 phash=image.phash, provider=image.provider, query=image.query, source_url=image.source_url,
                 landing_url=image.landing_url, licence=image.licence, licence_url=image.licence_url,
                 creator=image.creator, attribution=image.attribution, captured_at=image.captured_at,
                 camera_make=image.camera_make, camera_model=image.camera_model)


def provider_options(params: dict) -> dict:
    """The provider's keyword arguments: job params plus credentials from Settings.

    Credentials never travel in job params (they would sit in the jobs table); the worker
    reads them from its environment (``LABELFREE_OPENVERSE_CLIENT_ID``/``_SECRET``).
    """
    options = dict(params.get("provider_options") or {})
    if params.get("provider", "openverse") == "openverse":
        settings = get_settings()
        for key in ("client_id", "client_secret"):
            value = getattr(settings, f"openverse_{key}", None)
            if value and key not in options:
                options[key] = value
    return options


def build_dataset_job(job_id: str, params: dict, progress) -> dict:
    """Build the dataset ``params['dataset_id']`` and record its images, manifest and summary."""
    dataset_id = params.get("dataset_id")
    if not dataset_id:
        raise LabelfreeError("invalid", "job params name no dataset_id")
    with session_scope() as session:
        if session.get(Dataset, dataset_id) is None:
            raise not_found("dataset", dataset_id)
    try:
        request = request_from_params(params)
        provider = make_provider(params.get("provider", "openverse"), **provider_options(params))
        config = download_config(params)
    except ValueError as exc:
        raise LabelfreeError("invalid", str(exc)) from exc
    store = get_store()
    try:
        with Downloader(config) as downloader:
            result = build_dataset(request, provider, downloader=downloader, rng=np.random.default_rng(request.seed),
                                   sink=lambda image: store.put_bytes(image.data, image.suffix), progress=progress)
    finally:
        provider.close()
    manifest = "".join(json.dumps(image.manifest_row(), sort_keys=True) + "\n" for image in result.images)
    manifest_key = store.put(f"datasets/{dataset_id}/manifest.jsonl", manifest.encode())
    with session_scope() as session:
        session.execute(delete(Image).where(Image.dataset_id == dataset_id))  # a rerun replaces, never appends
        session.add_all(image_row(image, dataset_id) for image in result.images)
        dataset = session.get(Dataset, dataset_id)
        dataset.summary = result.summary
        dataset.manifest_key = manifest_key
    log.info("dataset %s: %d images", dataset_id, len(result.images))
    return {"dataset_id": dataset_id, "images": len(result.images), "manifest_key": manifest_key,
            "summary": result.summary}


build_dataset_task = job_task(TASK_BUILD_DATASET, QUEUE_INGEST)(build_dataset_job)
