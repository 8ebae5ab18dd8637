"""Local folders as a search provider: a user's own photos, and the tree the dev server serves.

A query maps to a sub-folder: an explicit alias (``lion=lion/pool``), a relative path
(``bigcats/tiger``), or any folder whose name matches the query with case, spaces, ``-``
and ``_`` ignored (``snow leopard`` -> ``bigcats/snow_leopard``). Images under it are
listed recursively in sorted order. A query that matches no folder gets either nothing
or, when ``fallback`` folders are given, a sample of them chosen by the query's hash
(stands in for a web search that always finds *something* for a random word).
"""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from labelfree.core.images import IMAGE_SUFFIXES
from labelfree.ingest.providers.base import Provider, SearchPage, SearchResult

USER_LICENCE = "user-supplied"


def slug(text: str) -> str:
    """Case, whitespace, ``-`` and ``_`` folded: ``Snow-Leopard`` -> ``snow_leopard``."""
    return re.sub(r"[\s_\-]+", "_", text.strip().lower()).strip("_")


class FolderIndex:
    """Resolves queries to image files under ``root``; thread-safe, lists each folder once."""

    def __init__(self, root: str | Path, *, aliases: Mapping[str, str] | None = None,
                 fallback: Iterable[str] = ()):
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise ValueError(f"root {str(root)!r} is not a directory")
        self.aliases = {slug(k): v for k, v in (aliases or {}).items()}
        self.fallback = [self._inside(f) for f in fallback]
        for folder in self.fallback:
            if not folder.is_dir():
                raise ValueError(f"fallback folder {str(folder)!r} is not a directory")
        for query, target in self.aliases.items():
            if not self._inside(target).is_dir():
                raise ValueError(f"alias {query!r} -> {target!r}: not a folder under {self.root}")
        self._names: dict[str, list[Path]] | None = None
        self._files: dict[Path, list[Path]] = {}
        self._lock = threading.Lock()

    def _inside(self, relative: str | Path) -> Path:
        path = (self.root / relative).resolve()
        if path != self.root and self.root not in path.parents:
            raise ValueError(f"{str(relative)!r} points outside {self.root}")
        return path

    def _folder_names(self) -> dict[str, list[Path]]:
        if self._names is None:
            names: dict[str, list[Path]] = {}
            dirs = [p for p in self.root.rglob("*") if p.is_dir()]
            for path in sorted(dirs, key=lambda p: (len(p.parts), str(p))):  # shallowest first
                names.setdefault(slug(path.name), []).append(path)
            self._names = names
        return self._names

    def files(self, folder: Path) -> list[Path]:
        with self._lock:
            if folder not in self._files:
                self._files[folder] = sorted(
                    p for p in folder.rglob("*")
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
            return self._files[folder]

    def folder_for(self, query: str) -> Path | None:
        """The folder a query maps to, or None."""
        key = slug(query)
        if not key:
            return None
        if key in self.aliases:
            return self._inside(self.aliases[key])
        if "/" in query and ".." not in Path(query).parts:
            try:
                candidate = self._inside(query.strip().strip("/"))
            except ValueError:
                return None
            if candidate.is_dir():
                return candidate
        with self._lock:
            matches = self._folder_names().get(key)
        return matches[0] if matches else None

    def match(self, query: str) -> tuple[list[Path], bool]:
        """``(files, matched)``: the query's files, or a per-query sample of the fallback pool."""
        folder = self.folder_for(query)
        if folder is not None:
            return self.files(folder), True
        if not self.fallback:
            return [], False
        pool = [p for f in self.fallback for p in self.files(f)]
        seed = int.from_bytes(hashlib.sha256(slug(query).encode()).digest()[:8], "big")
        order = np.random.default_rng(seed).permutation(len(pool))
        return [pool[i] for i in order], False


class LocalDirProvider(Provider):
    """Photos from a folder tree; results carry ``file://`` URLs that the downloader reads directly."""

    name = "dir"
    default_per_minute = 1e9  # no remote service to be polite to

    def __init__(self, root: str | Path, *, aliases: Mapping[str, str] | None = None,
                 fallback: Iterable[str] = (), licence: str = USER_LICENCE):
        super().__init__(base_url=Path(root).expanduser().resolve().as_uri())
        self.index = FolderIndex(root, aliases=aliases, fallback=fallback)
        self.licence = licence

    def search(self, query: str, page: int = 1, page_size: int = 100) -> SearchPage:
        if page < 1:
            raise ValueError(f"page must be >= 1, got {page}")
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        files, _ = self.index.match(query)
        chunk = files[(page - 1) * page_size: page * page_size]
        results = [SearchResult(provider=self.name, query=query, url=p.as_uri(), landing_url=p.as_uri(),
                                licence=self.licence, title=p.name,
                                source_id=p.relative_to(self.index.root).as_posix()) for p in chunk]
        page_count = max(1, -(-len(files) // page_size))
        return SearchPage(results, page, page_count, len(files))
