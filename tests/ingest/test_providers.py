"""Each provider client against recorded response shapes served by a local HTTP server."""

from __future__ import annotations

import json

import pytest

from labelfree.ingest.providers import ProviderError, RateLimiter, make_provider
from labelfree.ingest.providers.base import parse_retry_after
from labelfree.ingest.providers.inaturalist import INaturalistProvider
from labelfree.ingest.providers.openverse import OpenverseProvider
from labelfree.ingest.providers.wikimedia import WikimediaProvider
from tests.ingest.conftest import json_response, recorded

FAST = {"per_minute": 1e6, "sleep": lambda s: None}


def _with_base(name: str, base: str) -> dict:
    return json.loads(json.dumps(recorded(name)).replace("{BASE}", base))


# --- Openverse ---------------------------------------------------------------------------

def test_openverse_parses_results_with_licence_and_attribution(scripted):
    page = _with_base("openverse_images_page1.json", scripted.url)
    scripted.routes["/v1/images/"] = [json_response(page)]
    provider = OpenverseProvider(base_url=scripted.url + "/v1/", licences=["by", "cc0"], **FAST)
    result = provider.search("lion", page=1, page_size=2)
    assert result.page_count == 2 and result.result_count == 3 and not result.is_last
    first, second = result.results
    assert first.url == f"{scripted.url}/img/lion1.jpg"
    assert first.licence == "CC BY-ND 2.0" and second.licence == "CC0 1.0"
    assert first.creator == "Tambako The Jaguar" and "licensed under CC BY-ND 2.0" in first.attribution
    assert first.landing_url.startswith("https://www.flickr.com/")
    params = scripted.calls("/v1/images/")[0]
    assert params["q"] == "lion" and params["page"] == "1" and params["page_size"] == "2"
    assert params["license"] == "by,cc0"


def test_openverse_pages_until_the_last_page(scripted):
    page1 = _with_base("openverse_images_page1.json", scripted.url)
    page2 = {**page1, "page": 2, "results": page1["results"][:1]}
    scripted.routes["/v1/images/"] = [json_response(page1), json_response(page2)]
    provider = OpenverseProvider(base_url=scripted.url + "/v1/", **FAST)
    results = list(provider.iter_results("lion", pages=5, page_size=2))
    assert len(results) == 3
    assert [c["page"] for c in scripted.calls("/v1/images/")] == ["1", "2"]  # stopped at page_count


def test_openverse_waits_for_retry_after_on_429(scripted):
    page = _with_base("openverse_images_page1.json", scripted.url)
    throttled = json_response({"detail": "Request was throttled. Expected available in 7 seconds."}, 429,
                              {"Retry-After": "7"})
    scripted.routes["/v1/images/"] = [throttled, json_response(page)]
    provider = OpenverseProvider(base_url=scripted.url + "/v1/", per_minute=1e6)
    waits: list[float] = []
    provider.limiter._sleep = waits.append  # record the pause instead of sleeping
    result = provider.search("lion", page_size=2)
    assert len(result.results) == 2
    assert len(scripted.calls("/v1/images/")) == 2
    assert waits and 6.5 <= max(waits) <= 7.0


def test_openverse_gives_up_when_retry_after_is_too_long(scripted):
    scripted.routes["/v1/images/"] = [json_response({"detail": "throttled"}, 429, {"Retry-After": "86400"})]
    provider = OpenverseProvider(base_url=scripted.url + "/v1/", **FAST)
    with pytest.raises(ProviderError, match="429"):
        provider.search("lion")


@pytest.mark.parametrize("body, message", [
    (b"<html>maintenance</html>", "not JSON"),
    (json.dumps({"result_count": 1}).encode(), "no 'results'"),
    (json.dumps({"results": [{"id": "x", "title": "no url"}]}).encode(), "results\\[0\\] has no 'url'"),
    (json.dumps({"results": {"not": "a list"}}).encode(), "results is dict"),
])
def test_openverse_malformed_responses_raise_a_clear_error(scripted, body, message):
    scripted.routes["/v1/images/"] = [(200, {"Content-Type": "application/json"}, body)]
    provider = OpenverseProvider(base_url=scripted.url + "/v1/", **FAST)
    with pytest.raises(ProviderError, match=message):
        provider.search("lion")


def test_openverse_oauth_token_lifts_the_page_size_limit(scripted):
    page = _with_base("openverse_images_page1.json", scripted.url)
    scripted.routes["/v1/auth_tokens/token/"] = [json_response({"access_token": "tok123", "token_type": "Bearer",
                                                                "expires_in": 43200, "scope": "read write"})]
    scripted.routes["/v1/images/"] = [json_response(page)]
    anonymous = OpenverseProvider(base_url=scripted.url + "/v1/", **FAST)
    with pytest.raises(ValueError, match="page_size"):
        anonymous.search("lion", page_size=100)
    provider = OpenverseProvider(base_url=scripted.url + "/v1/", client_id="id", client_secret="secret", **FAST)
    provider.search("lion", page_size=100)
    provider.search("lion", page=2, page_size=100)
    token_calls = scripted.calls("/v1/auth_tokens/token/")
    assert len(token_calls) == 1 and token_calls[0]["grant_type"] == "client_credentials"
    auth = [h.get("Authorization") for _, p, _, h in scripted.requests if p == "/v1/images/"]
    assert auth == ["Bearer tok123", "Bearer tok123"]


def test_openverse_offline_error_names_the_offline_options():
    provider = OpenverseProvider(base_url="http://openverse.invalid/v1/", **FAST)
    with pytest.raises(ProviderError) as info:
        provider.search("lion")
    assert "--provider dir" in info.value.detail and "devsearch" in info.value.detail
    assert info.value.status == 503


def test_openverse_default_rate_limits_follow_the_api():
    assert OpenverseProvider(**FAST | {"per_minute": None}).limiter.interval == pytest.approx(3.0)  # 20/min
    authed = OpenverseProvider(client_id="a", client_secret="b", sleep=lambda s: None)
    assert authed.limiter.interval == pytest.approx(0.6)  # 100/min
    assert OpenverseProvider(base_url="http://127.0.0.1:9/v1/").limiter.interval < 1e-6  # local dev server


# --- iNaturalist -------------------------------------------------------------------------

def test_inaturalist_maps_research_grade_observations_to_photos(scripted):
    scripted.routes["/v1/observations"] = [json_response(recorded("inaturalist_observations.json"))]
    provider = INaturalistProvider(base_url=scripted.url + "/v1/", **FAST)
    page = provider.search("lion", page=1, page_size=2)
    assert page.page_count == 2 and page.result_count == 3
    assert len(page.results) == 2  # one photo per observation by default
    first, second = page.results
    assert first.url.endswith("/photos/263120115/medium.jpg")
    assert second.url.endswith("/photos/263120200/medium.jpeg")
    assert first.licence == "CC BY-NC" and second.licence == "CC0"
    assert first.creator == "Field Naturalist" and second.creator == "safari_kate"
    assert first.landing_url == "https://www.inaturalist.org/observations/153921702"
    params = scripted.calls("/v1/observations")[0]
    assert params["quality_grade"] == "research" and params["per_page"] == "2" and params["taxon_name"] == "lion"
    assert "cc-by" in params["photo_license"].split(",")


def test_inaturalist_is_limited_to_60_requests_a_minute_and_200_per_page():
    provider = INaturalistProvider(sleep=lambda s: None)
    assert provider.limiter.interval == pytest.approx(1.0)
    with pytest.raises(ValueError, match="per_page"):
        provider.search("lion", page_size=201)


def test_inaturalist_honours_retry_after_http_date_and_5xx(scripted):
    ok = json_response(recorded("inaturalist_observations.json"))
    scripted.routes["/v1/observations"] = [(503, {}, b"busy"), (429, {"Retry-After": "2"}, b""), ok]
    provider = INaturalistProvider(base_url=scripted.url + "/v1/", per_minute=1e6)
    waits: list[float] = []
    provider.limiter._sleep = waits.append
    assert len(provider.search("lion", page_size=2).results) == 2
    assert len(scripted.calls("/v1/observations")) == 3
    assert any(1.5 <= w <= 2.0 for w in waits)


def test_inaturalist_malformed_total_results_raises(scripted):
    body = recorded("inaturalist_observations.json") | {"total_results": "many"}
    scripted.routes["/v1/observations"] = [json_response(body)]
    with pytest.raises(ProviderError, match="total_results"):
        INaturalistProvider(base_url=scripted.url + "/v1/", **FAST).search("lion")


# --- Wikimedia Commons -------------------------------------------------------------------

def test_wikimedia_generator_search_reads_licence_from_extmetadata(scripted):
    scripted.routes["/w/api.php"] = [json_response(_with_base("wikimedia_search.json", scripted.url))]
    provider = WikimediaProvider(base_url=scripted.url + "/w/api.php", **FAST)
    page = provider.search("lion", page=1, page_size=3)
    assert [r.title for r in page.results] == ["File:Lion waiting in Namibia.jpg", "File:Panthera leo female.png"]
    jpg, png = page.results  # the SVG is skipped; order follows the search index
    assert jpg.url == f"{scripted.url}/thumb/Lion_waiting_in_Namibia.jpg"  # the 1024 px rendition
    assert jpg.licence == "CC BY-SA 2.0" and jpg.creator == "Kevin & friends"
    assert jpg.landing_url == "https://commons.wikimedia.org/wiki/File:Lion_waiting_in_Namibia.jpg"
    assert png.url == f"{scripted.url}/orig/Panthera_leo_female.png" and png.attribution == "Jane Doe / Wikimedia Commons"
    assert not page.is_last  # "continue" present
    params = scripted.calls("/w/api.php")[0]
    assert params["generator"] == "search" and params["gsrnamespace"] == "6"
    assert params["prop"] == "imageinfo" and "extmetadata" in params["iiprop"] and params["gsroffset"] == "0"


def test_wikimedia_pages_by_offset_and_stops_without_continue(scripted):
    body = _with_base("wikimedia_search.json", scripted.url)
    last = {k: v for k, v in body.items() if k != "continue"}
    scripted.routes["/w/api.php"] = [json_response(body), json_response(last)]
    provider = WikimediaProvider(base_url=scripted.url + "/w/api.php", **FAST)
    results = list(provider.iter_results("lion", pages=10, page_size=3))
    assert len(results) == 4
    assert [c["gsroffset"] for c in scripted.calls("/w/api.php")] == ["0", "3"]


def test_wikimedia_maxlag_and_429_are_retried(scripted):
    body = _with_base("wikimedia_search.json", scripted.url)
    lagged = json_response({"error": {"code": "maxlag", "info": "Waiting for a database server: 6 seconds lagged"}},
                           200, {"Retry-After": "5"})
    scripted.routes["/w/api.php"] = [lagged, (429, {"Retry-After": "1"}, b""), json_response(body)]
    provider = WikimediaProvider(base_url=scripted.url + "/w/api.php", per_minute=1e6)
    waits: list[float] = []
    provider.limiter._sleep = waits.append
    assert len(provider.search("lion", page_size=3).results) == 2
    assert len(scripted.calls("/w/api.php")) == 3
    assert any(w > 4 for w in waits)


def test_wikimedia_no_hits_and_malformed(scripted):
    scripted.routes["/w/api.php"] = [json_response({"batchcomplete": True}),
                                     json_response({"query": {"pages": "nope"}})]
    provider = WikimediaProvider(base_url=scripted.url + "/w/api.php", **FAST)
    empty = provider.search("qwxyzzy")
    assert empty.results == [] and empty.is_last
    with pytest.raises(ProviderError, match="query.pages is str"):
        provider.search("lion")


# --- local folders, factory, limiter -----------------------------------------------------

def test_dir_provider_maps_queries_to_folders(image_tree):
    provider = make_provider("dir", root=image_tree, aliases={"big cat": "tiger"})
    assert len(list(provider.iter_results("Lion", pages=10, page_size=5))) == 16
    page = provider.search("big cat", page=1, page_size=100)
    assert page.result_count == 6 and page.results[0].url.startswith("file://")
    assert page.results[0].licence == "user-supplied"
    assert provider.search("unicorn").results == []
    with pytest.raises(ValueError, match="outside"):
        make_provider("dir", root=image_tree, aliases={"x": "../.."})


def test_make_provider_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="unknown provider 'bing'"):
        make_provider("bing")
    with pytest.raises(ValueError, match="licence"):
        make_provider("openverse", licences=["all-rights-reserved"])


def test_rate_limiter_spaces_requests_and_pauses_everyone():
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(60, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        limiter.acquire()
    assert slept == [1.0, 1.0, 1.0]
    limiter.pause(10)
    limiter.acquire()
    assert slept[-1] == pytest.approx(10.0)


def test_parse_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after("12", 1.0) == 12.0
    assert parse_retry_after(None, 3.0) == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 5.0) == 0.0  # in the past
    assert parse_retry_after("soon", 4.0) == 4.0
