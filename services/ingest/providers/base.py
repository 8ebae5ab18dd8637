"""What every search provider shares: the result record, rate limiting, and polite HTTP.

A provider turns ``(query, page)`` into a page of :class:`SearchResult`. Each provider
instance owns a :class:`RateLimiter` (its own budget, shared by its threads) and retries
429/5xx answers, honouring ``Retry-After``. Malformed answers raise :class:`ProviderError`
with a message that says what was wrong, never a KeyError from deep inside.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import httpx

from labelfree import __version__
from labelfree.core.errors import LabelfreeError

log = logging.getLogger(__name__)

USER_AGENT = f"labelfree/{__version__} (+https://github.com/labelfree; dataset builder)"
OFFLINE_HINT = (
    "this machine cannot reach {url}; offline, use --provider dir --dir FOLDER, or run "
    "`labelfree devsearch --root FOLDER` and point the openverse provider at it "
    "(--base-url http://127.0.0.1:PORT/v1/)"
)


class ProviderError(LabelfreeError):
    """A search provider failed: unreachable, rate-limited past our patience, or malformed.

    Code ``unavailable`` (503): the job layer retries it a few times with backoff.
    """

    def __init__(self, provider: str, detail: str):
        super().__init__("unavailable", f"{provider}: {detail}")
        self.provider = provider


@dataclass
class SearchResult:
    """One image a provider found, with the provenance we must keep."""

    provider: str
    query: str
    url: str  # the image bytes
    landing_url: str | None = None  # the human page for the image
    licence: str | None = None  # short form, e.g. "CC BY 2.0", "cc0"
    licence_url: str | None = None
    creator: str | None = None
    attribution: str | None = None
    title: str | None = None
    source_id: str | None = None
    width: int | None = None
    height: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchPage:
    """One page of results. ``page_count`` is None when the provider does not say."""

    results: list[SearchResult]
    page: int
    page_count: int | None = None
    result_count: int | None = None

    @property
    def is_last(self) -> bool:
        return not self.results or (self.page_count is not None and self.page >= self.page_count)


class RateLimiter:
    """At most ``per_minute`` requests per rolling minute, spaced evenly; thread-safe.

    ``pause(seconds)`` blocks everyone (a 429's Retry-After applies to the whole client).
    """

    def __init__(self, per_minute: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if per_minute <= 0:
            raise ValueError(f"per_minute must be > 0, got {per_minute}")
        self.interval = 60.0 / per_minute
        self._next = 0.0
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval
        if wait > 0:
            self._sleep(wait)

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)


def parse_retry_after(value: str | None, default: float) -> float:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return default
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


class Provider(ABC):
    """Base class: subclasses implement :meth:`search`; :meth:`get_json` does the HTTP."""

    name: str = "provider"
    default_per_minute: float = 60.0
    max_page_size: int = 10**9  # the largest page the API serves to this client

    def __init__(self, *, base_url: str, per_minute: float | None = None, timeout: float = 20.0,
                 max_retries: int = 4, max_retry_wait: float = 120.0, client: httpx.Client | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.base_url = base_url
        self.limiter = RateLimiter(per_minute or self.default_per_minute, sleep=sleep)
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self._sleep = sleep
        self.client = client or httpx.Client(timeout=timeout, headers={"User-Agent": USER_AGENT},
                                             follow_redirects=True)

    def close(self) -> None:
        self.client.close()

    def offline_message(self, url: str, exc: Exception) -> str:
        return f"{type(exc).__name__}: {exc}; " + OFFLINE_HINT.format(url=url)

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        """Send one request under the rate limit; retry 429/5xx/connection errors with backoff."""
        for attempt in range(self.max_retries + 1):
            self.limiter.acquire()
            try:
                response = self.client.request(method, url, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Unreachable host: retrying a DNS failure rarely helps; say how to work offline.
                raise ProviderError(self.name, self.offline_message(url, exc)) from exc
            except httpx.TransportError as exc:
                if attempt == self.max_retries:
                    raise ProviderError(self.name, f"{type(exc).__name__} talking to {url}: {exc}") from exc
                self._sleep(min(self.max_retry_wait, 2.0 ** attempt))
                continue
            if response.status_code == 429 or response.status_code >= 500:
                wait = parse_retry_after(response.headers.get("Retry-After"), default=2.0 ** attempt)
                if attempt == self.max_retries or wait > self.max_retry_wait:
                    raise ProviderError(
                        self.name, f"HTTP {response.status_code} from {url} after {attempt + 1} tries"
                                   f" (Retry-After {response.headers.get('Retry-After')!r})")
                log.info("%s: HTTP %s, waiting %.1fs", self.name, response.status_code, wait)
                self.limiter.pause(wait)
                continue
            return response
        raise AssertionError("unreachable")

    def get_json(self, url: str, params: dict | None = None, headers: dict | None = None) -> Any:
        response = self.request("GET", url, params=params, headers=headers)
        if response.status_code >= 400:
            raise ProviderError(self.name, f"HTTP {response.status_code} from {response.url}: "
                                           f"{response.text[:300]!r}")
        try:
            return response.json()
        except ValueError as exc:
            raise ProviderError(self.name, f"malformed response from {response.url}: not JSON "
                                           f"({response.text[:120]!r})") from exc

    @abstractmethod
    def search(self, query: str, page: int = 1, page_size: int = 20) -> SearchPage:
        """One page (1-based) of results for ``query``."""

    def iter_results(self, query: str, *, pages: int = 1, page_size: int = 20,
                     limit: int | None = None) -> Iterator[SearchResult]:
        """Results over up to ``pages`` pages, stopping early at the last page or ``limit`` results."""
        if pages < 1:
            raise ValueError(f"pages must be >= 1, got {pages}")
        count = 0
        for page in range(1, pages + 1):
            result = self.search(query, page=page, page_size=page_size)
            for item in result.results:
                yield item
                count += 1
                if limit is not None and count >= limit:
                    return
            if result.is_last:
                return


def require(obj: Any, key: str, kind: type | tuple[type, ...], provider: str, where: str) -> Any:
    """``obj[key]`` checked for type, or a ProviderError naming what was malformed."""
    if not isinstance(obj, dict) or key not in obj:
        raise ProviderError(provider, f"malformed response: {where} has no {key!r}")
    value = obj[key]
    if not isinstance(value, kind):
        raise ProviderError(provider, f"malformed response: {where}.{key} is {type(value).__name__}")
    return value
