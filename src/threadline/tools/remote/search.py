"""Web search backends for the ``web_search`` tool: a SearxNG instance's JSON API (self-hosted, the
default) or the Brave Search API, both asked through the remote guard.

The operator picks one with ``THREADLINE_WEB_SEARCH_BACKEND``; :func:`build_search` gives None when
it is not configured (``web_search`` is then refused with a 400 naming the settings). A backend answers a
:class:`SearchQuery` with :class:`SearchHit` values (url, title, snippet); its failures are
:class:`~threadline.errors.RemoteFetchError`.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from threadline.config import Settings
from threadline.errors import RemoteFetchError
from threadline.tools.remote.guard import Fetched, RemoteGuard

BRAVE_URL = "https://api.search.brave.com"
_TAGS = re.compile(r"<[^>]*>")


@dataclass(frozen=True, slots=True)
class SearchQuery:
    query: str
    limit: int = 5
    allowed_domains: tuple[str, ...] = ()
    """Only results on these domains or their subdomains (empty: any)."""
    country: str = ""
    """Two-letter country of the user (``user_location.country``), where the backend can use it."""


@dataclass(frozen=True, slots=True)
class SearchHit:
    url: str
    title: str
    snippet: str


class SearchBackend(Protocol):
    name: str

    async def search(self, query: SearchQuery) -> list[SearchHit]: ...


def domain_of(value: str) -> str:
    """A domain as ``allowed_domains`` gives it (``https://Example.com/x`` → ``example.com``)."""
    text = value.strip().lower()
    return (urlsplit(text if "//" in text else f"//{text}").hostname or "").rstrip(".")


def on_domains(url: str, domains: Sequence[str]) -> bool:
    if not domains:
        return True
    host = (urlsplit(url).hostname or "").lower()
    return any(host == d or host.endswith("." + d) for d in domains)


def _keep(hits: Iterable[SearchHit], query: SearchQuery) -> list[SearchHit]:
    """Results with an http(s) URL on the allowed domains, each URL once, at most ``limit``."""
    kept: dict[str, SearchHit] = {}
    for hit in hits:
        if urlsplit(hit.url).scheme in ("http", "https") and on_domains(hit.url, query.allowed_domains):
            kept.setdefault(hit.url, hit)
        if len(kept) >= query.limit:
            break
    return list(kept.values())


def _text(value: Any) -> str:
    return " ".join(html.unescape(_TAGS.sub("", value)).split()) if isinstance(value, str) else ""


def _terms(query: SearchQuery) -> str:
    # One allowed domain narrows the engine's search itself; results are filtered here in any case.
    if len(query.allowed_domains) == 1:
        return f"{query.query} site:{query.allowed_domains[0]}"
    return query.query


def _json(fetched: Fetched, backend: str) -> dict[str, Any]:
    try:
        data = json.loads(fetched.body)
    except ValueError as exc:
        raise RemoteFetchError(f"The {backend} search backend did not answer JSON.") from exc
    if not isinstance(data, dict):
        raise RemoteFetchError(f"The {backend} search backend answered JSON that is not an object.")
    return data


class SearxngSearch:
    """A SearxNG instance's JSON API (``/search?q=…&format=json``; the instance must enable the
    ``json`` format in its ``search.formats``)."""

    name = "searxng"

    def __init__(self, guard: RemoteGuard, base_url: str) -> None:
        self._guard = guard
        self._url = base_url.rstrip("/") + "/search"

    async def search(self, query: SearchQuery) -> list[SearchHit]:
        params: dict[str, str | int] = {"q": _terms(query), "format": "json"}
        fetched = await self._guard.fetch(self._url, params=params, headers={"Accept": "application/json"})
        results = _json(fetched, self.name).get("results")
        hits = (
            SearchHit(str(r.get("url", "")), _text(r.get("title")), _text(r.get("content")))
            for r in (results if isinstance(results, list) else [])
            if isinstance(r, dict)
        )
        return _keep(hits, query)


class BraveSearch:
    """The Brave Search API (``/res/v1/web/search``, key in ``X-Subscription-Token``)."""

    name = "brave"

    def __init__(self, guard: RemoteGuard, api_key: str, base_url: str = BRAVE_URL) -> None:
        self._guard = guard
        self._key = api_key
        self._url = base_url.rstrip("/") + "/res/v1/web/search"

    async def search(self, query: SearchQuery) -> list[SearchHit]:
        params: dict[str, str | int] = {"q": _terms(query), "count": min(20, max(query.limit, 1))}
        if len(query.country) == 2:
            params["country"] = query.country.lower()
        headers = {"Accept": "application/json", "X-Subscription-Token": self._key}
        fetched = await self._guard.fetch(self._url, params=params, headers=headers)
        web = _json(fetched, self.name).get("web")
        results = web.get("results") if isinstance(web, dict) else None
        hits = (
            SearchHit(str(r.get("url", "")), _text(r.get("title")), _text(r.get("description")))
            for r in (results if isinstance(results, list) else [])
            if isinstance(r, dict)
        )
        return _keep(hits, query)


def build_search(settings: Settings, guard: RemoteGuard) -> SearchBackend | None:
    """The configured backend, or None when web search is not configured."""
    if settings.web_search_backend == "brave":
        if not settings.web_search_api_key:
            return None
        return BraveSearch(guard, settings.web_search_api_key, settings.web_search_url or BRAVE_URL)
    if settings.web_search_backend == "searxng":
        return SearxngSearch(guard, settings.web_search_url) if settings.web_search_url else None
    raise ValueError(
        f"THREADLINE_WEB_SEARCH_BACKEND: expected 'searxng' or 'brave', got {settings.web_search_backend!r}"
    )
