"""Typed values held as JSON (step details, a run's required action) and back: the one persisted
form, used by the store and by buses that cross processes.

It follows OpenAI's wire shape where it can (so stored rows read naturally, and rows written before
these values were typed still load), plus what only the server needs: a built-in call's function
``name``, ``arguments`` and ``output`` as the model saw them, under ``model_call``.
``api/objects.py`` renders the wire shape; never this.
"""

from __future__ import annotations

from typing import Any

from threadline.domain.entities import (
    BuiltinCall,
    FunctionCall,
    MessageCreation,
    RequiredAction,
    StepDetails,
    ToolCallRecord,
    ToolCalls,
)
from threadline.domain.steps import (
    BuiltinDetails,
    CodeInterpreterDetails,
    CodeOutput,
    FileSearchDetails,
    FileSearchResult,
    ImageOutput,
    LogsOutput,
    RankingOptions,
    SavedFile,
    WebSearchDetails,
    WebSearchSource,
)

Record = dict[str, Any]


def required_action_record(action: RequiredAction | None) -> Record | None:
    if action is None:
        return None
    calls = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in action.calls
    ]
    return {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": calls}}


def required_action_from(record: Record | None) -> RequiredAction | None:
    if record is None:
        return None
    calls = record["submit_tool_outputs"]["tool_calls"]
    return RequiredAction(
        [FunctionCall(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls]
    )


def step_details_record(details: StepDetails) -> Record:
    if isinstance(details, MessageCreation):
        return {"type": "message_creation", "message_creation": {"message_id": details.message_id}}
    return {"type": "tool_calls", "tool_calls": [_call_record(c) for c in details.calls]}


def step_details_from(record: Record) -> StepDetails:
    if record["type"] == "message_creation":
        return MessageCreation(record["message_creation"]["message_id"])
    return ToolCalls([_call(c) for c in record["tool_calls"]])


def _call_record(call: ToolCallRecord) -> Record:
    if isinstance(call, FunctionCall):
        function = {"name": call.name, "arguments": call.arguments, "output": call.output}
        return {"id": call.id, "type": "function", "function": function}
    model_call = {"name": call.name, "arguments": call.arguments, "output": call.output}
    return {
        "id": call.id,
        "type": call.type,
        call.type: builtin_record(call.details),
        "model_call": model_call,
    }


def _call(record: Record) -> ToolCallRecord:
    if record["type"] == "function":
        f = record["function"]
        return FunctionCall(record["id"], f["name"], f["arguments"], f.get("output"))
    model_call = record["model_call"]
    return BuiltinCall(
        id=record["id"],
        type=record["type"],
        name=model_call["name"],
        arguments=model_call["arguments"],
        details=_builtin(record["type"], record[record["type"]]),
        output=model_call.get("output"),
    )


def builtin_record(details: BuiltinDetails) -> Record:
    if isinstance(details, CodeInterpreterDetails):
        return {
            "input": details.input,
            "outputs": [_output_record(o) for o in details.outputs],
            "files": [{"path": f.path, "file_id": f.file_id} for f in details.files],
        }
    if isinstance(details, WebSearchDetails):
        return {
            "query": details.query,
            "sources": [{"url": source.url, "title": source.title} for source in details.sources],
            "error": details.error,
        }
    ranking = details.ranking_options
    return {
        "ranking_options": (
            {"ranker": ranking.ranker, "score_threshold": ranking.score_threshold} if ranking else None
        ),
        "results": [
            {"file_id": r.file_id, "file_name": r.file_name, "score": r.score, "content": list(r.content)}
            for r in details.results
        ],
    }


def _builtin(kind: str, record: Record) -> BuiltinDetails:
    if kind == "code_interpreter":
        files = tuple(SavedFile(f["path"], f["file_id"]) for f in record.get("files") or ())
        return CodeInterpreterDetails(record["input"], tuple(_output(o) for o in record["outputs"]), files)
    if kind == "web_search":
        sources = tuple(WebSearchSource(r["url"], r["title"]) for r in record.get("sources") or ())
        return WebSearchDetails(record["query"], sources, record.get("error") or "")
    ranking = record.get("ranking_options")
    return FileSearchDetails(
        RankingOptions(ranking["ranker"], ranking["score_threshold"]) if ranking else None,
        tuple(
            FileSearchResult(r["file_id"], r["file_name"], r["score"], tuple(r.get("content") or ()))
            for r in record["results"]
        ),
    )


def _output_record(output: CodeOutput) -> Record:
    if isinstance(output, LogsOutput):
        return {"type": "logs", "logs": output.logs}
    return {"type": "image", "image": {"file_id": output.file_id}}


def _output(record: Record) -> CodeOutput:
    if record["type"] == "logs":
        return LogsOutput(record["logs"])
    return ImageOutput(record["image"]["file_id"])
