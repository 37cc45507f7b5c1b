"""What an answer carries from the run's built-in calls: its citations of file search results as
``file_citation`` annotations (searches numbered in the order they ran), its mentions of files the
code wrote as ``file_path`` annotations, and the code's charts as ``image_file`` parts."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.conftest import Domain
from threadline.domain.content import FileCitation, FilePath, ImageFile, Text
from threadline.domain.events import ImageDelta, MessageDelta
from threadline.domain.ports.tools import ToolResult
from threadline.domain.run_states import RunStatus
from threadline.domain.steps import (
    CodeInterpreterDetails,
    FileSearchDetails,
    FileSearchResult,
    ImageOutput,
    LogsOutput,
    SavedFile,
)
from threadline.testing import Reply, ScriptedTool, ToolCall

pytestmark = pytest.mark.anyio


def _search(arguments: dict[str, Any]) -> ToolResult:
    """Each query finds one file named after it."""
    query = str(arguments["query"])
    found = FileSearchResult(f"file-{query}", f"{query}.txt", 0.9, (f"about {query}",))
    return ToolResult(FileSearchDetails(None, (found,)), f"【?:0†{query}.txt】 about {query}")


async def test_citations_name_the_files_of_the_search_they_cite(domain: Domain) -> None:
    domain.tools.register(ScriptedTool("file_search", respond=_search))
    run = await domain.start(tools=[{"type": "file_search"}])
    events = domain.follow(run)
    answer = "Prices rose【0:0†prices.txt】 and costs fell【1:0†costs.txt】; see also【1:5†none.txt】."
    domain.model.script(
        Reply(tool_calls=[ToolCall("file_search", {"query": "prices"})]),
        Reply(tool_calls=[ToolCall("file_search", {"query": "costs"})]),
        answer,
    )
    done = await domain.drive(run)
    assert done.status is RunStatus.COMPLETED

    (message,) = await domain.messages(run)
    first, second = "【0:0†prices.txt】", "【1:0†costs.txt】"
    citations = (
        FileCitation(first, answer.index(first), answer.index(first) + len(first), "file-prices"),
        FileCitation(second, answer.index(second), answer.index(second) + len(second), "file-costs"),
    )
    assert message.content == [Text(answer, citations)]
    # Streamed too, so a stream's final snapshot carries them.
    streamed = [e for e in events.pull() if isinstance(e, MessageDelta) and e.annotations]
    assert streamed[-1].annotations == citations


def _code(arguments: dict[str, Any]) -> ToolResult:
    details = CodeInterpreterDetails(
        str(arguments["code"]),
        (LogsOutput("saved"), ImageOutput("file-chart")),
        (SavedFile("/mnt/data/out.csv", "file-out"),),
    )
    return ToolResult(details, "saved /mnt/data/out.csv and a chart")


async def test_files_the_code_wrote_are_linked_and_its_charts_follow_the_text(domain: Domain) -> None:
    domain.tools.register(ScriptedTool("code_interpreter", respond=_code))
    run = await domain.start(tools=[{"type": "code_interpreter"}])
    events = domain.follow(run)
    answer = "Download sandbox:/mnt/data/out.csv (not /mnt/data/out.csv2)."
    domain.model.script(Reply(tool_calls=[ToolCall("code_interpreter", {"code": "save()"})]), answer)
    await domain.drive(run)

    (message,) = await domain.messages(run)
    link = "sandbox:/mnt/data/out.csv"
    at = answer.index(link)
    assert message.content == [
        Text(answer, (FilePath(link, at, at + len(link), "file-out"),)),
        ImageFile("file-chart"),
    ]
    (shown,) = [e for e in events.pull() if isinstance(e, ImageDelta)]
    assert (shown.message_id, shown.index, shown.file_id) == (message.id, 1, "file-chart")


async def test_an_answer_without_builtin_calls_is_left_as_written(domain: Domain) -> None:
    run = await domain.start()
    domain.model.script("As【0:0†notes.txt】 says, sandbox:/mnt/data/out.csv.")
    await domain.drive(run)
    (message,) = await domain.messages(run)
    assert message.content == [Text("As【0:0†notes.txt】 says, sandbox:/mnt/data/out.csv.")]
