"""Downloader: retries with backoff, byte caps, sniffing, per-host limits, file URLs."""

from __future__ import annotations

import threading
import time

import pytest

from labelfree.ingest.download import DownloadConfig, Downloader, DownloadError, map_concurrently, sniff_image_type
from tests.ingest.conftest import photo


def _downloader(**kw) -> Downloader:
    waits: list[float] = []
    d = Downloader(DownloadConfig(**{"timeout": 5.0, "backoff": 0.01, **kw}), sleep=waits.append)
    d.waits = waits
    return d


def test_retries_5xx_and_429_then_succeeds(scripted):
    jpeg = photo(1)
    scripted.routes["/a.jpg"] = [(503, {}, b""), (429, {"Retry-After": "2"}, b""), (200, {}, jpeg)]
    with _downloader() as d:
        data, mime = d.fetch(scripted.url + "/a.jpg")
    assert data == jpeg and mime == "image/jpeg"
    assert d.waits == [0.01, 2.0]  # exponential backoff, then the server's Retry-After


def test_gives_up_after_retries_with_the_last_reason(scripted):
    scripted.routes["/a.jpg"] = [(502, {}, b"")]
    with _downloader(retries=2) as d, pytest.raises(DownloadError) as info:
        d.fetch(scripted.url + "/a.jpg")
    assert info.value.reason == "http_502" and len(scripted.calls("/a.jpg")) == 3


def test_client_errors_are_not_retried(scripted):
    with _downloader() as d, pytest.raises(DownloadError) as info:
        d.fetch(scripted.url + "/missing.jpg")
    assert info.value.reason == "http_404" and len(scripted.calls("/missing.jpg")) == 1


def test_max_bytes_on_declared_and_streamed_length(scripted):
    big = photo(2, size=256)
    scripted.routes["/big.jpg"] = [(200, {}, big)]
    with _downloader(max_bytes=len(big) - 1) as d, pytest.raises(DownloadError) as info:
        d.fetch(scripted.url + "/big.jpg")
    assert info.value.reason == "too_large"



def test_content_is_sniffed_not_trusted(scripted):
    scripted.routes["/page.jpg"] = [(200, {"Content-Type": "image/jpeg"}, b"<!doctype html><p>moved</p>")]
    scripted.routes["/real"] = [(200, {"Content-Type": "text/plain"}, photo(3, fmt="PNG"))]
    with _downloader() as d:
        with pytest.raises(DownloadError) as info:
            d.fetch(scripted.url + "/page.jpg")
        assert info.value.reason == "not_an_image"
        assert d.fetch(scripted.url + "/real")[1] == "image/png"


def test_timeout_is_a_retryable_failure(scripted):
    def slow(path, params, headers):
        time.sleep(0.6)
        return 200, {}, photo(4)
    scripted.routes["/slow.jpg"] = [slow]
    with _downloader(timeout=0.2, retries=1) as d, pytest.raises(DownloadError) as info:
        d.fetch(scripted.url + "/slow.jpg")
    assert info.value.reason == "timeout" and len(d.waits) == 1


def test_per_host_concurrency_is_limited(scripted):
    active, peak, lock = [0], [0], threading.Lock()

    def tracked(path, params, headers):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return 200, {}, photo(5)
    scripted.routes["/t.jpg"] = [tracked]
    urls = [f"{scripted.url}/t.jpg?i={i}" for i in range(12)]
    with _downloader(per_host=2, workers=8) as d:
        results = list(map_concurrently(d.fetch, urls, workers=8))
    assert len(results) == 12 and peak[0] == 2


def test_file_urls_and_bad_schemes(tmp_path):
    path = tmp_path / "ü photo.jpg"
    path.write_bytes(photo(6))
    with _downloader() as d:
        assert d.fetch(path.as_uri())[1] == "image/jpeg"
        with pytest.raises(DownloadError, match="missing"):
            d.fetch((tmp_path / "nope.jpg").as_uri())
        with pytest.raises(DownloadError, match="bad_url"):
            d.fetch("ftp://example.org/x.jpg")


@pytest.mark.parametrize("data, mime", [
    (b"\xff\xd8\xff\xe0rest", "image/jpeg"), (b"\x89PNG\r\n\x1a\nrest", "image/png"), (b"GIF89a...", "image/gif"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"), (b"II*\x00", "image/tiff"), (b"<html>", None), (b"", None),
])
def test_sniff_image_type(data, mime):
    assert sniff_image_type(data) == mime


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="per_host"):
        DownloadConfig(per_host=0)
