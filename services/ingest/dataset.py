"""Build a labelled dataset from image search: the pure pipeline behind the job and the CLI.

    search (positives, hard negatives, random-word negatives)
      -> download + validate (decode, limits) -> strip GPS, pHash
      -> dedupe (exact, near, positive/negative conflicts) -> sink (store or folder)

No database, no Celery: the caller passes a provider, a downloader, a ``sink`` that stores
one image's bytes and returns its key, and a ``progress`` callback (0..1).
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Sequence

import numpy as np

from labelfree.core.errors import LabelfreeError
from labelfree.core.images import DEFAULT_MAX_PIXELS, ImageDecodeError, sanitize_image
from labelfree.ingest.dedupe import (
    DEFAULT_MAX_DISTANCE, HASH_PREVIEW_SIDE, NEGATIVE, POSITIVE, dedupe, perceptual_hash, phash_to_int,
)
from labelfree.ingest.download import Downloader, DownloadError, map_concurrently
from labelfree.ingest.providers.base import Provider, ProviderError, SearchResult

log = logging.getLogger(__name__)

MANIFEST_FIELDS = ("sha256", "label", "query", "provider", "source_url", "landing_url", "licence", "creator",
                   "width", "height", "phash")


@dataclass(frozen=True)
class DatasetRequest:
    """What to search for. Pages are provider pages of ``page_size`` results.

    ``random_words`` noise-contrastive negative queries, ``per_word`` images each;
    ``hard_negatives`` user queries, ``hard_negative_pages`` pages each.
    """

    query: str
    positive_pages: int = 1
    page_size: int = 20
    random_words: int = 0
    per_word: int = 0
    hard_negatives: tuple[str, ...] = ()
    hard_negative_pages: int = 1
    min_side: int = 64
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_distance: int = DEFAULT_MAX_DISTANCE
    seed: int = 0

    def __post_init__(self):
        if not self.query.strip():
            raise ValueError("query must not be empty")
        for name in ("positive_pages", "page_size", "hard_negative_pages", "min_side", "max_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.random_words < 0 or self.per_word < 0:
            raise ValueError(f"random_words and per_word must be >= 0, got {self.random_words}, {self.per_word}")
        if bool(self.random_words) != bool(self.per_word):
            raise ValueError("random negatives need both random_words and per_word > 0")


@dataclass
class IngestedImage:
    """One validated, GPS-free image and its provenance. ``data`` are the bytes to store."""

    sha256: str
    label: str
    query: str
    provider: str
    source_url: str
    landing_url: str | None
    licence: str | None
    licence_url: str | None
    creator: str | None
    attribution: str | None
    title: str | None
    width: int
    height: int
    phash: str
    data: bytes
    suffix: str
    content_type: str
    captured_at: datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    store_key: str | None = None

    def manifest_row(self) -> dict:
        """The architecture.md manifest line (plus ``store_key``, where the bytes live)."""
        row = {name: getattr(self, name) for name in MANIFEST_FIELDS}
        row["store_key"] = self.store_key
        return row


@dataclass
class DatasetResult:
    images: list[IngestedImage]
    summary: dict
    words: list[str] = field(default_factory=list)


def random_words(n: int, rng: np.random.Generator, *, exclude: Sequence[str] = ()) -> list[str]:
    """``n`` distinct random English nouns from wonderwords' maintained list, none containing an ``exclude`` token."""
    from wonderwords import RandomWord

    if n <= 0:
        return []
    tokens = {t.lower() for text in exclude for t in text.split() if len(t) > 2}
    generator = RandomWord(rng=random.Random(int(rng.integers(2**63))))
    words: list[str] = []
    while len(words) < n:
        for word in generator.random_words(n * 2, include_categories=["noun"], word_min_length=3,
                                           word_max_length=12):
            if word not in words and not any(t in word.lower() for t in tokens) and len(words) < n:
                words.append(word)
    return words


def plan_queries(request: DatasetRequest, words: Sequence[str]) -> list[tuple[str, str, int, int | None]]:
    """``(label, query, pages, limit)`` in rank order: positives, hard negatives, random words."""
    plan: list[tuple[str, str, int, int | None]] = [(POSITIVE, request.query, request.positive_pages, None)]
    plan += [(NEGATIVE, q, request.hard_negative_pages, None) for q in request.hard_negatives]
    pages_per_word = -(-request.per_word // request.page_size) if request.per_word else 0
    plan += [(NEGATIVE, w, pages_per_word, request.per_word) for w in words]
    return plan


def _failure_reason(exc: Exception) -> str:
    if isinstance(exc, DownloadError):
        return exc.reason
    if isinstance(exc, ImageDecodeError):
        if exc.code == "payload_too_large":
            return "too_many_pixels"
        return "too_small" if "minimum side" in exc.detail else "undecodable"
    return type(exc).__name__


class _Throttled:
    """Calls ``progress`` at most every ``every`` seconds (each call is a database write)."""

    def __init__(self, progress: Callable[[float], None], every: float = 0.5):
        self.progress, self.every, self.last = progress, every, 0.0

    def __call__(self, fraction: float, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= self.every:
            self.last = now
            self.progress(fraction)


def build_dataset(request: DatasetRequest, provider: Provider, *, downloader: Downloader,
                  sink: Callable[[IngestedImage], str] | None = None, rng: np.random.Generator,
                  progress: Callable[[float], None] = lambda f: None,
                  negative_provider: Provider | None = None) -> DatasetResult:
    """Search, download, validate, strip GPS, dedupe and sink one dataset; see the module docstring.

    Raises ProviderError when the positive query cannot be searched, LabelfreeError
    (``invalid``) when it finds nothing; a failed negative
    query is counted under ``failures['search_failed']`` and the build goes on.
    """
    started = time.monotonic()
    timings: dict[str, float] = {}
    report = _Throttled(progress)
    words = random_words(request.random_words, rng, exclude=[request.query, *request.hard_negatives])
    plan = plan_queries(request, words)
    failures: Counter[str] = Counter()
    found: list[tuple[str, SearchResult]] = []
    seen_urls: set[tuple[str, str]] = set()
    duplicate_urls = 0

    def fetch(item: tuple[str, SearchResult]) -> IngestedImage | Exception:
        label, result = item
        try:
            data, _ = downloader.fetch(result.url)
            clean = sanitize_image(data, max_pixels=request.max_pixels, min_side=request.min_side,
                                   preview_side=HASH_PREVIEW_SIDE)
            phash = perceptual_hash(clean.image)
        except (DownloadError, ImageDecodeError) as exc:
            return exc
        return IngestedImage(
            sha256=hashlib.sha256(clean.data).hexdigest(), label=label, query=result.query,
            provider=result.provider, source_url=result.url, landing_url=result.landing_url,
            licence=result.licence, licence_url=result.licence_url, creator=result.creator,
            attribution=result.attribution, title=result.title, width=clean.width, height=clean.height,
            phash=phash, data=clean.data, suffix=clean.suffix, content_type=clean.content_type,
            captured_at=clean.metadata.captured_at, camera_make=clean.metadata.camera_make,
            camera_model=clean.metadata.camera_model)

    workers = downloader.config.workers
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
        futures: list[Future] = []  # in rank order; downloads start while later queries are searched
        try:  # on any error (cancellation included) queued downloads are dropped, not waited for
            for step, (label, query, pages, limit) in enumerate(plan):
                source = provider if label == POSITIVE or negative_provider is None else negative_provider
                try:
                    for result in source.iter_results(query, pages=pages, page_size=request.page_size,
                                                      limit=limit):
                        # The same URL twice under one label: nothing to download or compare. Under
                        # both labels it is fetched twice, so dedupe sees the conflict and drops both.
                        if (label, result.url) in seen_urls:
                            duplicate_urls += 1
                            continue
                        seen_urls.add((label, result.url))
                        found.append((label, result))
                        futures.append(pool.submit(fetch, (label, result)))
                except ProviderError as exc:
                    if label == POSITIVE:
                        raise
                    log.warning("negative query %r failed: %s", query, exc.detail)
                    failures["search_failed"] += 1
                report(0.1 * (step + 1) / len(plan))
                if step == 0 and not futures:
                    # Not retryable: the search worked and found nothing.
                    raise LabelfreeError("invalid", f"{provider.name}: no results for {request.query!r}")
            timings["search_s"] = time.monotonic() - started
            rank = {future: i for i, future in enumerate(futures)}
            ok: list[tuple[int, IngestedImage]] = []
            for done, future in enumerate(as_completed(futures), 1):
                outcome = future.result()
                if isinstance(outcome, Exception):
                    failures[_failure_reason(outcome)] += 1
                    log.debug("skipped %s: %s", found[rank[future]][1].url, outcome)
                else:
                    ok.append((rank[future], outcome))
                report(0.1 + 0.8 * done / len(futures))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    timings["fetch_s"] = time.monotonic() - started - timings["search_s"]
    ok.sort(key=lambda pair: pair[0])  # rank order, so dedupe keeps the best-ranked copy
    candidates = [image for _, image in ok]
    mark = time.monotonic()
    decision = dedupe([c.sha256 for c in candidates], [phash_to_int(c.phash) for c in candidates],
                      [c.label for c in candidates], max_distance=request.max_distance)
    kept = [candidates[i] for i in decision.keep]
    timings["dedupe_s"] = time.monotonic() - mark
    mark = time.monotonic()
    if sink is not None:
        def store(image: IngestedImage) -> None:
            image.store_key = sink(image)
        # Stores fsync each object; in parallel the waits overlap.
        for n, _ in enumerate(map_concurrently(store, kept, workers=workers), 1):
            report(0.9 + 0.1 * n / len(kept))
    timings["sink_s"] = time.monotonic() - mark
    report(1.0, force=True)
    summary = {
        "query": request.query,
        "provider": provider.name,
        "random_words": words,
        "hard_negatives": list(request.hard_negatives),
        "found": {"positive": sum(1 for lbl, _ in found if lbl == POSITIVE),
                  "negative": sum(1 for lbl, _ in found if lbl == NEGATIVE)},
        "downloaded": len(candidates),
        "images": len(kept),
        "labels": dict(Counter(image.label for image in kept)),
        "licences": dict(Counter(image.licence or "unknown" for image in kept)),
        "queries": dict(Counter(image.query for image in kept)),
        "duplicates": {"urls": duplicate_urls, **decision.summary()},
        "failures": dict(failures),
        "seconds": round(time.monotonic() - started, 2),
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    return DatasetResult(kept, summary, words)
