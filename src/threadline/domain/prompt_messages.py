"""What the model is shown of a thread's entries and a run's steps, as chat messages, and their cost.

A thread entry is one chat message, or none (a ``reasoning`` item, kept but not shown), or a call
and its output (a built-in call a Responses client gave back, a finished ``mcp_call``, a refused
MCP approval). A ``compaction`` item is shown as the
summary it carries; an ``input_file`` part as the file's text between ``<file name="...">`` and
``</file>`` lines. A run's own steps go back as assistant messages and tool rounds. ``Counter``
counts their tokens with the route's tokenizer. Used by the context builder (``context.py``), the
summaries (``summaries.py``) and the Responses service.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any, Protocol

from threadline.domain.content import ImageFile, ImageUrl, InputFile, Text
from threadline.domain.entities import Message, MessageCreation, RunStep, ToolCallRecord
from threadline.domain.ports.models import ChatMessage, LocalModel, Route
from threadline.domain.ports.tools import CODE_INTERPRETER, FILE_SEARCH, WEB_SEARCH
from threadline.domain.steps import WEB_SEARCH_READ

MESSAGE_OVERHEAD = 4
"""Tokens a chat message costs beyond its text (role, separators), as OpenAI counts them."""
SUMMARY_PREFIX = "Summary of the earlier conversation, which is no longer shown in full:\n"


class ImageSource(Protocol):
    async def data_url(self, file_id: str, project_id: str) -> str | None:
        """The uploaded image as a ``data:`` URL, or ``None`` (no such file, not an image, too large)."""


def chat_message(
    message: Message, images: Mapping[str, str] | None = None, vision: bool = True
) -> ChatMessage:
    """``message`` as a chat message. ``images``: data URLs of its uploaded images, for a model that
    sees (``vision``); a model that does not is told in words that an image was there."""
    if message.type == "function_call":
        item = message.fields
        call = {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        return {"role": "assistant", "content": None, "tool_calls": [call]}
    if message.type == "function_call_output":
        item = message.fields
        return {"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]}
    if message.type in HOSTED_CALLS or message.type in MCP_ITEMS:
        # Counted as one message; ``entry_messages`` gives it to the model as a call and its output.
        shown = entry_messages(message)
        if len(shown) != 2:
            return {"role": "assistant", "content": ""}
        call, output = shown
        return {"role": "assistant", "content": output["content"], "tool_calls": call["tool_calls"]}
    if message.type == "reasoning":
        # A chat model takes no reasoning back: the item is kept for the client, not shown.
        return {"role": "assistant", "content": ""}
    if message.type == "compaction":
        return {"role": "system", "content": SUMMARY_PREFIX + message.fields["summary"]}
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, Text):
            parts.append({"type": "text", "text": part.value})
        elif isinstance(part, ImageUrl) and vision:
            image = {"url": part.url} if part.detail is None else {"url": part.url, "detail": part.detail}
            parts.append({"type": "image_url", "image_url": image})
        elif isinstance(part, ImageUrl):
            parts.append({"type": "text", "text": "[The user sent an image, which this model cannot see.]"})
        elif isinstance(part, InputFile):
            parts.append(file_part(part, parts, images, vision))
        elif isinstance(part, ImageFile) and message.role != "assistant":
            # (An answer's images are the charts its code drew: the model was told of them when the
            # code ran.)
            url = (images or {}).get(part.file_id)
            if url is not None:
                parts.append(
                    {"type": "image_url", "image_url": {"url": url, "detail": part.detail or "auto"}}
                )
            else:
                # The model is told an image is there, not left to answer as if the user sent nothing.
                parts.append(
                    {
                        "type": "text",
                        "text": f"[The user attached an image, file {part.file_id}, which is not shown here.]",
                    }
                )
    # Responses' "developer" messages are system messages to a chat model.
    role = "system" if message.role == "developer" else message.role
    if all(p["type"] == "text" for p in parts):
        return {"role": role, "content": "".join(p["text"] for p in parts)}
    return {"role": role, "content": parts}


def file_part(
    file: InputFile, before: list[dict[str, Any]], images: Mapping[str, str] | None, vision: bool
) -> dict[str, Any]:
    """An ``input_file`` part for the model: its text inside ``<file name="...">`` and ``</file>``
    lines (on a line of its own after text), or, for an image, the image as ``input_image`` sends it."""
    name = str(file.filename or file.file_id or "file")
    if file.text is not None:
        quoted = name.replace("&", "&amp;").replace('"', "&quot;")
        glue = (
            "\n" if before and before[-1]["type"] == "text" and not before[-1]["text"].endswith("\n") else ""
        )
        return {"type": "text", "text": f'{glue}<file name="{quoted}">\n{file.text}\n</file>\n'}
    url = file.image_url or (images or {}).get(str(file.file_id))
    if url is not None and vision:
        return {"type": "image_url", "image_url": {"url": url, "detail": "auto"}}
    return {"type": "text", "text": f"[The user attached an image, {name}, which is not shown here.]"}


HOSTED_CALLS = ("file_search_call", "code_interpreter_call", "web_search_call")
"""Thread entries that are a built-in tool's call and its result, given back as Responses input."""


def hosted_call(message: Message) -> tuple[ChatMessage, ChatMessage]:
    """A ``file_search_call``, ``code_interpreter_call`` or ``web_search_call`` entry as the model saw
    the server's own calls: an assistant call of the tool's function, and the tool's answer."""
    item = message.fields
    if message.type == "file_search_call":
        queries = [str(q) for q in item.get("queries") or []]
        name, arguments = FILE_SEARCH.name, {"query": " ".join(queries)}
        results = item.get("results")
        if results is None:
            output = "(The results of this search were not kept.)"
        elif not results:
            output = "No results found in the files."
        else:
            output = "\n\n".join(
                f"{r.get('filename') or r.get('file_id')}:\n{r.get('text', '')}" for r in results
            )
    elif message.type == "web_search_call":
        action = item.get("action") or {}
        query = action.get("query") or " ".join(str(q) for q in action.get("queries") or [])
        name, arguments = WEB_SEARCH.name, {"query": str(query)}
        urls = [str(s.get("url")) for s in action.get("sources") or [] if isinstance(s, dict)]
        read = item.get(WEB_SEARCH_READ)
        if item.get("status") == "failed":
            output = "Error: the web search failed."
        elif isinstance(read, dict) and isinstance(read.get("text"), str):
            output = read["text"]
        elif urls:
            output = "The pages found (their text was not kept):\n" + "\n".join(urls)
        else:
            output = "(The results of this search were not kept.)"
    else:
        name, arguments = CODE_INTERPRETER.name, {"code": item.get("code") or ""}
        told = [
            str(o.get("logs", ""))
            if o.get("type") == "logs"
            else f"an image was shown to the user ({o.get('url')})"
            for o in item.get("outputs") or []
        ]
        output = "\n".join(t for t in told if t) or "(no output)"
    call = {
        "id": message.id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)},
    }
    return (
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": message.id, "content": output},
    )


MCP_ITEMS = ("mcp_list_tools", "mcp_call", "mcp_approval_request", "mcp_approval_response")


def mcp_messages(message: Message) -> list[ChatMessage]:
    """An MCP item as the model saw it: a finished ``mcp_call`` (or a call the user refused, kept on
    its ``mcp_approval_response``) as a call of the tool's function and its answer; the lists and
    the requests themselves are not shown (the tools are offered as functions)."""
    item = message.fields
    if message.type == "mcp_call" and item.get("status") in ("completed", "failed"):
        error = item.get("error")
        output = item.get("output") if not error else f"Error: {mcp_error_text(error)}"
    elif message.type == "mcp_approval_response" and item.get("approve") is False and item.get("name"):
        reason = item.get("reason")
        output = "The user did not approve this call." + (f" Their reason: {reason}" if reason else "")
    else:
        return []
    call = {
        "id": message.id,
        "type": "function",
        "function": {"name": str(item.get("name")), "arguments": str(item.get("arguments") or "{}")},
    }
    return [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": message.id, "content": str(output or "")},
    ]


def mcp_error_text(error: Any) -> str:
    """An ``mcp_call.error`` as words: its message, or its content's text."""
    if not isinstance(error, dict):
        return str(error)
    if error.get("message"):
        return str(error["message"])
    texts = [str(c.get("text")) for c in error.get("content") or [] if isinstance(c, dict) and c.get("text")]
    return "\n".join(texts) or "The tool failed."


def entry_messages(
    message: Message, images: Mapping[str, str] | None = None, vision: bool = True
) -> list[ChatMessage]:
    """A thread entry as the chat messages the model is shown (none, one, or a call and its output)."""
    if message.type in HOSTED_CALLS:
        return list(hosted_call(message))
    if message.type in MCP_ITEMS:
        return mcp_messages(message)
    if message.type == "reasoning":
        return []
    return [chat_message(message, images, vision)]


def paired(messages: list[ChatMessage]) -> list[ChatMessage]:
    """Thread entries as a chat model accepts them: function calls in a row (Responses items) become
    one assistant message followed by the outputs of its calls. A call with no output, or an output
    whose call was left out of the context, is dropped: chat models refuse either."""
    outputs = {m["tool_call_id"]: m for m in messages if m.get("role") == "tool"}
    out: list[ChatMessage] = []
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        answered = [c for c in pending if c["id"] in outputs]
        if answered:
            out.append({"role": "assistant", "content": None, "tool_calls": answered})
            out.extend(outputs[c["id"]] for c in answered)
        pending.clear()

    for message in messages:
        if message.get("role") == "tool":
            continue
        if message.get("role") == "assistant" and message.get("tool_calls"):
            pending.extend(message["tool_calls"])
            continue
        flush()
        out.append(message)
    flush()
    return out


def run_messages(
    steps: list[RunStep], own: dict[str, Message], mcp_calls: list[Message] | None = None
) -> list[ChatMessage]:
    """What this run did so far, as chat messages, in the order it happened.

    The tool calls of one model response (built-in and function calls alike, though they sit in
    separate steps) go back as one assistant message, followed by each call's output; a response
    whose calls are not all answered yet is left out. The run's ``mcp_call`` entries go where their
    turn puts them: an approved call before its turn's steps, a call the model made after them.
    """
    out: list[ChatMessage] = []
    calls: list[ToolCallRecord] = []
    turn: int | None = None
    waiting = sorted(mcp_calls or [], key=_mcp_position)

    def catch_up(position: tuple[int, int]) -> None:
        while waiting and _mcp_position(waiting[0]) < position:
            flush()
            out.extend(mcp_messages(waiting.pop(0)))

    def flush() -> None:
        if calls and all(c.output is not None for c in calls):
            out.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments},
                        }
                        for c in calls
                    ],
                }
            )
            out.extend({"role": "tool", "tool_call_id": c.id, "content": c.output} for c in calls)
        calls.clear()

    for step in steps:
        catch_up((step.turn, 1))
        details = step.step_details
        if isinstance(details, MessageCreation):
            flush()
            message = own.get(details.message_id)
            if message is not None and message.text:
                out.append(chat_message(message))
            continue
        if step.turn != turn:
            flush()
            turn = step.turn
        calls.extend(details.calls)
    flush()
    catch_up((sys.maxsize, 0))
    return out


def _mcp_position(entry: Message) -> tuple[int, int]:
    """Where an MCP entry of the run goes among its steps (which sit at ``(turn, 1)``)."""
    return int(entry.metadata.get("turn", "0")), 0 if entry.metadata.get("place") == "start" else 2


def message_text(message: ChatMessage) -> str:
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    calls = json.dumps(message["tool_calls"]) if message.get("tool_calls") else ""
    return f"{content or ''}{calls}"


class Counter:
    """Counts prompt tokens with the route's tokenizer, or the embedded model's own (off the loop)."""

    def __init__(self, route: Route) -> None:
        self.route = route

    async def messages(self, messages: list[ChatMessage]) -> int:
        return sum(await self.each(messages))

    async def each(self, messages: list[ChatMessage]) -> list[int]:
        texts = [message_text(m) for m in messages]
        tokenizer = self.route.tokenizer
        if tokenizer is not None:
            return [tokenizer.count(t) + MESSAGE_OVERHEAD for t in texts]
        provider = self.route.provider
        assert isinstance(provider, LocalModel), "a route without a tokenizer is a local model's"
        return [n + MESSAGE_OVERHEAD for n in await provider.count_tokens(texts)]

    async def window(self, default: int) -> int:
        if self.route.context_window:
            return self.route.context_window
        provider = self.route.provider
        if isinstance(provider, LocalModel):
            return await provider.context_window()
        return default
