"""The ``file_search`` tool: the model's query searched over the run's vector stores.

The stores are those of the assistant's and the thread's ``tool_resources.file_search``; expired
or deleted stores are skipped. Results from every store are ranked together by score, cut to the
run's ``max_num_results`` (default 20) above its ``ranking_options.score_threshold``, and shown to
the model numbered ``【{search}:{result}†{filename}】`` so that it can cite them; the step lists
them (with their text when ``include[]`` asks).

Files just attached to a message may still be being indexed when a run made right after searches:
as OpenAI's runs did, a search first waits (up to ``wait_seconds``, 60 by default) while files of
the *thread's* stores are in progress, then searches what is ready; if some are still not, the
model is told so after the results. The assistant's stores are searched as they are (index them
before running, e.g. with the SDK's ``upload_and_poll``).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from threadline.domain.ports.citations import Source, format_results
from threadline.domain.ports.tool_services import ToolSearch
from threadline.domain.ports.tools import FILE_SEARCH, ToolCall, ToolError, ToolResult
from threadline.domain.steps import BuiltinType, FileSearchDetails, FileSearchResult, RankingOptions

DEFAULT_MAX_RESULTS = 20
RANKER = "default_2024_08_21"
REMEMBERED_RUNS = 10_000
DEFAULT_WAIT_SECONDS = 60.0
_FIRST_POLL, _LAST_POLL = 0.05, 1.0
"""Seconds between looks at files being indexed: soon at first, then doubling up to a second."""


def _store_ids(resources: dict[str, Any]) -> list[str]:
    ids = (resources.get("file_search") or {}).get("vector_store_ids") or []
    return [str(i) for i in ids]


class FileSearchTool:
    type: BuiltinType = "file_search"
    name: str = FILE_SEARCH.name
    description: str = FILE_SEARCH.description
    parameters: dict[str, Any] = FILE_SEARCH.parameters

    def __init__(self, search: ToolSearch, *, wait_seconds: float = DEFAULT_WAIT_SECONDS) -> None:
        self.search = search
        self.wait_seconds = wait_seconds
        """How long a search waits for files of the thread's stores that are still being indexed."""
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
        thread_stores = _store_ids(call.thread_resources)
        pending = await self._indexed(call.project_id, thread_stores)
        stores = list(dict.fromkeys(_store_ids(call.assistant_resources) + thread_stores))
        hits = await self.search.search(call.project_id, stores, query, limit, ranking.score_threshold)
        number = self._search_number(call.run_id)
        sources = [Source(hit.file_id, hit.filename, hit.text) for hit in hits]
        results = tuple(FileSearchResult(h.file_id, h.filename, h.score, (h.text,)) for h in hits)
        output = format_results(number, sources)
        if pending:
            files = "1 file" if pending == 1 else f"{pending} files"
            output += f"\n\n({files} attached to this thread could not be searched: still being indexed.)"
        return ToolResult(details=FileSearchDetails(ranking_options=ranking, results=results), output=output)

    async def _indexed(self, project_id: str, store_ids: list[str]) -> int:
        """Wait (up to ``wait_seconds``) for the stores' files being indexed; how many still are."""
        if not store_ids:
            return 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        pause = _FIRST_POLL
        while pending := await self.search.indexing(project_id, store_ids):
            left = deadline - loop.time()
            if left <= 0:
                return pending
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, _LAST_POLL)
        return 0
