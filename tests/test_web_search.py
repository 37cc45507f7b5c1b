"""Web search: the search backends (SearxNG's JSON API, the Brave Search API) and the reading of
result pages, against the fake web (``threadline.testing_web.FakeWeb``) through the remote guard."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest

from threadline.config import Settings
from threadline.errors import RemoteFetchError
from threadline.testing_web import FakeWeb, WebPage
from threadline.tools.remote.guard import RemoteGuard, RemotePolicy
from threadline.tools.remote.pages import read_pages
from threadline.tools.remote.search import (
    BraveSearch,
    SearchHit,
    SearchQuery,
    SearxngSearch,
    build_search,
    domain_of,
    setting_hint,
)

GUARD = RemoteGuard(RemotePolicy(allow_networks=(ipaddress.ip_network("127.0.0.1/32"),), timeout_seconds=3))


def run(coro: Any) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


@pytest.fixture
def web() -> Iterator[FakeWeb]:
    with FakeWeb() as fake:
        yield fake


def test_searxng_results_come_from_its_json_api(web: FakeWeb) -> None:
    hits = run(SearxngSearch(GUARD, web.base_url + "/").search(SearchQuery("bell rock", limit=2)))
    assert hits == [
        SearchHit(web.page_url("bell-rock"), "Bell Rock Lighthouse", DEFAULT_SNIPPET),
        SearchHit(
            web.page_url("tides"), "Tide tables explained", "Spring and neap tides, and when they come."
        ),
    ]
    assert web.queries == ["bell rock"]


DEFAULT_SNIPPET = "The oldest surviving sea-washed lighthouse, first lit in 1811."


def test_brave_results_need_the_key_and_lose_their_markup(web: FakeWeb) -> None:
    hits = run(BraveSearch(GUARD, web.brave_key, web.base_url).search(SearchQuery("lighthouse", limit=1)))
    assert hits == [SearchHit(web.page_url("bell-rock"), "Bell Rock Lighthouse", DEFAULT_SNIPPET)]
    with pytest.raises(RemoteFetchError, match="401"):
        run(BraveSearch(GUARD, "wrong", web.base_url).search(SearchQuery("lighthouse")))


def test_allowed_domains_narrow_the_query_and_filter_the_results(web: FakeWeb) -> None:
    web.pages["elsewhere"] = WebPage("Elsewhere", "Not on the allowed domain.")
    query = SearchQuery("tides", allowed_domains=(domain_of("https://127.0.0.1/anything"),))
    hits = run(SearxngSearch(GUARD, web.base_url).search(query))
    assert len(hits) == 4 and web.queries == ["tides site:127.0.0.1"]
    assert (
        run(SearxngSearch(GUARD, web.base_url).search(SearchQuery("tides", allowed_domains=("example.com",))))
        == []
    )
    assert domain_of("Docs.Example.com") == "docs.example.com"


@pytest.mark.parametrize("failure", ["status", "hang"])
def test_a_failing_backend_is_a_remote_fetch_error(web: FakeWeb, failure: str) -> None:
    if failure == "status":
        web.search_status = 503
    else:
        web.search_hang = True
    guard = RemoteGuard(RemotePolicy(GUARD.policy.allow_networks, timeout_seconds=0.5))
    with pytest.raises(RemoteFetchError, match="503" if failure == "status" else "took longer"):
        run(SearxngSearch(guard, web.base_url).search(SearchQuery("tides")))


def test_only_a_configured_backend_is_built() -> None:
    assert build_search(Settings(), GUARD) is None
    assert "THREADLINE_WEB_SEARCH_URL" in setting_hint(Settings())
    assert isinstance(build_search(Settings(web_search_url="http://searx:8080"), GUARD), SearxngSearch)
    brave = Settings(web_search_backend="brave")
    assert build_search(brave, GUARD) is None and "THREADLINE_WEB_SEARCH_API_KEY" in setting_hint(brave)
    assert isinstance(build_search(brave.replace(web_search_api_key="k"), GUARD), BraveSearch)
    with pytest.raises(ValueError, match="THREADLINE_WEB_SEARCH_BACKEND"):
        build_search(Settings(web_search_backend="google"), GUARD)


def test_pages_are_read_as_text_and_bounded(web: FakeWeb) -> None:
    web.pages["long"] = WebPage("Long", " ".join(["lighthouse"] * 5000))
    hits = [
        SearchHit(web.page_url("bell-rock"), "Bell Rock Lighthouse", "snippet"),
        SearchHit(web.page_url("long"), "Long", "snippet"),
        SearchHit(web.page_url("missing"), "Missing", "The engine's own snippet."),
        SearchHit(web.url("/gzip?n=10"), "Not text", "Binary."),
    ]
    pages = run(read_pages(GUARD, hits, page_characters=1000, total_characters=1200))
    assert [p.url for p in pages] == [h.url for h in hits]
    bell, long, missing, binary = pages
    assert "first lit in 1811" in bell.text and "tracking" not in bell.text and "<p>" not in bell.text
    assert bell.error == ""
    assert len(long.text) <= 300 + 2 and long.text.endswith(" …")  # 1200 shared by four pages
    assert missing.text == "The engine's own snippet." and "404" in missing.error
    assert binary.text == "Binary." and binary.error


def test_a_page_on_a_refused_address_keeps_its_snippet(web: FakeWeb) -> None:
    hit = SearchHit("http://169.254.169.254/latest/meta-data/", "Metadata", "snippet")
    (page,) = run(read_pages(GUARD, [hit], page_characters=100, total_characters=100))
    assert page.text == "snippet" and "cloud metadata" in page.error
