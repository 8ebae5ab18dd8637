"""Fixtures for ingest tests: synthetic photo trees, a dev search server, a scripted HTTP server."""

from __future__ import annotations

import io
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image

RECORDED = Path(__file__).parent / "recorded"


def photo(seed: int, size: int = 96, *, quality: int = 90, exif: Image.Exif | None = None, fmt: str = "JPEG") -> bytes:
    """A smooth random picture (8x8 noise upscaled): distinct seeds give distinct pHashes."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    img = small.resize((size, size), Image.BICUBIC)
    buf = io.BytesIO()
    kwargs = {"quality": quality} if fmt == "JPEG" else {}
    if exif is not None:
        kwargs["exif"] = exif
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def gps_exif(orientation: int | None = None) -> Image.Exif:
    """EXIF with a GPS position, a capture time and a camera."""
    exif = Image.Exif()
    exif[0x010F] = "Reconyx"
    exif[0x0110] = "HyperFire 2"
    if orientation:
        exif[0x0112] = orientation
    exif.get_ifd(0x8769)[0x9003] = "2024:07:15 05:42:10"
    gps = exif.get_ifd(0x8825)
    gps.update({1: "S", 2: (2.0, 19.0, 55.5), 3: "E", 4: (34.0, 50.0, 1.25)})
    return exif


@pytest.fixture
def image_tree(tmp_path) -> Path:
    """lion/ (12 photos, one exact and one near duplicate, one with GPS, one broken, one tiny),
    tiger/ (6 photos, one also in lion/: a conflict), misc/ (10 photos for random words)."""
    root = tmp_path / "tree"
    for name in ("lion", "tiger", "misc"):
        (root / name).mkdir(parents=True)
    for i in range(10):
        (root / "lion" / f"lion_{i:02d}.jpg").write_bytes(photo(i))
    shutil.copy(root / "lion" / "lion_00.jpg", root / "lion" / "lion_00_copy.jpg")  # exact duplicate
    (root / "lion" / "lion_01_q60.jpg").write_bytes(photo(1, quality=60))  # near duplicate
    (root / "lion" / "lion_gps.jpg").write_bytes(photo(50, exif=gps_exif()))
    (root / "lion" / "lion_zz_broken.jpg").write_bytes(photo(51)[:400])  # truncated
    (root / "lion" / "lion_zz_tiny.jpg").write_bytes(photo(52, size=16))
    (root / "lion" / "lion_zz_html.jpg").write_bytes(b"<html><body>not found</body></html>")
    for i in range(5):
        (root / "tiger" / f"tiger_{i}.jpg").write_bytes(photo(100 + i))
    shutil.copy(root / "lion" / "lion_05.jpg", root / "tiger" / "tiger_lion.jpg")  # conflict
    for i in range(10):
        (root / "misc" / f"misc_{i}.png").write_bytes(photo(200 + i, fmt="PNG"))
    return root


@pytest.fixture
def devsearch_url(image_tree):
    from labelfree.ingest.devsearch import DevSearch, serve_in_thread

    server, url = serve_in_thread(DevSearch(image_tree, fallback=["misc"]))
    yield url
    server.shutdown()
    server.server_close()


Route = Callable[[str, dict, dict], tuple[int, dict, bytes]]


class ScriptedServer:
    """A local HTTP server standing in for a remote API. ``routes[path]`` is a list of
    responses served in turn (the last one repeats); each is ``(status, headers, body)``
    or a callable ``(path, params, headers) -> (status, headers, body)``. Requests are logged."""

    def __init__(self):
        self.routes: dict[str, list] = {}
        self.requests: list[tuple[str, str, dict, dict]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self):
                parts = urlsplit(self.path)
                params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    params.update({k: v[-1] for k, v in parse_qs(self.rfile.read(length).decode()).items()})
                owner.requests.append((self.command, parts.path, params, dict(self.headers)))
                queue = owner.routes.get(parts.path)
                if not queue:
                    status, headers, body = 404, {}, b"{}"
                else:
                    item = queue.pop(0) if len(queue) > 1 else queue[0]
                    status, headers, body = item(parts.path, params, dict(self.headers)) if callable(item) else item
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def calls(self, path: str) -> list[dict]:
        return [params for _, p, params, _ in self.requests if p == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def json_response(payload, status: int = 200, headers: dict | None = None) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(payload).encode()


def recorded(name: str) -> dict:
    return json.loads((RECORDED / name).read_text())


@pytest.fixture
def scripted():
    server = ScriptedServer()
    yield server
    server.close()
