"""Typed values held as JSON (step details, a run's required action, message content, a response's
settings) and back: the one persisted form, used by the store and by buses that cross processes.

It follows OpenAI's wire shape where it can (so stored rows read naturally, and rows written before
these values were typed still load), plus what only the server needs: a built-in call's function
``name``, ``arguments`` and ``output`` as the model saw them, under ``model_call``.
``api/objects.py`` and ``api/response_objects.py`` render the wire shapes; never this.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from threadline.domain.content import (
    Annotation,
    FileCitation,
    FilePath,
    ImageFile,
    ImageUrl,
    InputFile,
    ItemFields,
    Part,
    PendingFile,
    Refusal,
    Text,
    UrlCitation,
)
from threadline.domain.entities import (
    BuiltinCall,
    FunctionCall,
    MessageCreation,
    RequiredAction,
    ResponseSettings,
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


_RESPONSE_FIELDS = frozenset(f.name for f in dataclasses.fields(ResponseSettings))


def response_record(settings: ResponseSettings | None) -> Record | None:
    if settings is None:
        return None
    record = dataclasses.asdict(settings)
    if record["mcp_headers"] is None:
        del record["mcp_headers"]
    return record


def response_from(r: Record | None) -> ResponseSettings | None:
    """A stored response's settings; a key a row lacks (or holds null) takes its default."""
    if r is None:
        return None
    return ResponseSettings(**{k: v for k, v in r.items() if k in _RESPONSE_FIELDS and v is not None})


# --- message content -------------------------------------------------------------------------


def annotation_record(a: Annotation) -> Record:
    if isinstance(a, UrlCitation):
        return {
            "type": "url_citation",
            "text": a.text,
            "start_index": a.start_index,
            "end_index": a.end_index,
            "url_citation": {"url": a.url, "title": a.title},
        }
    kind = "file_citation" if isinstance(a, FileCitation) else "file_path"
    return {
        "type": kind,
        "text": a.text,
        "start_index": a.start_index,
        "end_index": a.end_index,
        kind: {"file_id": a.file_id},
    }


def annotation_from(r: Record) -> Annotation:
    if r["type"] == "url_citation":
        cited = r.get("url_citation") or {}
        return UrlCitation(
            r.get("text", ""), r["start_index"], r["end_index"], cited.get("url", ""), cited.get("title", "")
        )
    cls = FileCitation if r["type"] == "file_citation" else FilePath
    return cls(
        r.get("text", ""), r["start_index"], r["end_index"], (r.get(r["type"]) or {}).get("file_id", "")
    )


def _image(kind: str, key: str, value: str, detail: str | None) -> Record:
    image = {key: value} if detail is None else {key: value, "detail": detail}
    return {"type": kind, kind: image}


def part_record(part: Part) -> Record:
    if isinstance(part, Text):
        annotations = [annotation_record(a) for a in part.annotations]
        return {"type": "text", "text": {"value": part.value, "annotations": annotations}}
    if isinstance(part, Refusal):
        return {"type": "refusal", "refusal": part.refusal}
    if isinstance(part, ImageFile):
        return _image("image_file", "file_id", part.file_id, part.detail)
    if isinstance(part, ImageUrl):
        return _image("image_url", "url", part.url, part.detail)
    if isinstance(part, InputFile):
        file: Record = {"file_id": part.file_id, "filename": part.filename}
        if part.text is not None:
            file["text"] = part.text
        if part.image:
            file["image"] = True
        if part.image_url is not None:
            file["image_url"] = part.image_url
        if part.file_url is not None:
            file["file_url"] = part.file_url
        return {"type": "input_file", "input_file": file}
    if isinstance(part, PendingFile):
        return {"type": "input_file", "input_file": part.given, "param": part.param}
    return part.fields


def part_from(r: Record) -> Part:
    kind = r.get("type")
    if kind == "text" and isinstance(r.get("text"), dict):
        text = r["text"]
        return Text(text["value"], tuple(annotation_from(a) for a in text.get("annotations") or ()))
    if kind == "refusal":
        return Refusal(r["refusal"])
    if kind == "image_file":
        return ImageFile(r["image_file"]["file_id"], r["image_file"].get("detail"))
    if kind == "image_url":
        return ImageUrl(r["image_url"]["url"], r["image_url"].get("detail"))
    if kind == "input_file" and "param" in r:
        return PendingFile(r["input_file"], r["param"])
    if kind == "input_file":
        f = r["input_file"]
        return InputFile(
            f.get("file_id"),
            f.get("filename"),
            f.get("text"),
            bool(f.get("image")),
            f.get("image_url"),
            f.get("file_url"),
        )
    return ItemFields(r)


def content_record(parts: Sequence[Part]) -> list[Record]:
    return [part_record(p) for p in parts]


def content_from(records: Sequence[Record]) -> list[Part]:
    return [part_from(r) for r in records]
