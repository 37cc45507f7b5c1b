"""The ``file_search`` tool: the model's query searched over the run's vector stores.

The stores are those of the assistant's and the thread's ``tool_resources.file_search``; expired
or deleted stores are skipped. Results from every store are ranked together by score, cut to the
run's ``max_num_results`` (default 20) above its ``ranking_options.score_threshold``, and shown to
the model numbered ``【{search}:{result}†{filename}】`` so that it can cite them; the step lists
them (with their text when ``include[]`` asks).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from threadline.retrieval.citations import Source, format_results
from threadline.tools.base import (
    FILE_SEARCH,
    BuiltinType,
    FileSearchDetails,
    FileSearchResult,
    RankingOptions,
    ToolCall,
    ToolError,
    ToolResult,
)
from threadline.tools.ports import ToolSearch

DEFAULT_MAX_RESULTS = 20
RANKER = "default_2024_08_21"
REMEMBERED_RUNS = 10_000


def _store_ids(resources: dict[str, Any]) -> list[str]:
    ids = (resources.get("file_search") or {}).get("vector_store_ids") or []
    return [str(i) for i in ids]


class FileSearchTool:
    type: BuiltinType = "file_search"
    name: str = FILE_SEARCH.name
    description: str = FILE_SEARCH.description
    parameters: dict[str, Any] = FILE_SEARCH.parameters

    def __init__(self, search: ToolSearch) -> None:
        self.search = search
        # Each search of a run gets the next number in its markers, so citations name one search.
        self._searches: OrderedDict[str, int] = OrderedDict()

    def start(self, call: ToolCall) -> FileSearchDetails:
        query = call.arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ToolError("file_search needs {'query': '<what to look for>'}.")
        return FileSearchDetails(ranking_options=self._ranking(call))

    @staticmethod
    def _ranking(call: ToolCall) -> RankingOptions:
        ranking = call.options.get("ranking_options") or {}
        return RankingOptions(
            str(ranking.get("ranker") or RANKER), float(ranking.get("score_threshold") or 0.0)
        )

    def _search_number(self, run_id: str) -> int:
        number = self._searches.pop(run_id, -1) + 1
        self._searches[run_id] = number
        while len(self._searches) > REMEMBERED_RUNS:
            self._searches.popitem(last=False)
        return number

    async def run(self, call: ToolCall) -> ToolResult:
        ranking = self.start(call).ranking_options
        assert ranking is not None
        query = str(call.arguments["query"])
        limit = int(call.options.get("max_num_results") or DEFAULT_MAX_RESULTS)
        stores = list(dict.fromkeys(_store_ids(call.assistant_resources) + _store_ids(call.thread_resources)))
        hits = await self.search.search(call.project_id, stores, query, limit, ranking.score_threshold)
        number = self._search_number(call.run_id)
        sources = [Source(hit.file_id, hit.filename, hit.text) for hit in hits]
        results = tuple(FileSearchResult(h.file_id, h.filename, h.score, (h.text,)) for h in hits)
        return ToolResult(
            details=FileSearchDetails(ranking_options=ranking, results=results),
            output=format_results(number, sources),
        )
