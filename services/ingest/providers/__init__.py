"""Search providers. ``make_provider(name, **options)`` builds one by name."""

from __future__ import annotations

from typing import Any

from labelfree.ingest.providers.base import Provider, ProviderError, RateLimiter, SearchPage, SearchResult

PROVIDERS = ("openverse", "inaturalist", "wikimedia", "dir")


def make_provider(name: str, **options: Any) -> Provider:
    """A provider by name. Options are the provider's keyword arguments (``base_url``, ``root``...)."""
    if name == "openverse":
        from labelfree.ingest.providers.openverse import OpenverseProvider

        return OpenverseProvider(**options)
    if name == "inaturalist":
        from labelfree.ingest.providers.inaturalist import INaturalistProvider

        return INaturalistProvider(**options)
    if name == "wikimedia":
        from labelfree.ingest.providers.wikimedia import WikimediaProvider

        return WikimediaProvider(**options)
    if name == "dir":
        from labelfree.ingest.providers.localdir import LocalDirProvider

        if "root" not in options:
            raise ValueError("the dir provider needs a root folder (--dir)")
        return LocalDirProvider(**options)
    raise ValueError(f"unknown provider {name!r}; one of {PROVIDERS}")


__all__ = ["PROVIDERS", "Provider", "ProviderError", "RateLimiter", "SearchPage", "SearchResult", "make_provider"]
