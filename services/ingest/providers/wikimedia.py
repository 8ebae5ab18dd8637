"""Wikimedia Commons client: the MediaWiki action API with ``generator=search`` over files.

One request gives a page of File: pages (namespace 6) with ``imageinfo``: the URL, size,
MIME type, and ``extmetadata`` with the licence and author. Wikimedia asks for a
descriptive User-Agent, serial requests, and ``maxlag`` so busy replicas can shed bots.
"""

from __future__ import annotations

import html
import re

from labelfree.ingest.providers.base import (
    Provider, ProviderError, SearchPage, SearchResult, parse_retry_after, require,
)

DEFAULT_BASE_URL = "https://commons.wikimedia.org/w/api.php"
MAX_LIMIT = 50  # gsrlimit for clients without the apihighlimits right
BITMAP_MIMES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/tiff")
_TAG = re.compile(r"<[^>]+>")


def plain_text(value: str | None) -> str | None:
    """extmetadata values are HTML snippets (``<a href=...>Name</a>``); keep the text."""
    if not value:
        return None
    text = html.unescape(_TAG.sub("", value)).strip()
    return re.sub(r"\s+", " ", text) or None


def _meta(ext: dict, key: str) -> str | None:
    entry = ext.get(key)
    value = entry.get("value") if isinstance(entry, dict) else None
    return value if isinstance(value, str) else None


class WikimediaProvider(Provider):
    name = "wikimedia"
    default_per_minute = 100.0
    max_page_size = MAX_LIMIT

    def __init__(self, *, base_url: str = DEFAULT_BASE_URL, thumb_width: int = 1024, **kwargs):
        super().__init__(base_url=base_url, **kwargs)
        if thumb_width < 16:
            raise ValueError(f"thumb_width must be >= 16, got {thumb_width}")
        self.thumb_width = thumb_width

    def search(self, query: str, page: int = 1, page_size: int = MAX_LIMIT) -> SearchPage:
        if page < 1:
            raise ValueError(f"page must be >= 1, got {page}")
        if not 1 <= page_size <= MAX_LIMIT:
            raise ValueError(f"page_size must be within 1..{MAX_LIMIT}, got {page_size}")
        params = {
            "action": "query", "format": "json", "formatversion": "2", "maxlag": "5",
            "generator": "search", "gsrsearch": f"{query} filetype:bitmap", "gsrnamespace": "6",
            "gsrlimit": str(page_size), "gsroffset": str((page - 1) * page_size),
            "prop": "imageinfo", "iiprop": "url|size|mime|extmetadata", "iiurlwidth": str(self.thumb_width),
            "iiextmetadatafilter": "LicenseShortName|LicenseUrl|Artist|Credit|UsageTerms|Attribution|ObjectName",
        }
        for attempt in range(self.max_retries + 1):
            response = self.request("GET", self.base_url, params=params)
            if response.status_code >= 400:
                raise ProviderError(self.name, f"HTTP {response.status_code} from {response.url}")
            try:
                body = response.json()
            except ValueError as exc:
                raise ProviderError(self.name, f"malformed response: not JSON ({response.text[:120]!r})") from exc
            error = body.get("error") if isinstance(body, dict) else None
            if isinstance(error, dict) and error.get("code") == "maxlag" and attempt < self.max_retries:
                # Replicas lagging: the API answers 200 with an error and a Retry-After.
                self.limiter.pause(parse_retry_after(response.headers.get("Retry-After"), 5.0))
                continue
            if error is not None:
                raise ProviderError(self.name, f"API error {error!r}"[:300])
            break
        if not isinstance(body, dict):
            raise ProviderError(self.name, "malformed response: not a JSON object")
        query_part = body.get("query")
        if query_part is None:  # no hits: MediaWiki omits "query" entirely
            return SearchPage([], page, page, 0)
        pages = require(query_part, "pages", list, self.name, "query")
        results = []
        for i, item in enumerate(sorted(pages, key=lambda p: p.get("index", 0) if isinstance(p, dict) else 0)):
            infos = require(item, "imageinfo", list, self.name, f"query.pages[{i}]") if "imageinfo" in item else []
            if not infos:
                continue  # missing or deleted file
            info = infos[0]
            mime = info.get("mime", "")
            if mime not in BITMAP_MIMES:
                continue
            url = info.get("thumburl") or require(info, "url", str, self.name, f"query.pages[{i}].imageinfo[0]")
            ext = info.get("extmetadata") or {}
            creator = plain_text(_meta(ext, "Artist"))
            licence = plain_text(_meta(ext, "LicenseShortName"))
            title = item.get("title")
            results.append(SearchResult(
                provider=self.name, query=query, url=url, landing_url=info.get("descriptionurl"),
                licence=licence, licence_url=_meta(ext, "LicenseUrl"), creator=creator,
                attribution=plain_text(_meta(ext, "Attribution")) or ", ".join(
                    p for p in (creator, licence, "via Wikimedia Commons") if p),
                title=title, source_id=str(item.get("pageid")) if item.get("pageid") is not None else None,
                width=info.get("thumbwidth") or info.get("width"), height=info.get("thumbheight") or info.get("height"),
                extra={"mime": mime, "original_url": info.get("url")},
            ))
        more = isinstance(body.get("continue"), dict) and "gsroffset" in body["continue"]
        return SearchPage(results, page, None if more else page)
