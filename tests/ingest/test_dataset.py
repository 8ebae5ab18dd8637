"""The pure dataset pipeline against the dev server: labels, GPS-free bytes, dedupe, failures."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from labelfree.core.errors import LabelfreeError
from labelfree.ingest.dataset import DatasetRequest, build_dataset, plan_queries, random_words
from labelfree.ingest.download import DownloadConfig, Downloader
from labelfree.ingest.providers.openverse import OpenverseProvider


def _build(url, request, provider=None, **kw):
    stored: dict[str, bytes] = {}

    def sink(image):
        stored[image.sha256] = image.data
        return f"mem/{image.sha256}{image.suffix}"

    progress: list[float] = []
    with Downloader(DownloadConfig(workers=4)) as downloader:
        result = build_dataset(request, provider or OpenverseProvider(base_url=url), downloader=downloader, sink=sink,
                               rng=np.random.default_rng(0), progress=progress.append, **kw)
    return result, stored, progress


def test_build_labels_dedupes_and_counts_failures(devsearch_url):
    request = DatasetRequest("lion", positive_pages=2, page_size=10, hard_negatives=("tiger",),
                             random_words=2, per_word=3, min_side=32)
    result, stored, progress = _build(devsearch_url, request)
    s = result.summary
    assert s["found"] == {"positive": 16, "negative": 12}
    assert s["failures"] == {"undecodable": 1, "too_small": 1, "not_an_image": 1}
    # lion_00_copy is exact, lion_01_q60 near; lion_05 also under "tiger": both copies dropped
    assert s["duplicates"] == {"urls": 0, "exact_duplicates": 1, "near_duplicates": 1, "conflict_groups": 1,
                               "conflict_images": 2}
    assert s["labels"] == {"positive": 10, "negative": 11}
    assert s["licences"] == {"CC BY 4.0": 21}
    assert s["queries"]["tiger"] == 5 and len(result.words) == 2
    assert sum(v for k, v in s["queries"].items() if k in result.words) == 6
    assert progress[-1] == 1.0 and progress == sorted(progress)
    names = {img.source_url.rsplit("/", 1)[-1] for img in result.images}
    assert "lion_05.jpg" not in names and "tiger_lion.jpg" not in names and "lion_00.jpg" in names
    row = result.images[0].manifest_row()
    assert set(row) >= {"sha256", "label", "query", "provider", "source_url", "landing_url", "licence", "creator",
                        "width", "height", "phash"}


def test_stored_bytes_carry_no_gps(devsearch_url):
    result, stored, _ = _build(devsearch_url, DatasetRequest("lion", positive_pages=1, page_size=20, min_side=32))
    gps_image = next(img for img in result.images if img.source_url.endswith("lion_gps.jpg"))
    assert gps_image.camera_make == "Reconyx" and gps_image.captured_at is not None
    for data in stored.values():
        exif = Image.open(io.BytesIO(data)).getexif()
        assert 0x8825 not in exif and not exif.get_ifd(0x8825)


def test_unreachable_positive_search_fails_but_negative_search_is_counted(devsearch_url):
    only_cc0 = OpenverseProvider(base_url=devsearch_url, licences=["cc0"])  # the server says CC BY
    with pytest.raises(LabelfreeError, match="no results for 'lion'"):
        _build(devsearch_url, DatasetRequest("lion"), provider=only_cc0)
    dead = OpenverseProvider(base_url="http://127.0.0.1:9/v1/")
    result, _, _ = _build(devsearch_url, DatasetRequest("lion", hard_negatives=("tiger",), min_side=32),
                          negative_provider=dead)
    assert result.summary["failures"]["search_failed"] == 1


def test_random_words_are_seeded_nouns_without_the_query():
    a = random_words(20, np.random.default_rng(7), exclude=["cat"])
    assert a == random_words(20, np.random.default_rng(7), exclude=["cat"])
    assert len(set(a)) == 20 and not any("cat" in w for w in a)
    assert a != random_words(20, np.random.default_rng(8), exclude=["cat"])


def test_plan_and_request_validation():
    request = DatasetRequest("lion", positive_pages=3, page_size=20, random_words=2, per_word=30,
                             hard_negatives=("goat",))
    assert plan_queries(request, ["pen", "cup"]) == [("positive", "lion", 3, None), ("negative", "goat", 1, None),
                                                     ("negative", "pen", 2, 30), ("negative", "cup", 2, 30)]
    with pytest.raises(ValueError, match="query"):
        DatasetRequest(" ")
    with pytest.raises(ValueError, match="random_words and per_word"):
        DatasetRequest("lion", random_words=3)


def test_same_url_under_positive_and_negative_queries_is_dropped_from_both(image_tree):
    from labelfree.ingest.providers.localdir import LocalDirProvider

    provider = LocalDirProvider(image_tree, aliases={"big cat": "tiger", "striped lion": "tiger"})
    request = DatasetRequest("big cat", hard_negatives=("striped lion",), min_side=32)
    with Downloader(DownloadConfig(workers=2)) as downloader:
        result = build_dataset(request, provider, downloader=downloader, rng=np.random.default_rng(0))
    d = result.summary["duplicates"]
    assert result.images == [] and d["conflict_groups"] == 6 and d["conflict_images"] == 12


def test_cancellation_from_progress_stops_without_waiting_for_every_download(devsearch_url):
    class Cancelled(Exception):
        pass

    calls = []

    def progress(fraction):
        calls.append(fraction)
        if fraction > 0.1:
            raise Cancelled()

    request = DatasetRequest("lion", positive_pages=1, page_size=20, random_words=5, per_word=10, min_side=32)
    with Downloader(DownloadConfig(workers=1)) as downloader:
        with pytest.raises(Cancelled):
            build_dataset(request, OpenverseProvider(base_url=devsearch_url), downloader=downloader,
                          rng=np.random.default_rng(0), progress=progress)
    assert calls[-1] > 0.1
