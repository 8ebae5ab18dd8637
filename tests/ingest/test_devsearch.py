"""The dev server answers Openverse's shape and paging; the real Openverse client reads it."""

from __future__ import annotations

import httpx
import pytest

from labelfree.ingest.devsearch import DevSearch, serve_in_thread
from labelfree.ingest.providers.openverse import OpenverseProvider

OPENVERSE_KEYS = {"id", "title", "foreign_landing_url", "url", "creator", "license", "license_version",
                  "license_url", "provider", "source", "attribution", "thumbnail", "detail_url", "height", "width"}


def test_search_shape_and_paging(devsearch_url):
    body = httpx.get(devsearch_url + "images/", params={"q": "lion", "page": 2, "page_size": 5}).json()
    assert {"result_count", "page_count", "page_size", "page", "results"} <= set(body)
    assert body["result_count"] == 16 and body["page_count"] == 4 and body["page"] == 2
    assert len(body["results"]) == 5 and OPENVERSE_KEYS <= set(body["results"][0])
    assert body["results"][0]["license"] == "by" and body["results"][0]["license_version"] == "4.0"
    image = httpx.get(body["results"][0]["url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    detail = httpx.get(body["results"][0]["detail_url"]).json()
    assert detail["id"] == body["results"][0]["id"]


def test_openverse_client_reads_the_dev_server(devsearch_url):
    provider = OpenverseProvider(base_url=devsearch_url)
    results = list(provider.iter_results("Tiger", pages=3, page_size=4))
    assert len(results) == 6 and all(r.licence == "CC BY 4.0" for r in results)
    assert provider.limiter.interval < 1e-6  # local: no politeness delay


def test_page_size_over_20_needs_a_token(devsearch_url):
    assert httpx.get(devsearch_url + "images/", params={"q": "lion", "page_size": 50}).status_code == 401
    provider = OpenverseProvider(base_url=devsearch_url, client_id="me", client_secret="s3cret")
    assert len(provider.search("lion", page_size=50).results) == 16


def test_licence_filter_and_unknown_query_without_fallback(image_tree):
    server, url = serve_in_thread(DevSearch(image_tree, licence="cc0", licence_version="1.0"))
    try:
        assert httpx.get(url + "images/", params={"q": "lion", "license": "by"}).json()["result_count"] == 0
        assert httpx.get(url + "images/", params={"q": "lion", "license": "by,cc0"}).json()["result_count"] == 16
        assert httpx.get(url + "images/", params={"q": "zebra"}).json()["results"] == []
    finally:
        server.shutdown()


def test_random_words_get_a_stable_per_word_sample_of_the_fallback(devsearch_url):
    def urls(word):
        return [r["url"] for r in httpx.get(devsearch_url + "images/", params={"q": word}).json()["results"]]
    assert urls("teapot") == urls("teapot")
    assert urls("teapot") != urls("harbour")
    assert all("/files/misc/" in u for u in urls("teapot"))


@pytest.mark.parametrize("path", ["/files/../../etc/passwd", "/files/%2e%2e/%2e%2e/etc/passwd", "/files/lion"])
def test_files_outside_the_root_are_not_served(devsearch_url, path):
    base = devsearch_url.removesuffix("/v1/")
    assert httpx.get(base + path).status_code == 404


def test_bad_paging_is_a_400(devsearch_url):
    assert httpx.get(devsearch_url + "images/", params={"q": "lion", "page": 0}).status_code == 400
    assert httpx.get(devsearch_url + "images/", params={"q": "lion", "page": "x"}).status_code == 400
