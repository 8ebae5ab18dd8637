"""Concurrent, bounded image download.

Each URL is fetched with a timeout, a byte cap (checked on Content-Length and while
streaming), per-host concurrency limits, and retries with exponential backoff on 429, 5xx
and transport errors (``Retry-After`` honoured up to a cap). What comes back is sniffed
by its leading bytes, whatever the server's Content-Type claims. Failures carry a short
``reason`` (``http_404``, ``timeout``, ``too_large``, ``not_an_image``...) for summaries.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar
from urllib.parse import unquote, urlsplit

import httpx

from labelfree.ingest.providers.base import USER_AGENT, parse_retry_after

T = TypeVar("T")
R = TypeVar("R")

# Leading bytes of the formats we accept; the server's Content-Type is only a hint.
_MAGIC = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


def sniff_image_type(data: bytes) -> str | None:
    """MIME type from the first bytes (JPEG, PNG, GIF, WebP, BMP, TIFF), or None."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    return None


class DownloadError(Exception):
    """A URL that gave no usable bytes. ``reason`` is a short stable key for summaries."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DownloadConfig:
    """Limits for one download run. ``workers`` threads overall, ``per_host`` at once per host."""

    timeout: float = 20.0
    max_bytes: int = 25 * 1024 * 1024
    retries: int = 3
    backoff: float = 0.5
    max_retry_wait: float = 30.0
    per_host: int = 4
    workers: int = 16

    def __post_init__(self):
        for name in ("timeout", "max_bytes", "per_host", "workers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")


class Downloader:
    """Fetch bytes from http(s):// and file:// URLs under the limits of a :class:`DownloadConfig`."""

    def __init__(self, config: DownloadConfig = DownloadConfig(), *, client: httpx.Client | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self._sleep = sleep
        self._own_client = client is None
        self.client = client or httpx.Client(
            timeout=config.timeout, follow_redirects=True, headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=config.workers, max_keepalive_connections=config.workers))
        self._hosts: dict[str, threading.Semaphore] = {}
        self._hosts_lock = threading.Lock()

    def close(self) -> None:
        if self._own_client:
            self.client.close()

    def __enter__(self) -> "Downloader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _host_slot(self, host: str) -> threading.Semaphore:
        with self._hosts_lock:
            if host not in self._hosts:
                self._hosts[host] = threading.Semaphore(self.config.per_host)
            return self._hosts[host]

    def fetch(self, url: str) -> tuple[bytes, str]:
        """``(bytes, sniffed mime)`` for ``url``; raises DownloadError."""
        parts = urlsplit(url)
        if parts.scheme == "file":
            data = self._read_file(Path(unquote(parts.path)))
        elif parts.scheme in ("http", "https") and parts.hostname:
            data = self._fetch_http(url, parts.hostname)
        else:
            raise DownloadError("bad_url", f"unsupported URL {url[:200]!r}")
        if not data:
            raise DownloadError("empty", f"{url} returned no bytes")
        mime = sniff_image_type(data)
        if mime is None:
            raise DownloadError("not_an_image", f"{url} starts with {data[:16]!r}, not an image format")
        return data, mime

    def _read_file(self, path: Path) -> bytes:
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise DownloadError("missing", f"{path}: {exc.strerror or exc}") from exc
        if size > self.config.max_bytes:
            raise DownloadError("too_large", f"{path} is {size} bytes, over {self.config.max_bytes}")
        return path.read_bytes()

    def _fetch_http(self, url: str, host: str) -> bytes:
        slot = self._host_slot(host)
        last: DownloadError | None = None
        for attempt in range(self.config.retries + 1):
            wait = self.config.backoff * 2 ** attempt
            with slot:
                try:
                    return self._get_once(url)
                except _Retryable as exc:
                    last = DownloadError(exc.reason, exc.detail)
                    if exc.retry_after is not None:
                        wait = exc.retry_after
            if attempt < self.config.retries:
                if wait > self.config.max_retry_wait:
                    break
                self._sleep(wait)  # outside the host slot: others may use it meanwhile
        assert last is not None
        raise last

    def _get_once(self, url: str) -> bytes:
        cap = self.config.max_bytes
        try:
            with self.client.stream("GET", url) as response:
                status = response.status_code
                if status == 429 or status >= 500:
                    raise _Retryable(f"http_{status}", f"{url} answered {status}",
                                     parse_retry_after(response.headers.get("Retry-After"), -1.0)
                                     if response.headers.get("Retry-After") else None)
                if status >= 400:
                    raise DownloadError(f"http_{status}", f"{url} answered {status}")
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > cap:
                    raise DownloadError("too_large", f"{url} declares {declared} bytes, over {cap}")
                chunks, total = [], 0
                for chunk in response.iter_bytes():
                    total += len(chunk)
                    if total > cap:
                        raise DownloadError("too_large", f"{url} sent more than {cap} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.TimeoutException as exc:
            raise _Retryable("timeout", f"{url}: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise _Retryable("connection", f"{url}: {type(exc).__name__}: {exc}") from exc


class _Retryable(Exception):
    def __init__(self, reason: str, detail: str, retry_after: float | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.retry_after = reason, detail, retry_after


def map_concurrently(fn: Callable[[T], R], items: Iterable[T], *, workers: int) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` in completion order, ``workers`` at a time; exceptions are fn's to catch."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
        futures = {pool.submit(fn, item): item for item in items}
        for future in as_completed(futures):
            yield futures[future], future.result()
