"""Parsing a Responses request's ``input`` items and their content parts into domain values, by hand.

Each mistake gets an error that names the exact parameter (``input[2].content[0].type``), as
OpenAI's do. Messages become stored message parts (the Assistants API's form); function calls and
outputs, built-in calls, reasoning and compaction items given back become the one part holding the
item's fields. The request schemas that call these are in ``response_protocol.py``.
"""

from __future__ import annotations

import re
from typing import Any, cast

from threadline.domain.content import (
    ImageFile,
    ImageUrl,
    ItemFields,
    Part,
    PendingFile,
    Refusal,
    Text,
    text_content,
)
from threadline.domain.entities import ItemType, MessageRole
from threadline.domain.mcp import MCP_ITEM_TYPES, mcp_item
from threadline.domain.response_items import ItemReference, NewItem, compaction_summary
from threadline.errors import InvalidRequestError

MAX_INPUT_ITEMS = 2048
MAX_TEXT = 10 * 1024 * 1024
"""The most characters one input text may hold (OpenAI's limit on a string input)."""
MAX_COMPACTION = 20 * 1024 * 1024
"""The most characters of a compaction item's ``encrypted_content`` (the spec's limit)."""
FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def bad(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def string_field(item: dict[str, Any], key: str, param: str, *, limit: int = MAX_TEXT) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise bad(f"Invalid type for '{param}.{key}': expected a string.", f"{param}.{key}")
    if len(value) > limit or "\x00" in value:
        raise bad(f"Invalid '{param}.{key}': too long, or holds a NUL character.", f"{param}.{key}")
    return value


def parse_input(value: str | list[dict[str, Any]] | None) -> list[NewItem | ItemReference]:
    if value is None:
        return []
    if isinstance(value, str):
        if len(value) > MAX_TEXT or "\x00" in value:
            raise bad("Invalid 'input': too long, or holds a NUL character.", "input")
        return [NewItem("message", "user", text_content(value))]
    return parse_items(value, "input")


def parse_items(items: list[dict[str, Any]], param: str) -> list[NewItem | ItemReference]:
    if len(items) > MAX_INPUT_ITEMS:
        raise bad(f"Invalid '{param}': at most {MAX_INPUT_ITEMS} items.", param)
    return [_item(item, f"{param}[{i}]") for i, item in enumerate(items)]


_STATUSES = ("in_progress", "completed", "incomplete")
# The fields each input item type may carry; others are refused, as OpenAI refuses them. Those not
# used (a message's ``status``, a call's ``caller`` ...) are still checked. Values: the allowed
# values (a tuple) or the JSON type (a Python type).
_ITEM_FIELDS: dict[str, dict[str, Any]] = {
    "message": {"type": str, "role": str, "content": object, "id": str, "status": _STATUSES},
    "function_call": {
        "type": str,
        "call_id": str,
        "name": str,
        "arguments": str,
        "id": str,
        "status": _STATUSES,
        "namespace": str,
        "caller": dict,
        "parsed_arguments": object,  # as ``parsed`` on output_text: the SDK's, sent back
    },
    "function_call_output": {
        "type": str,
        "call_id": str,
        "output": object,
        "id": str,
        "status": _STATUSES,
        "name": str,
        "namespace": str,
        "caller": dict,
    },
    "file_search_call": {
        "type": str,
        "id": str,
        "status": ("in_progress", "searching", "completed", "incomplete", "failed"),
        "queries": list,
        "results": list,
    },
    "code_interpreter_call": {
        "type": str,
        "id": str,
        "status": ("in_progress", "completed", "incomplete", "interpreting", "failed"),
        "container_id": str,
        "code": str,
        "outputs": list,
    },
    "web_search_call": {
        "type": str,
        "id": str,
        "status": ("in_progress", "searching", "completed", "failed"),
        "action": dict,
        "error": str,  # why this server's search failed, as it output the item
    },
    "reasoning": {
        "type": str,
        "id": str,
        "encrypted_content": str,
        "summary": list,
        "content": list,
        "status": _STATUSES,
    },
    "compaction": {"type": str, "id": str, "encrypted_content": str, "created_by": str},
}
_REQUIRED = {
    "file_search_call": ("id", "status", "queries"),
    "code_interpreter_call": ("id", "status", "code", "container_id", "outputs"),
    "web_search_call": ("id", "status", "action"),
    "reasoning": ("id", "summary"),
    "compaction": ("encrypted_content",),
}
"""What the spec requires of a built-in call or reasoning item given back (each is as it was output)."""
_RESULT_FIELDS = {"file_id": str, "text": str, "filename": str, "attributes": dict, "score": object}
_OUTPUT_FIELDS: dict[str, dict[str, Any]] = {
    "logs": {"type": str, "logs": str},
    "image": {"type": str, "url": str},
}
_PART_FIELDS: dict[str, set[str]] = {
    "input_text": {"type", "text", "prompt_cache_breakpoint"},
    # ``parsed``: the official SDK's parsed responses carry it, and send it back with the part.
    "output_text": {"type", "text", "annotations", "logprobs", "parsed"},
    "input_image": {"type", "image_url", "file_id", "detail", "prompt_cache_breakpoint"},
    "refusal": {"type", "refusal"},
    "input_file": {
        "type",
        "file_id",
        "file_data",
        "filename",
        "file_url",
        "detail",
        "prompt_cache_breakpoint",
    },
}


def _check_fields(item: dict[str, Any], fields: dict[str, Any], param: str) -> None:
    """Refuse fields the item's type does not have, and known fields of the wrong kind (null is
    allowed for the ones not used here)."""
    for key, value in item.items():
        rule = fields.get(key)
        if rule is None:
            raise bad(f"Unknown parameter: '{param}.{key}'.", f"{param}.{key}")
        if value is None or rule is object:
            continue
        if isinstance(rule, tuple):
            if value not in rule:
                raise bad(f"Invalid value for '{param}.{key}'.", f"{param}.{key}")
        elif not isinstance(value, rule):
            raise bad(f"Invalid type for '{param}.{key}'.", f"{param}.{key}")


def _item(item: dict[str, Any], param: str) -> NewItem | ItemReference:
    if not isinstance(item, dict):
        raise bad(f"Invalid type for '{param}': expected an object.", param)
    kind = item.get("type")
    if kind is None:
        # An item reference may leave its type out; a message may too, but has a role.
        kind = "item_reference" if "id" in item and "role" not in item else "message"
    if kind == "item_reference":
        _check_fields(item, {"type": str, "id": str}, param)
        return ItemReference(string_field(item, "id", param, limit=128), f"{param}.id")
    if isinstance(kind, str) and kind in _ITEM_FIELDS:
        fields = _ITEM_FIELDS[kind]
        if kind == "message" and item.get("role") == "assistant":
            fields = {**fields, "phase": ("commentary", "final_answer")}
        _check_fields(item, fields, param)
        for key in _REQUIRED.get(kind, ()):
            if key not in item:
                raise bad(f"Missing required parameter: '{param}.{key}'.", f"{param}.{key}")
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise bad(
                f"Invalid value for '{param}.role': expected one of 'user', 'assistant', 'system' or "
                "'developer'.",
                f"{param}.role",
            )
        if ("id" in item or "status" in item) and not isinstance(item.get("content"), list):
            # Only the short form (EasyInputMessage) may give its content as a string; it has no
            # id and no status: a message with either is an input or output message.
            raise bad(
                f"Invalid type for '{param}.content': expected an array of content parts.", f"{param}.content"
            )
        given = item.get("id") if isinstance(item.get("id"), str) else None
        return NewItem("message", role, _content(item.get("content"), f"{param}.content"), given)
    if kind == "function_call":
        fields = {
            "call_id": string_field(item, "call_id", param, limit=128),
            "name": function_name(item, param),
            "arguments": string_field(item, "arguments", param),
        }
        return NewItem("function_call", "assistant", [ItemFields(fields)])
    if kind == "function_call_output":
        output = item.get("output")
        if isinstance(output, list):  # output parts: their text, in order
            output = "".join(str(p.get("text", "")) for p in output if isinstance(p, dict))
            item = {**item, "output": output}
        fields = {
            "call_id": string_field(item, "call_id", param, limit=128),
            "output": string_field(item, "output", param),
        }
        return NewItem("function_call_output", "tool", [ItemFields(fields)])
    if kind == "file_search_call":
        given = item.get("id") if isinstance(item.get("id"), str) else None
        return NewItem("file_search_call", "assistant", [ItemFields(_file_search_call(item, param))], given)
    if kind == "code_interpreter_call":
        return NewItem(
            "code_interpreter_call", "assistant", [ItemFields(_code_interpreter_call(item, param))]
        )
    if kind == "web_search_call":
        given = item.get("id") if isinstance(item.get("id"), str) else None
        return NewItem("web_search_call", "assistant", [ItemFields(_web_search_call(item, param))], given)
    if kind == "reasoning":
        return NewItem("reasoning", "assistant", [ItemFields(_reasoning(item, param))])
    if kind == "compaction":
        return NewItem("compaction", "assistant", [ItemFields(_compaction(item, param))])
    if isinstance(kind, str) and kind in MCP_ITEM_TYPES:
        given = item.get("id") if isinstance(item.get("id"), str) else None
        speaker: MessageRole = "user" if kind == "mcp_approval_response" else "assistant"
        return NewItem(cast(ItemType, kind), speaker, [ItemFields(mcp_item(item, param))], given)
    raise bad(
        f"Invalid value for '{param}.type': {str(kind)[:64]!r} is not an input item type.", f"{param}.type"
    )


def _list(item: dict[str, Any], key: str, param: str, *, required: bool = False) -> list[Any]:
    value = item.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise bad(f"Invalid type for '{param}.{key}': expected an array.", f"{param}.{key}")
    if len(value) > MAX_INPUT_ITEMS:
        raise bad(f"Invalid '{param}.{key}': at most {MAX_INPUT_ITEMS} entries.", f"{param}.{key}")
    return value


def _objects(
    item: dict[str, Any], key: str, param: str, kinds: dict[str, dict[str, Any]], *, required: bool = False
) -> list[dict[str, Any]]:
    """``item[key]``: an array of typed objects (``kinds``: each type's fields), checked."""
    out = []
    for i, entry in enumerate(_list(item, key, param, required=required)):
        at = f"{param}.{key}[{i}]"
        if not isinstance(entry, dict):
            raise bad(f"Invalid type for '{at}': expected an object.", at)
        kind = entry.get("type")
        if not isinstance(kind, str) or kind not in kinds:
            expected = " or ".join(f"'{k}'" for k in kinds)
            raise bad(f"Invalid value for '{at}.type': expected {expected}.", f"{at}.type")
        _check_fields(entry, kinds[kind], at)
        for field_name, rule in kinds[kind].items():
            if rule is str and not isinstance(entry.get(field_name), str):
                raise bad(f"Missing required parameter: '{at}.{field_name}'.", f"{at}.{field_name}")
        out.append(entry)
    return out


def _file_search_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    """A file search call given back: its queries, and its results when it has them (``None`` if not)."""
    queries = _list(item, "queries", param, required=True)
    for i, query in enumerate(queries):
        if not isinstance(query, str) or len(query) > MAX_TEXT:
            raise bad(f"Invalid type for '{param}.queries[{i}]': expected a string.", f"{param}.queries[{i}]")
    results: list[dict[str, Any]] | None = None
    if item.get("results") is not None:
        results = []
        for i, result in enumerate(_list(item, "results", param)):
            at = f"{param}.results[{i}]"
            if not isinstance(result, dict):
                raise bad(f"Invalid type for '{at}': expected an object.", at)
            _check_fields(result, _RESULT_FIELDS, at)
            score = result.get("score")
            if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
                raise bad(f"Invalid type for '{at}.score': expected a number.", f"{at}.score")
            _attributes(result.get("attributes"), f"{at}.attributes")
            results.append(
                {
                    "file_id": result.get("file_id") or "",
                    "filename": result.get("filename") or "",
                    "score": result.get("score") or 0.0,
                    "text": result.get("text") or "",
                    "attributes": result.get("attributes") or {},
                }
            )
    return {"queries": queries, "results": results}


def _attributes(value: Any, param: str) -> None:
    """A search result's file attributes: up to 16, short keys, short strings or numbers or booleans."""
    if value is None:
        return
    if not isinstance(value, dict) or len(value) > 16:
        raise bad(f"Invalid '{param}': an object of at most 16 attributes.", param)
    for key, item in value.items():
        short = len(key) <= 64 and (not isinstance(item, str) or len(item) <= 512)
        if not short or not isinstance(item, str | int | float | bool):
            raise bad(
                f"Invalid '{param}.{key[:64]}': keys are up to 64 characters, values strings of up "
                "to 512, numbers or booleans.",
                param,
            )


def _code_interpreter_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    """A code interpreter call given back: its code and outputs."""
    code = item["code"] if isinstance(item.get("code"), str) else None
    if code is not None:
        code = string_field(item, "code", param)
    outputs = [dict(output) for output in _objects(item, "outputs", param, _OUTPUT_FIELDS)]
    return {"code": code, "container_id": item.get("container_id") or "", "outputs": outputs}


_ACTION_FIELDS: dict[str, dict[str, Any]] = {
    "search": {"type": str, "query": str, "queries": list, "sources": list},
    "open_page": {"type": str, "url": str},
    "find_in_page": {"type": str, "url": str, "pattern": str},
}


def _web_search_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    """A web search call given back: its status and its action (the query, the sources' URLs)."""
    action = item["action"]
    at = f"{param}.action"
    kind = action.get("type")
    if not isinstance(kind, str) or kind not in _ACTION_FIELDS:
        raise bad(
            f"Invalid value for '{at}.type': expected 'search', 'open_page' or 'find_in_page'.", f"{at}.type"
        )
    _check_fields(action, _ACTION_FIELDS[kind], at)
    kept: dict[str, Any] = {"type": kind}
    for key in ("query", "url", "pattern"):
        if isinstance(action.get(key), str):
            kept[key] = string_field(action, key, at, limit=8192)
    queries = _list(action, "queries", at)
    if not all(isinstance(q, str) and len(q) <= 8192 for q in queries):
        raise bad(f"Invalid type for '{at}.queries': expected an array of strings.", f"{at}.queries")
    if queries:
        kept["queries"] = queries
    if action.get("sources") is not None:
        sources = _objects(action, "sources", at, {"url": {"type": str, "url": str}})
        kept["sources"] = [{"type": "url", "url": source["url"][:8192]} for source in sources]
    return {"status": item.get("status") or "completed", "action": kept}


def _reasoning(item: dict[str, Any], param: str) -> dict[str, Any]:
    """A reasoning item given back, kept whole (its summary, text and encrypted content) to be
    returned as it came."""
    summary = _objects(item, "summary", param, {"summary_text": {"type": str, "text": str}}, required=True)
    content = _objects(item, "content", param, {"reasoning_text": {"type": str, "text": str}})
    kept: dict[str, Any] = {"summary": summary}
    if "content" in item:
        kept["content"] = content
    if item.get("encrypted_content") is not None:
        kept["encrypted_content"] = string_field(item, "encrypted_content", param)
    return kept


def _compaction(item: dict[str, Any], param: str) -> dict[str, Any]:
    """A compaction item given back (made by ``/v1/responses/compact``): kept as it came, with the
    summary it carries, which the model is shown."""
    content = string_field(item, "encrypted_content", param, limit=MAX_COMPACTION)
    summary = compaction_summary(content)
    if summary is None:
        raise bad(
            f"Invalid '{param}.encrypted_content': not a compaction made by this server.",
            f"{param}.encrypted_content",
        )
    return {"encrypted_content": content, "summary": summary}


def _content(content: Any, param: str) -> list[Part]:
    """A message's content as message parts."""
    if isinstance(content, str):
        if len(content) > MAX_TEXT or "\x00" in content:
            raise bad(f"Invalid '{param}': too long, or holds a NUL character.", param)
        return text_content(content)
    if not isinstance(content, list):
        raise bad(f"Invalid type for '{param}': expected a string or an array of content parts.", param)
    parts: list[Part] = []
    for i, part in enumerate(content):
        at = f"{param}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if isinstance(kind, str) and kind in _PART_FIELDS:
            for key in part:
                if key not in _PART_FIELDS[kind]:
                    raise bad(f"Unknown parameter: '{at}.{key}'.", f"{at}.{key}")
        if kind in ("input_text", "output_text"):
            parts.append(Text(string_field(part, "text", at)))
        elif kind == "input_image":
            detail = part.get("detail") or "auto"
            if detail not in ("auto", "low", "high"):
                raise bad(f"Invalid value for '{at}.detail'.", f"{at}.detail")
            if part.get("file_id"):
                file_id = string_field(part, "file_id", at, limit=128)
                parts.append(ImageFile(file_id, detail))
            else:
                url = string_field(part, "image_url", at)
                parts.append(ImageUrl(url, detail))
        elif kind == "refusal":
            parts.append(Refusal(string_field(part, "refusal", at)))
        elif kind == "input_file":
            parts.append(PendingFile(input_file_part(part, at)["input_file"], at))
        else:
            raise bad(
                f"Invalid value for '{at}.type': expected 'input_text', 'output_text', 'input_image', "
                "'input_file' or 'refusal'.",
                f"{at}.type",
            )
    return parts


def input_file_part(part: dict[str, Any], at: str) -> dict[str, Any]:
    """An ``input_file`` part, to be read by the domain (``domain/input_files.py``); ``param`` names
    it in the errors reading it may give."""
    if part.get("detail") not in (None, "auto", "low", "high"):
        raise bad(f"Invalid value for '{at}.detail'.", f"{at}.detail")
    given: dict[str, Any] = {}
    for key, limit in (("file_id", 128), ("filename", 1024), ("file_url", 8192), ("file_data", None)):
        if part.get(key) is not None:
            if limit is None:  # file_data: held to the upload limit as it is decoded
                value = part[key]
                if not isinstance(value, str):
                    raise bad(f"Invalid type for '{at}.{key}': expected a string.", f"{at}.{key}")
                given[key] = value
            else:
                given[key] = string_field(part, key, at, limit=limit)
    sources = [key for key in ("file_id", "file_data", "file_url") if key in given]
    if len(sources) != 1:
        raise bad(
            f"Invalid '{at}': give exactly one of 'file_id', 'file_data' or 'file_url'.",
            f"{at}.{sources[1] if len(sources) > 1 else 'file_id'}",
        )
    return {"type": "input_file", "input_file": given, "param": at}


def function_name(item: dict[str, Any], param: str) -> str:
    name = string_field(item, "name", param, limit=64)
    if FUNCTION_NAME.fullmatch(name) is None:
        raise bad(
            f"Invalid '{param}.name': a function name is 1 to 64 letters, digits, '_' or '-'.",
            f"{param}.name",
        )
    return name
