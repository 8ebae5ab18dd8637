"""An Openverse-compatible search server over a folder tree, for tests and offline demos.

It stands in for the internet only: the production Openverse client talks to it unchanged.
``GET /v1/images/?q=&page=&page_size=&license=`` answers Openverse's JSON shape and paging
(anonymous page_size <= 20; a bearer token from ``POST /v1/auth_tokens/token/`` allows 500),
``GET /v1/images/<id>/`` one result, and ``GET /files/<path>`` the image bytes. Queries map
to sub-folders as :class:`~labelfree.ingest.providers.localdir.FolderIndex` describes.
"""

from __future__ import annotations

import json
import math
import mimetypes
import secrets
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import parse_qs, quote, unquote, urlsplit

from labelfree.ingest.providers.localdir import FolderIndex
from labelfree.ingest.providers.openverse import ANONYMOUS_MAX_PAGE_SIZE, AUTHENTICATED_MAX_PAGE_SIZE, licence_name

LICENCE_URLS = {"cc0": "https://creativecommons.org/publicdomain/zero/1.0/",
                "pdm": "https://creativecommons.org/publicdomain/mark/1.0/"}


class DevSearch:
    """The search logic, separate from HTTP so it is easy to read and test."""

    def __init__(self, root: str | Path, *, aliases: Mapping[str, str] | None = None,
                 fallback: Iterable[str] = (), licence: str = "by", licence_version: str = "4.0",
                 creator: str | None = None):
        self.index = FolderIndex(root, aliases=aliases, fallback=fallback)
        self.licence = licence.lower()
        self.licence_version = licence_version
        self.creator = creator
        self.tokens: set[str] = set()
        self._by_id: dict[str, Path] = {}
        self._lock = threading.Lock()

    def licence_url(self) -> str:
        return LICENCE_URLS.get(self.licence, f"https://creativecommons.org/licenses/{self.licence}/"
                                              f"{self.licence_version}/")

    def result(self, path: Path, base: str) -> dict:
        rel = path.relative_to(self.index.root).as_posix()
        image_id = str(uuid.uuid5(uuid.NAMESPACE_URL, rel))
        with self._lock:
            self._by_id[image_id] = path
        url = f"{base}/files/{quote(rel)}"
        title = path.stem
        creator = self.creator or path.parent.name
        name = licence_name(self.licence, self.licence_version)
        return {
            "id": image_id, "title": title, "indexed_on": "2026-01-01T00:00:00Z",
            "foreign_landing_url": f"{base}/v1/images/{image_id}/", "url": url,
            "creator": creator, "creator_url": None, "license": self.licence,
            "license_version": self.licence_version, "license_url": self.licence_url(),
            "provider": "devsearch", "source": "devsearch", "category": "photograph", "genre": None,
            "filesize": None, "filetype": path.suffix.lstrip(".").lower() or None, "tags": [],
            "alt_files": None,
            "attribution": f'"{title}" by {creator} is licensed under {name}. '
                           f"To view a copy of this license, visit {self.licence_url()}.",
            "fields_matched": ["title"], "mature": False, "height": None, "width": None,
            "thumbnail": url, "detail_url": f"{base}/v1/images/{image_id}/",
            "related_url": f"{base}/v1/images/{image_id}/related/", "unstable__sensitivity": [],
        }

    def search(self, params: dict[str, str], base: str, authenticated: bool) -> tuple[int, dict]:
        limit = AUTHENTICATED_MAX_PAGE_SIZE if authenticated else ANONYMOUS_MAX_PAGE_SIZE
        try:
            page = int(params.get("page", "1"))
            page_size = int(params.get("page_size", "20"))
        except ValueError:
            return 400, {"error": "InputError", "detail": "page and page_size must be integers",
                         "fields": ["page", "page_size"]}
        if page < 1 or not 1 <= page_size <= limit:
            return (401 if page_size > limit and not authenticated else 400), {
                "error": "InputError", "fields": ["page_size"],
                "detail": f"page must be >= 1 and page_size within 1..{limit}"}
        query = params.get("q", "")
        files, _ = self.index.match(query) if query.strip() else ([], False)
        wanted = {c.strip().lower() for c in params.get("license", "").split(",") if c.strip()}
        if wanted and self.licence not in wanted:
            files = []
        count = len(files)
        page_count = math.ceil(count / page_size) if count else 0
        chunk = files[(page - 1) * page_size: page * page_size]
        return 200, {"result_count": count, "page_count": page_count, "page_size": page_size, "page": page,
                     "results": [self.result(p, base) for p in chunk], "warnings": []}

    def path_for_id(self, image_id: str) -> Path | None:
        with self._lock:
            return self._by_id.get(image_id)


def _handler(search: DevSearch):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the client reuses connections
        # Headers and body go out in two writes; with Nagle on, the body waits for the
        # client's delayed ACK (~40 ms) on every keep-alive request.
        disable_nagle_algorithm = True

        def log_message(self, fmt, *args):  # quiet by default; the CLI prints one line at start
            pass

        def _base(self) -> str:
            return f"http://{self.headers.get('Host') or '%s:%d' % self.server.server_address[:2]}"

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, payload: dict) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            parts = urlsplit(self.path)
            path = unquote(parts.path)
            params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            auth = self.headers.get("Authorization", "")
            authenticated = auth.startswith("Bearer ") and auth[7:] in search.tokens
            if path in ("/v1/images", "/v1/images/"):
                status, payload = search.search(params, self._base(), authenticated)
                return self._json(status, payload)
            if path.startswith("/v1/images/"):
                image_id = path[len("/v1/images/"):].strip("/")
                found = search.path_for_id(image_id)
                if found is None:
                    return self._json(404, {"detail": "Not found."})
                return self._json(200, search.result(found, self._base()))
            if path.startswith("/files/"):
                try:
                    target = search.index._inside(path[len("/files/"):])
                except ValueError:
                    return self._json(404, {"detail": "Not found."})
                if not target.is_file():
                    return self._json(404, {"detail": "Not found."})
                ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
                return self._send(200, target.read_bytes(), ctype)
            if path in ("/", "/healthz"):
                return self._json(200, {"status": "ok", "root": str(search.index.root)})
            return self._json(404, {"detail": "Not found."})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
            if urlsplit(self.path).path.rstrip("/") == "/v1/auth_tokens/token":
                form = {k: v[-1] for k, v in parse_qs(body).items()}
                if form.get("grant_type") != "client_credentials" or not form.get("client_id") \
                        or not form.get("client_secret"):
                    return self._json(400, {"error": "invalid_client"})
                token = secrets.token_urlsafe(24)
                search.tokens.add(token)
                return self._json(200, {"access_token": token, "token_type": "Bearer", "expires_in": 36000,
                                        "scope": "read write"})
            return self._json(404, {"detail": "Not found."})

    return Handler


class DevSearchServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def make_server(search: DevSearch, host: str = "127.0.0.1", port: int = 0) -> DevSearchServer:
    """Bind (port 0 picks a free one); call ``serve_forever`` or :func:`serve_in_thread`."""
    return DevSearchServer((host, port), _handler(search))


def serve_in_thread(search: DevSearch, host: str = "127.0.0.1", port: int = 0) -> tuple[DevSearchServer, str]:
    """Start a server on a daemon thread; returns it and its Openverse base URL (``.../v1/``)."""
    server = make_server(search, host, port)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True, name="devsearch").start()
    return server, f"http://{host}:{server.server_address[1]}/v1/"
