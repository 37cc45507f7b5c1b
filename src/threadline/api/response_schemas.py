"""Wire schemas of the Responses and Conversations APIs, and their parsing into domain commands.

The request's top level is a strict Pydantic model; ``input`` items and ``tools`` are parsed by hand
so each mistake gets an error that names the exact parameter (``input[2].content[0].type``), as
OpenAI's do. Tools become the run engine's form: a Responses function tool is flat
(``{"type": "function", "name": ...}``), a run's nests it under ``function``.
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

from pydantic import Field, field_validator

from threadline.api.schemas import MAX_INT32, ReasoningEffort, Strict, WithMetadata, _check_metadata
from threadline.domain.responses import ItemReference, NewItem, NewResponse, compaction_summary
from threadline.errors import InvalidRequestError

MAX_INPUT_ITEMS = 2048
MAX_TEXT = 10 * 1024 * 1024
"""The most characters one input text may hold (OpenAI's limit on a string input)."""
MAX_COMPACTION = 20 * 1024 * 1024
"""The most characters of a compaction item's ``encrypted_content`` (the spec's limit)."""
FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
INCLUDES = (
    "file_search_call.results",
    "code_interpreter_call.outputs",
    "message.output_text.logprobs",
    "reasoning.encrypted_content",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "web_search_call.action.sources",
    "web_search_call.results",
)
REASONING_EFFORTS = get_args(ReasoningEffort)


def check_includes(values: list[str], param: str = "include") -> list[str]:
    for value in values:
        if value not in INCLUDES:
            raise InvalidRequestError(
                f"Invalid value for '{param}': {value[:100]!r}. Supported values are: "
                + ", ".join(f"'{v}'" for v in INCLUDES)
                + ".",
                param=param,
            )
    return values


class ConversationRef(Strict):
    id: str = Field(max_length=128)


class PromptCacheOptions(Strict):
    ttl: Literal["30m"] = "30m"
    mode: Literal["implicit", "explicit"] = "implicit"


class CreateResponseRequest(WithMetadata):
    model: str = Field(min_length=1, max_length=256)
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = Field(default=None, max_length=256_000)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    max_output_tokens: int | None = Field(default=None, ge=16, le=MAX_INT32)
    max_tool_calls: int | None = Field(default=None, ge=1, le=MAX_INT32)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    store: bool | None = None
    previous_response_id: str | None = Field(default=None, max_length=128)
    conversation: str | ConversationRef | None = None
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    background: bool | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    """Echoed as sent; its ``effort`` goes to the model as ``reasoning_effort``."""
    user: str | None = Field(default=None, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=256)
    prompt_cache_key: str | None = Field(default=None, max_length=256)
    # Caching hints: accepted and echoed; a server without a prompt cache has nothing to keep.
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: PromptCacheOptions | None = None
    service_tier: str | None = None

    @field_validator("reasoning")
    @classmethod
    def _reasoning(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        effort = value.get("effort")
        if effort is not None and effort not in REASONING_EFFORTS:
            raise ValueError(f"unknown reasoning.effort {str(effort)[:80]!r}")
        if value.get("summary") not in (None, "auto", "concise", "detailed"):
            raise ValueError(f"unknown reasoning.summary {str(value.get('summary'))[:80]!r}")
        return value

    @field_validator("include")
    @classmethod
    def _include(cls, value: list[str] | None) -> list[str] | None:
        for item in value or []:
            if item not in INCLUDES:
                raise ValueError(f"unknown include value {item[:80]!r}")
        return value

    def command(self) -> NewResponse:
        if self.background and self.store is False:
            raise InvalidRequestError("Background mode requires store=true.", param="background")
        tools, resources = parse_tools(self.tools or [])
        choice = parse_tool_choice(self.tool_choice)
        if isinstance(self.tool_choice, dict) and self.tool_choice.get("type") == "allowed_tools":
            tools, choice = allowed_tools(self.tool_choice, tools)
        conversation = (
            self.conversation.id if isinstance(self.conversation, ConversationRef) else self.conversation
        )
        text = self.text or {"format": {"type": "text"}}
        return NewResponse(
            model=self.model,
            input=parse_input(self.input),
            instructions=self.instructions,
            tools=tools,
            tool_resources=resources,
            tool_choice=choice,
            parallel_tool_calls=True if self.parallel_tool_calls is None else self.parallel_tool_calls,
            response_format=parse_text_format(text),
            max_output_tokens=self.max_output_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            metadata=self.metadata or {},
            truncation=self.truncation or "disabled",
            previous_response_id=self.previous_response_id,
            conversation=conversation,
            reasoning_effort=(self.reasoning or {}).get("effort"),
            background=bool(self.background),
            store=self.store is not False,
            settings={
                "tools": self.tools or [],
                "tool_choice": self.tool_choice or "auto",
                "text": text,
                "include": self.include or [],
                "truncation": self.truncation or "disabled",
                "reasoning": self.reasoning,
                "user": self.user,
                "max_tool_calls": self.max_tool_calls,
                "top_logprobs": self.top_logprobs or 0,
                "safety_identifier": self.safety_identifier,
                "prompt_cache_key": self.prompt_cache_key,
                "prompt_cache_retention": self.prompt_cache_retention,
                "prompt_cache_options": (
                    self.prompt_cache_options.model_dump() if self.prompt_cache_options is not None else None
                ),
                "instructions": self.instructions,
            },
        )


class CountTokensRequest(Strict):
    """``POST /v1/responses/input_tokens``: what a response with these fields would send the model."""

    model: str | None = Field(default=None, max_length=256)
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = Field(default=None, max_length=256_000)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    previous_response_id: str | None = Field(default=None, max_length=128)
    conversation: str | ConversationRef | None = None
    personality: str | None = Field(default=None, max_length=64)

    def command(self) -> NewResponse:
        if not self.model:
            raise InvalidRequestError("Missing required parameter: 'model'.", param="model")
        fields = self.model_dump(exclude={"personality", "conversation"})
        return CreateResponseRequest.model_construct(**fields, conversation=self.conversation).command()


class CompactRequest(Strict):
    """``POST /v1/responses/compact``: the conversation to compact, as a response would continue it."""

    model: str | None = Field(max_length=256)
    input: str | list[dict[str, Any]] | None = None
    previous_response_id: str | None = Field(default=None, max_length=128)
    instructions: str | None = Field(default=None, max_length=256_000)
    """Accepted; the summary is of the conversation, which instructions are not part of."""
    prompt_cache_key: str | None = Field(default=None, max_length=64)
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: PromptCacheOptions | None = None
    service_tier: Literal["auto", "default", "fast", "flex", "priority"] | None = None
    """The prompt cache and service tier fields are accepted and not used (no prompt cache, one tier)."""

    def command(self) -> NewResponse:
        if not self.model:
            raise InvalidRequestError("Missing required parameter: 'model'.", param="model")
        return NewResponse(
            model=self.model,
            input=parse_input(self.input),
            instructions=self.instructions,
            previous_response_id=self.previous_response_id,
        )


class CreateConversationRequest(WithMetadata):
    items: list[dict[str, Any]] | None = Field(default=None, max_length=20)

    def new_items(self) -> list[NewItem | ItemReference]:
        return parse_items(self.items or [], "items")


class UpdateConversationRequest(Strict):
    metadata: dict[str, str] | None
    """Required, but may be null: null clears it."""

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str]:
        return _check_metadata(value) or {}


class CreateItemsRequest(Strict):
    items: list[dict[str, Any]] = Field(max_length=20)

    def new_items(self) -> list[NewItem | ItemReference]:
        return parse_items(self.items, "items")


# --- input -------------------------------------------------------------------------------


def _bad(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def _string(item: dict[str, Any], key: str, param: str, *, limit: int = MAX_TEXT) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise _bad(f"Invalid type for '{param}.{key}': expected a string.", f"{param}.{key}")
    if len(value) > limit or "\x00" in value:
        raise _bad(f"Invalid '{param}.{key}': too long, or holds a NUL character.", f"{param}.{key}")
    return value


def parse_input(value: str | list[dict[str, Any]] | None) -> list[NewItem | ItemReference]:
    if value is None:
        return []
    if isinstance(value, str):
        if len(value) > MAX_TEXT or "\x00" in value:
            raise _bad("Invalid 'input': too long, or holds a NUL character.", "input")
        return [NewItem("message", "user", _text_part(value))]
    return parse_items(value, "input")


def parse_items(items: list[dict[str, Any]], param: str) -> list[NewItem | ItemReference]:
    if len(items) > MAX_INPUT_ITEMS:
        raise _bad(f"Invalid '{param}': at most {MAX_INPUT_ITEMS} items.", param)
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
            raise _bad(f"Unknown parameter: '{param}.{key}'.", f"{param}.{key}")
        if value is None or rule is object:
            continue
        if isinstance(rule, tuple):
            if value not in rule:
                raise _bad(f"Invalid value for '{param}.{key}'.", f"{param}.{key}")
        elif not isinstance(value, rule):
            raise _bad(f"Invalid type for '{param}.{key}'.", f"{param}.{key}")


def _item(item: dict[str, Any], param: str) -> NewItem | ItemReference:
    if not isinstance(item, dict):
        raise _bad(f"Invalid type for '{param}': expected an object.", param)
    kind = item.get("type")
    if kind is None:
        # An item reference may leave its type out; a message may too, but has a role.
        kind = "item_reference" if "id" in item and "role" not in item else "message"
    if kind == "item_reference":
        _check_fields(item, {"type": str, "id": str}, param)
        return ItemReference(_string(item, "id", param, limit=128), f"{param}.id")
    if isinstance(kind, str) and kind in _ITEM_FIELDS:
        fields = _ITEM_FIELDS[kind]
        if kind == "message" and item.get("role") == "assistant":
            fields = {**fields, "phase": ("commentary", "final_answer")}
        _check_fields(item, fields, param)
        for key in _REQUIRED.get(kind, ()):
            if key not in item:
                raise _bad(f"Missing required parameter: '{param}.{key}'.", f"{param}.{key}")
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise _bad(
                f"Invalid value for '{param}.role': expected one of 'user', 'assistant', 'system' or "
                "'developer'.",
                f"{param}.role",
            )
        if ("id" in item or "status" in item) and not isinstance(item.get("content"), list):
            # Only the short form (EasyInputMessage) may give its content as a string; it has no
            # id and no status: a message with either is an input or output message.
            raise _bad(
                f"Invalid type for '{param}.content': expected an array of content parts.", f"{param}.content"
            )
        given = item.get("id") if isinstance(item.get("id"), str) else None
        return NewItem("message", role, _content(item.get("content"), f"{param}.content"), given)
    if kind == "function_call":
        fields = {
            "call_id": _string(item, "call_id", param, limit=128),
            "name": _function_name(item, param),
            "arguments": _string(item, "arguments", param),
        }
        return NewItem("function_call", "assistant", [fields])
    if kind == "function_call_output":
        output = item.get("output")
        if isinstance(output, list):  # output parts: their text, in order
            output = "".join(str(p.get("text", "")) for p in output if isinstance(p, dict))
            item = {**item, "output": output}
        fields = {
            "call_id": _string(item, "call_id", param, limit=128),
            "output": _string(item, "output", param),
        }
        return NewItem("function_call_output", "tool", [fields])
    if kind == "file_search_call":
        given = item.get("id") if isinstance(item.get("id"), str) else None
        return NewItem("file_search_call", "assistant", [_file_search_call(item, param)], given)
    if kind == "code_interpreter_call":
        return NewItem("code_interpreter_call", "assistant", [_code_interpreter_call(item, param)])
    if kind == "reasoning":
        return NewItem("reasoning", "assistant", [_reasoning(item, param)])
    if kind == "compaction":
        return NewItem("compaction", "assistant", [_compaction(item, param)])
    raise _bad(
        f"Invalid value for '{param}.type': {str(kind)[:64]!r} is not an input item type.", f"{param}.type"
    )


def _list(item: dict[str, Any], key: str, param: str, *, required: bool = False) -> list[Any]:
    value = item.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise _bad(f"Invalid type for '{param}.{key}': expected an array.", f"{param}.{key}")
    if len(value) > MAX_INPUT_ITEMS:
        raise _bad(f"Invalid '{param}.{key}': at most {MAX_INPUT_ITEMS} entries.", f"{param}.{key}")
    return value


def _objects(
    item: dict[str, Any], key: str, param: str, kinds: dict[str, dict[str, Any]], *, required: bool = False
) -> list[dict[str, Any]]:
    """``item[key]``: an array of typed objects (``kinds``: each type's fields), checked."""
    out = []
    for i, entry in enumerate(_list(item, key, param, required=required)):
        at = f"{param}.{key}[{i}]"
        if not isinstance(entry, dict):
            raise _bad(f"Invalid type for '{at}': expected an object.", at)
        kind = entry.get("type")
        if not isinstance(kind, str) or kind not in kinds:
            expected = " or ".join(f"'{k}'" for k in kinds)
            raise _bad(f"Invalid value for '{at}.type': expected {expected}.", f"{at}.type")
        _check_fields(entry, kinds[kind], at)
        for field_name, rule in kinds[kind].items():
            if rule is str and not isinstance(entry.get(field_name), str):
                raise _bad(f"Missing required parameter: '{at}.{field_name}'.", f"{at}.{field_name}")
        out.append(entry)
    return out


def _file_search_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    """A file search call given back: its queries, and its results when it has them (``None`` if not)."""
    queries = _list(item, "queries", param, required=True)
    for i, query in enumerate(queries):
        if not isinstance(query, str) or len(query) > MAX_TEXT:
            raise _bad(
                f"Invalid type for '{param}.queries[{i}]': expected a string.", f"{param}.queries[{i}]"
            )
    results: list[dict[str, Any]] | None = None
    if item.get("results") is not None:
        results = []
        for i, result in enumerate(_list(item, "results", param)):
            at = f"{param}.results[{i}]"
            if not isinstance(result, dict):
                raise _bad(f"Invalid type for '{at}': expected an object.", at)
            _check_fields(result, _RESULT_FIELDS, at)
            score = result.get("score")
            if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
                raise _bad(f"Invalid type for '{at}.score': expected a number.", f"{at}.score")
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
        raise _bad(f"Invalid '{param}': an object of at most 16 attributes.", param)
    for key, item in value.items():
        short = len(key) <= 64 and (not isinstance(item, str) or len(item) <= 512)
        if not short or not isinstance(item, str | int | float | bool):
            raise _bad(
                f"Invalid '{param}.{key[:64]}': keys are up to 64 characters, values strings of up "
                "to 512, numbers or booleans.",
                param,
            )


def _code_interpreter_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    """A code interpreter call given back: its code and outputs."""
    code = item["code"] if isinstance(item.get("code"), str) else None
    if code is not None:
        code = _string(item, "code", param)
    outputs = [dict(output) for output in _objects(item, "outputs", param, _OUTPUT_FIELDS)]
    return {"code": code, "container_id": item.get("container_id") or "", "outputs": outputs}


def _reasoning(item: dict[str, Any], param: str) -> dict[str, Any]:
    """A reasoning item given back, kept whole (its summary, text and encrypted content) to be
    returned as it came."""
    summary = _objects(item, "summary", param, {"summary_text": {"type": str, "text": str}}, required=True)
    content = _objects(item, "content", param, {"reasoning_text": {"type": str, "text": str}})
    kept: dict[str, Any] = {"summary": summary}
    if "content" in item:
        kept["content"] = content
    if item.get("encrypted_content") is not None:
        kept["encrypted_content"] = _string(item, "encrypted_content", param)
    return kept


def _compaction(item: dict[str, Any], param: str) -> dict[str, Any]:
    """A compaction item given back (made by ``/v1/responses/compact``): kept as it came, with the
    summary it carries, which the model is shown."""
    content = _string(item, "encrypted_content", param, limit=MAX_COMPACTION)
    summary = compaction_summary(content)
    if summary is None:
        raise _bad(
            f"Invalid '{param}.encrypted_content': not a compaction made by this server.",
            f"{param}.encrypted_content",
        )
    return {"encrypted_content": content, "summary": summary}


def _text_part(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": {"value": text, "annotations": []}}]


def _content(content: Any, param: str) -> list[dict[str, Any]]:
    """A message's content as stored message parts (the Assistants API's form)."""
    if isinstance(content, str):
        if len(content) > MAX_TEXT or "\x00" in content:
            raise _bad(f"Invalid '{param}': too long, or holds a NUL character.", param)
        return _text_part(content)
    if not isinstance(content, list):
        raise _bad(f"Invalid type for '{param}': expected a string or an array of content parts.", param)
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        at = f"{param}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if isinstance(kind, str) and kind in _PART_FIELDS:
            for key in part:
                if key not in _PART_FIELDS[kind]:
                    raise _bad(f"Unknown parameter: '{at}.{key}'.", f"{at}.{key}")
        if kind in ("input_text", "output_text"):
            parts += _text_part(_string(part, "text", at))
        elif kind == "input_image":
            detail = part.get("detail") or "auto"
            if detail not in ("auto", "low", "high"):
                raise _bad(f"Invalid value for '{at}.detail'.", f"{at}.detail")
            if part.get("file_id"):
                file_id = _string(part, "file_id", at, limit=128)
                parts.append({"type": "image_file", "image_file": {"file_id": file_id, "detail": detail}})
            else:
                url = _string(part, "image_url", at)
                parts.append({"type": "image_url", "image_url": {"url": url, "detail": detail}})
        elif kind == "refusal":
            parts.append({"type": "refusal", "refusal": _string(part, "refusal", at)})
        elif kind == "input_file":
            parts.append(input_file_part(part, at))
        else:
            raise _bad(
                f"Invalid value for '{at}.type': expected 'input_text', 'output_text', 'input_image', "
                "'input_file' or 'refusal'.",
                f"{at}.type",
            )
    return parts


def input_file_part(part: dict[str, Any], at: str) -> dict[str, Any]:
    """An ``input_file`` part, to be read by the domain (``domain/input_files.py``); ``param`` names
    it in the errors reading it may give."""
    if part.get("detail") not in (None, "auto", "low", "high"):
        raise _bad(f"Invalid value for '{at}.detail'.", f"{at}.detail")
    given: dict[str, Any] = {}
    for key, limit in (("file_id", 128), ("filename", 1024), ("file_url", 8192), ("file_data", None)):
        if part.get(key) is not None:
            if limit is None:  # file_data: held to the upload limit as it is decoded
                value = part[key]
                if not isinstance(value, str):
                    raise _bad(f"Invalid type for '{at}.{key}': expected a string.", f"{at}.{key}")
                given[key] = value
            else:
                given[key] = _string(part, key, at, limit=limit)
    sources = [key for key in ("file_id", "file_data", "file_url") if key in given]
    if len(sources) != 1:
        raise _bad(
            f"Invalid '{at}': give exactly one of 'file_id', 'file_data' or 'file_url'.",
            f"{at}.{sources[1] if len(sources) > 1 else 'file_id'}",
        )
    return {"type": "input_file", "input_file": given, "param": at}


# --- tools -------------------------------------------------------------------------------


def parse_tools(tools: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The run engine's tools and the resources they name (file_search's vector stores)."""
    out: list[dict[str, Any]] = []
    resources: dict[str, Any] = {}
    for i, tool in enumerate(tools):
        param = f"tools[{i}]"
        kind = tool.get("type")
        if kind == "function":
            name = _function_name(tool, param)
            parameters = tool.get("parameters")
            if parameters is not None and not isinstance(parameters, dict):
                raise _bad(
                    f"Invalid type for '{param}.parameters': expected an object.", f"{param}.parameters"
                )
            function = {"name": name, "description": tool.get("description"), "parameters": parameters}
            if tool.get("strict") is not None:
                function["strict"] = bool(tool["strict"])
            out.append({"type": "function", "function": function})
        elif kind == "file_search":
            ids = tool.get("vector_store_ids")
            if not isinstance(ids, list) or not all(isinstance(v, str) for v in ids):
                raise _bad(
                    f"Missing required parameter: '{param}.vector_store_ids'.", f"{param}.vector_store_ids"
                )
            known = resources.setdefault("file_search", {"vector_store_ids": []})["vector_store_ids"]
            known += [v for v in ids if v not in known]
            options: dict[str, Any] = {}
            if tool.get("max_num_results") is not None:
                options["max_num_results"] = tool["max_num_results"]
            ranking = tool.get("ranking_options") or {}
            if ranking.get("score_threshold") is not None:
                options["ranking_options"] = {
                    "ranker": "auto",
                    "score_threshold": ranking["score_threshold"],
                }
            out.append({"type": "file_search", "file_search": options})
        elif kind == "code_interpreter":
            container = tool.get("container")
            if isinstance(container, dict) and container.get("file_ids"):
                resources["code_interpreter"] = {"file_ids": list(container["file_ids"])}
            out.append({"type": "code_interpreter"})
        else:
            raise _bad(
                f"Tools of type '{str(kind)[:64]}' are not supported by this server: use 'function', "
                "'file_search' or 'code_interpreter'.",
                f"{param}.type",
            )
    return out, resources


def _function_name(item: dict[str, Any], param: str) -> str:
    name = _string(item, "name", param, limit=64)
    if FUNCTION_NAME.fullmatch(name) is None:
        raise _bad(
            f"Invalid '{param}.name': a function name is 1 to 64 letters, digits, '_' or '-'.",
            f"{param}.name",
        )
    return name


def parse_tool_choice(choice: str | dict[str, Any] | None) -> Any:
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise _bad(
                "Invalid value for 'tool_choice': expected 'auto', 'none' or 'required'.", "tool_choice"
            )
        return choice
    kind = choice.get("type")
    if kind == "function":
        name = choice.get("name")
        if not isinstance(name, str):
            raise _bad("Missing required parameter: 'tool_choice.name'.", "tool_choice.name")
        return {"type": "function", "function": {"name": name}}
    if kind in ("file_search", "code_interpreter"):
        return {"type": kind}
    if kind == "allowed_tools":
        return "auto"  # the tools are narrowed by ``allowed_tools``
    raise _bad(f"Invalid value for 'tool_choice.type': {str(kind)[:64]!r}.", "tool_choice.type")


def allowed_tools(choice: dict[str, Any], tools: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """``tool_choice: {"type": "allowed_tools", "mode", "tools"}``: the request's tools narrowed to
    the ones listed (each must be one of them), and the ``tool_choice`` its ``mode`` stands for."""
    for field_name in choice:
        if field_name not in ("type", "mode", "tools"):
            raise _bad(f"Unknown parameter: 'tool_choice.{field_name}'.", f"tool_choice.{field_name}")
    mode = choice.get("mode")
    if mode not in ("auto", "required"):
        raise _bad("Invalid value for 'tool_choice.mode': expected 'auto' or 'required'.", "tool_choice.mode")
    listed = choice.get("tools")
    if not isinstance(listed, list):
        raise _bad("Missing required parameter: 'tool_choice.tools'.", "tool_choice.tools")
    offered = {_tool_key(tool): tool for tool in tools}
    kept: list[dict[str, Any]] = []
    for i, tool in enumerate(listed):
        param = f"tool_choice.tools[{i}]"
        if not isinstance(tool, dict):
            raise _bad(f"Invalid type for '{param}': expected an object.", param)
        kind = str(tool.get("type"))
        wanted = (kind, str(tool.get("name")) if kind == "function" else "")
        if wanted not in offered:
            raise _bad(f"Invalid value for '{param}': it names no tool of the request's 'tools'.", param)
        if offered[wanted] not in kept:
            kept.append(offered[wanted])
    return kept, str(mode)


def _tool_key(tool: dict[str, Any]) -> tuple[str, str]:
    """A run engine tool's identity: its type, and a function's name."""
    if tool.get("type") == "function":
        return "function", str(tool["function"]["name"])
    return str(tool.get("type")), ""


def parse_text_format(text: dict[str, Any]) -> Any:
    """``text.format`` as a run's ``response_format``."""
    fmt = text.get("format") or {"type": "text"}
    kind = fmt.get("type")
    if kind == "text":
        return "auto"
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
            raise _bad(
                "Missing required parameter: 'text.format.name' or 'text.format.schema'.", "text.format"
            )
        spec = {"name": fmt["name"], "schema": fmt["schema"], "strict": bool(fmt.get("strict"))}
        if fmt.get("description") is not None:
            spec["description"] = fmt["description"]
        return {"type": "json_schema", "json_schema": spec}
    raise _bad(f"Invalid value for 'text.format.type': {str(kind)[:64]!r}.", "text.format.type")
