"""iNaturalist observations API client: taxon-verified positives.

Research-grade observations only by default (the community agreed on the species), with
openly licensed photos. iNaturalist asks API users to stay at or under 60 requests a
minute; the limiter enforces one request a second per client.
"""

from __future__ import annotations

import math
import re
from typing import Iterable

from labelfree.ingest.providers.base import Provider, ProviderError, SearchPage, SearchResult, require

DEFAULT_BASE_URL = "https://api.inaturalist.org/v1/"
MAX_PER_PAGE = 200
MAX_RESULT_WINDOW = 10_000  # the API refuses page * per_page beyond this
OPEN_LICENCES = ("cc0", "cc-by", "cc-by-sa", "cc-by-nc", "cc-by-nc-sa", "cc-by-nd", "cc-by-nc-nd")
PHOTO_SIZES = ("square", "small", "medium", "large", "original")
QUALITY_GRADES = ("research", "needs_id", "casual")


def licence_name(code: str | None) -> str | None:
    """``cc-by-nc`` -> ``CC BY-NC``; ``cc0`` -> ``CC0``."""
    if not code:
        return None
    code = code.lower()
    return "CC0" if code == "cc0" else "CC " + code.removeprefix("cc-").upper()


def licence_url(code: str | None) -> str | None:
    if not code:
        return None
    code = code.lower()
    if code == "cc0":
        return "https://creativecommons.org/publicdomain/zero/1.0/"
    return f"https://creativecommons.org/licenses/{code.removeprefix('cc-')}/4.0/"


class INaturalistProvider(Provider):
    name = "inaturalist"
    default_per_minute = 60.0
    max_page_size = MAX_PER_PAGE

    def __init__(self, *, base_url: str = DEFAULT_BASE_URL, quality_grade: str = "research",
                 licences: Iterable[str] = OPEN_LICENCES, photo_size: str = "medium",
                 photos_per_observation: int = 1, **kwargs):
        per_minute = kwargs.pop("per_minute", None) or self.default_per_minute
        super().__init__(base_url=base_url.rstrip("/") + "/", per_minute=per_minute, **kwargs)
        if quality_grade not in QUALITY_GRADES:
            raise ValueError(f"unknown quality_grade {quality_grade!r}; one of {QUALITY_GRADES}")
        if photo_size not in PHOTO_SIZES:
            raise ValueError(f"unknown photo_size {photo_size!r}; one of {PHOTO_SIZES}")
        if photos_per_observation < 1:
            raise ValueError(f"photos_per_observation must be >= 1, got {photos_per_observation}")
        self.quality_grade = quality_grade
        self.licences = [code.lower() for code in licences]
        self.photo_size = photo_size
        self.photos_per_observation = photos_per_observation

    def _photo_url(self, url: str) -> str:
        # The API returns the "square" (75 px) rendition; the size is a path component.
        return re.sub(r"/(square|small|medium|large|original|thumb)\.", f"/{self.photo_size}.", url, count=1)

    def search(self, query: str, page: int = 1, page_size: int = MAX_PER_PAGE) -> SearchPage:
        if page < 1:
            raise ValueError(f"page must be >= 1, got {page}")
        if not 1 <= page_size <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be within 1..{MAX_PER_PAGE}, got {page_size}")
        if page * page_size > MAX_RESULT_WINDOW:
            return SearchPage([], page, page - 1)
        params = {"taxon_name": query, "quality_grade": self.quality_grade, "photos": "true",
                  "per_page": page_size, "page": page, "order_by": "votes", "locale": "en"}
        if self.licences:
            params["photo_license"] = ",".join(self.licences)
        body = self.get_json(self.base_url + "observations", params=params)
        observations = require(body, "results", list, self.name, "observations response")
        results = []
        for i, obs in enumerate(observations):
            photos = require(obs, "photos", list, self.name, f"results[{i}]")
            user = obs.get("user") or {}
            creator = user.get("name") or user.get("login")
            taxon = obs.get("taxon") or {}
            for j, photo in enumerate(photos[: self.photos_per_observation]):
                url = require(photo, "url", str, self.name, f"results[{i}].photos[{j}]")
                code = photo.get("license_code")
                if self.licences and (code or "").lower() not in self.licences:
                    continue  # the observation matched, this photo's licence did not
                dims = photo.get("original_dimensions") or {}
                results.append(SearchResult(
                    provider=self.name, query=query, url=self._photo_url(url),
                    landing_url=obs.get("uri") or (f"https://www.inaturalist.org/observations/{obs['id']}"
                                                   if obs.get("id") is not None else None),
                    licence=licence_name(code), licence_url=licence_url(code), creator=creator,
                    attribution=photo.get("attribution"), title=taxon.get("preferred_common_name") or taxon.get("name"),
                    source_id=str(photo.get("id")) if photo.get("id") is not None else None,
                    width=dims.get("width"), height=dims.get("height"),
                    extra={"observation_id": obs.get("id"), "taxon": taxon.get("name"),
                           "quality_grade": obs.get("quality_grade")},
                ))
        total = body.get("total_results")
        if total is not None and not isinstance(total, int):
            raise ProviderError(self.name, f"malformed response: total_results is {type(total).__name__}")
        page_count = None
        if isinstance(total, int):
            page_count = min(math.ceil(total / page_size), MAX_RESULT_WINDOW // page_size)
        return SearchPage(results, page, page_count, total)
