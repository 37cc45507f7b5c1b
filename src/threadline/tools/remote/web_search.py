"""The ``web_search`` tool: the model's query asked of the configured search backend, the results'
pages read through the remote guard, and their text given to the model to answer from and cite.

How much comes back follows the tool's ``search_context_size`` (``low``, ``medium``, ``high``: fewer
or more results, and a smaller or larger share of ``THREADLINE_WEB_SEARCH_MAX_CHARACTERS``); its
``filters.allowed_domains`` keep only results on those domains; ``user_location.country`` reaches
backends that use it. The model is asked to cite a result as a markdown link to its URL, which the
run turns into a ``url_citation`` annotation. A backend that fails does not fail the run: the call
is ``failed`` with the reason, and the model is told so and goes on.
"""

from __future__ import annotations

from typing import Any

from threadline.domain.ports.tools import WEB_SEARCH, ToolCall, ToolError, ToolResult
from threadline.domain.steps import BuiltinType, WebSearchDetails, WebSearchSource
from threadline.errors import RemoteFetchError
from threadline.tools.remote.guard import RemoteGuard
from threadline.tools.remote.pages import Page, read_pages
from threadline.tools.remote.search import SearchBackend, SearchQuery, domain_of

CONTEXT_SIZES = {"low": (3, 0.5), "medium": (5, 1.0), "high": (8, 2.0)}
"""``search_context_size`` → (results, share of the character budget)."""


def search_query(query: str, options: dict[str, Any]) -> tuple[SearchQuery, float]:
    """The backend's query for the tool entry ``options``, and the share of the character budget."""
    results, share = CONTEXT_SIZES.get(
        str(options.get("search_context_size") or "medium"), CONTEXT_SIZES["medium"]
    )
    filters = options.get("filters") or {}
    domains = tuple(d for d in (domain_of(str(v)) for v in filters.get("allowed_domains") or ()) if d)
    location = options.get("user_location") or {}
    country = str(location.get("country") or "") if isinstance(location, dict) else ""
    return SearchQuery(query, results, domains, country), share


def model_text(query: str, pages: list[Page]) -> str:
    """What the model reads of one search."""
    if not pages:
        return f'The web search for "{query}" found nothing.'
    example = f"([{pages[0].title or 'title'}]({pages[0].url}))"
    blocks = [
        f"[{number}] {page.title}\nURL: {page.url}\n{page.text}" for number, page in enumerate(pages, 1)
    ]
    head = (
        f'Web search results for "{query}". Answer from them, and cite each page you use with a '
        f"markdown link to its URL, as {example}."
    )
    return "\n\n".join([head, *blocks])


class WebSearchTool:
    type: BuiltinType = "web_search"
    name: str = WEB_SEARCH.name
    description: str = WEB_SEARCH.description
    parameters: dict[str, Any] = WEB_SEARCH.parameters

    def __init__(
        self, backend: SearchBackend, guard: RemoteGuard, *, page_characters: int, max_characters: int
    ) -> None:
        self.backend = backend
        self.guard = guard
        self.page_characters = page_characters
        self.max_characters = max_characters

    def start(self, call: ToolCall) -> WebSearchDetails:
        query = call.arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ToolError("web_search needs {'query': '<what to search the web for>'}.")
        return WebSearchDetails(query.strip())

    async def run(self, call: ToolCall) -> ToolResult:
        query = self.start(call).query
        request, share = search_query(query, call.options)
        try:
            hits = await self.backend.search(request)
        except RemoteFetchError as exc:
            reason = f"The web search failed: {exc.message}"
            return ToolResult(WebSearchDetails(query, error=reason), f"Error: {reason}")
        pages = await read_pages(
            self.guard,
            hits,
            page_characters=self.page_characters,
            total_characters=max(1, int(self.max_characters * share)),
        )
        sources = tuple(WebSearchSource(page.url, page.title) for page in pages)
        return ToolResult(WebSearchDetails(query, sources), model_text(query, pages))
