"""Openverse images API client (https://api.openverse.org/v1/): the default provider.

Keyless; licence and attribution come with every result. Anonymous callers get at most
20 results per page; an OAuth client-credentials token (``client_id``/``client_secret``)
lifts that limit and the anonymous rate limits. The dev server (``labelfree devsearch``)
answers the same shape, so tests and offline demos run this exact client.
"""

from __future__ import annotations

import threading
import time
from typing import Iterable
from urllib.parse import urlsplit

from labelfree.ingest.providers.base import Provider, ProviderError, SearchPage, SearchResult, require

DEFAULT_BASE_URL = "https://api.openverse.org/v1/"
ANONYMOUS_MAX_PAGE_SIZE = 20
AUTHENTICATED_MAX_PAGE_SIZE = 500
ANONYMOUS_PER_MINUTE = 20.0  # Openverse's anonymous burst limit (and 200/day)
AUTHENTICATED_PER_MINUTE = 100.0
MAX_PAGE = 20  # Openverse serves no page deeper than 20
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
LICENCES = {"by", "by-sa", "by-nc", "by-nd", "by-nc-sa", "by-nc-nd", "cc0", "pdm", "sampling+", "nc-sampling+"}
LICENCE_TYPES = {"all", "all-cc", "commercial", "modification"}


def licence_name(code: str | None, version: str | None) -> str | None:
    """Openverse ``license``/``license_version`` as people write it: ``CC BY 2.0``, ``CC0 1.0``, ``PDM 1.0``."""
    if not code:
        return None
    name = {"cc0": "CC0", "pdm": "PDM"}.get(code.lower(), f"CC {code.upper()}")
    return f"{name} {version}" if version else name


class OpenverseProvider(Provider):
    name = "openverse"
    default_per_minute = ANONYMOUS_PER_MINUTE

    def __init__(self, *, base_url: str = DEFAULT_BASE_URL, licences: Iterable[str] = (),
                 licence_type: str | None = None, client_id: str | None = None, client_secret: str | None = None,
                 mature: bool = False, **kwargs):
        if kwargs.get("per_minute") is None:
            # A dev server on this machine has no limits to respect; the real API does.
            local = (urlsplit(base_url).hostname or "") in LOCAL_HOSTS
            kwargs["per_minute"] = 1e9 if local else (AUTHENTICATED_PER_MINUTE if client_id else ANONYMOUS_PER_MINUTE)
        super().__init__(base_url=base_url.rstrip("/") + "/", **kwargs)
        self.licences = [code.lower() for code in licences]
        unknown = [code for code in self.licences if code not in LICENCES]
        if unknown:
            raise ValueError(f"unknown Openverse licence {unknown[0]!r}; one of {sorted(LICENCES)}")
        if licence_type is not None and licence_type not in LICENCE_TYPES:
            raise ValueError(f"unknown Openverse licence type {licence_type!r}; one of {sorted(LICENCE_TYPES)}")
        if bool(client_id) != bool(client_secret):
            raise ValueError("Openverse OAuth needs both client_id and client_secret")
        self.licence_type = licence_type
        self.mature = mature
        self._credentials = (client_id, client_secret) if client_id else None
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = threading.Lock()
        self.max_page_size = AUTHENTICATED_MAX_PAGE_SIZE if client_id else ANONYMOUS_MAX_PAGE_SIZE

    def _auth_headers(self) -> dict:
        if self._credentials is None:
            return {}
        with self._token_lock:
            if self._token is None or time.monotonic() > self._token_expires - 60:
                client_id, client_secret = self._credentials
                response = self.request("POST", self.base_url + "auth_tokens/token/", data={
                    "grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret})
                if response.status_code >= 400:
                    raise ProviderError(self.name, f"token request refused: HTTP {response.status_code} "
                                                   f"{response.text[:200]!r}")
                try:
                    body = response.json()
                except ValueError as exc:
                    raise ProviderError(self.name, "malformed token response: not JSON") from exc
                self._token = require(body, "access_token", str, self.name, "token response")
                self._token_expires = time.monotonic() + float(body.get("expires_in") or 3600)
            return {"Authorization": f"Bearer {self._token}"}

    def search(self, query: str, page: int = 1, page_size: int = 20) -> SearchPage:
        if page < 1:
            raise ValueError(f"page must be >= 1, got {page}")
        limit = AUTHENTICATED_MAX_PAGE_SIZE if self._credentials else ANONYMOUS_MAX_PAGE_SIZE
        if not 1 <= page_size <= limit:
            raise ValueError(f"page_size must be within 1..{limit} ({'with' if self._credentials else 'without'}"
                             f" an OAuth token), got {page_size}")
        if page > MAX_PAGE:
            return SearchPage([], page, MAX_PAGE)
        params: dict = {"q": query, "page": page, "page_size": page_size, "mature": str(self.mature).lower()}
        if self.licences:
            params["license"] = ",".join(self.licences)
        if self.licence_type:
            params["license_type"] = self.licence_type
        body = self.get_json(self.base_url + "images/", params=params, headers=self._auth_headers())
        items = require(body, "results", list, self.name, "search response")
        results = []
        for i, item in enumerate(items):
            url = require(item, "url", str, self.name, f"results[{i}]")
            results.append(SearchResult(
                provider=self.name, query=query, url=url,
                landing_url=item.get("foreign_landing_url"),
                licence=licence_name(item.get("license"), item.get("license_version")),
                licence_url=item.get("license_url"),
                creator=item.get("creator"),
                attribution=item.get("attribution"),
                title=item.get("title"),
                source_id=str(item["id"]) if item.get("id") is not None else None,
                width=item.get("width") if isinstance(item.get("width"), int) else None,
                height=item.get("height") if isinstance(item.get("height"), int) else None,
                extra={"source": item.get("source"), "filetype": item.get("filetype")},
            ))
        page_count = body.get("page_count")
        result_count = body.get("result_count")
        page_count = min(page_count, MAX_PAGE) if isinstance(page_count, int) else None
        return SearchPage(results, page, page_count,
                          result_count if isinstance(result_count, int) else None)
