"""The reply language of the scripted model: what a test says the model answers, and how an answer
is laid out as the chat-completions deltas it streams.

A test scripts :class:`Reply` values (text, tool calls, pacing, errors, cut-offs); :func:`plan`
turns one into deltas under a ``max_tokens`` budget. Both transports read the same plan: the HTTP
fake (``server.py``) sends it as chat-completions JSON or SSE, the in-process provider
(``provider.py``) as model events, so a script means the same thing to either.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_DEFAULT_ARGUMENT_CHUNKS = 3
_WORD_PIECES = re.compile(r"^\s+|\S+\s*")

# OpenAI's (type, code) for the statuses tests usually script; anything else gets a generic pair.
_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass(slots=True)
class ToolCall:
    """One function call the model asks for. ``arguments`` dicts are sent as ``json.dumps(arguments)``."""

    name: str
    arguments: str | dict[str, Any] = "{}"
    id: str | None = None
    """The ``call_…`` id to send; a fresh random one when ``None``."""

    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass(slots=True)
class Reply:
    """What the fake model answers to one request."""

    text: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    chunks: int | None = None
    """Pieces to split the text and each call's arguments into. ``None``: one piece per word (with its
    trailing whitespace) for text, three pieces for arguments."""
    delay: float = 0.0
    """Seconds to wait before each streamed chunk after the role chunk (non-streamed: before answering,
    once per chunk that would have been streamed)."""
    first_delay: float = 0.0
    """Seconds to wait before the first byte of the response."""
    status: int | None = None
    """Answer with this HTTP status and an OpenAI error envelope instead of a completion."""
    error_message: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    """Extra response headers, e.g. ``{"retry-after": "0"}`` on a 429."""
    hang: bool = False
    """Send the headers and role chunk (streamed) or nothing (non-streamed), then wait until the client
    disconnects; the disconnect is counted in :attr:`ScriptedModel.disconnects`."""
    usage: tuple[int, int] | None = None
    """Explicit ``(prompt_tokens, completion_tokens)``; computed when ``None``."""
    refusal: str | None = None
    """A refusal to stream (``delta.refusal``) after the text, split like the text."""
    reasoning: str | None = None
    """A reasoning model's thinking, streamed before the text in ``delta.<reasoning_field>`` (split
    like the text; in the message when not streamed), its pieces counted as
    ``completion_tokens_details.reasoning_tokens``."""
    reasoning_field: str = "reasoning_content"
    """Where the thinking goes: ``reasoning_content`` (vLLM, DeepSeek, llama.cpp) or ``reasoning``."""
    finish_reason: str | None = None
    """Report this ``finish_reason`` (e.g. ``"length"``, ``"content_filter"``) instead of the computed one."""
    body: bytes | None = None
    """Answer 200 (or ``status``) with exactly these bytes, as ``content_type``, instead of the protocol:
    an HTML page, broken JSON, an event stream with empty ``choices`` ..."""
    content_type: str = "application/json"
    """The ``content-type`` of a raw ``body``."""
    endless: bool = False
    """Stream the text's pieces again and again (each after ``delay``), never finishing, until the client
    goes away."""
    trickle: float = 0.0
    """After the role chunk, send an SSE comment every this many seconds, never finishing, until the
    client goes away: a model that is never silent long enough for an idle timeout."""


Responder = Callable[[dict[str, Any]], Reply]
"""Decides the reply to a request body once the script queue is empty. Runs on the server's event loop
thread (or the provider's caller), so it must be quick and must not block."""


def content_text(content: Any) -> str:
    """A message's content as plain text; content is a string or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def echo_responder(body: dict[str, Any]) -> Reply:
    """The default responder: ``"echo: "`` followed by the last user message's text."""
    last = ""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            last = content_text(message.get("content"))
            break
    return Reply(text="echo: " + last)


def count_prompt_tokens(messages: Any) -> int:
    """A deterministic stand-in for a tokenizer: words in every message's content, plus one per message."""
    if not isinstance(messages, list):
        return 0
    return sum(1 + len(content_text(m.get("content")).split()) for m in messages if isinstance(m, dict))


def error_object(reply: Reply) -> dict[str, Any]:
    """The OpenAI error object a reply with ``status`` answers with."""
    status = reply.status or 500
    default_kind, default_code = _ERROR_KINDS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    return {
        "message": reply.error_message or f"Scripted error {status}",
        "type": reply.error_type or default_kind,
        "param": None,
        "code": reply.error_code or default_code,
    }


def _split_even(text: str, pieces: int) -> list[str]:
    """``text`` in ``pieces`` nearly equal parts (fewer if it is shorter); never an empty part."""
    if not text:
        return []
    pieces = max(1, min(pieces, len(text)))
    size, extra = divmod(len(text), pieces)
    parts: list[str] = []
    start = 0
    for i in range(pieces):
        end = start + size + (1 if i < extra else 0)
        parts.append(text[start:end])
        start = end
    return parts


def _split_text(text: str, chunks: int | None) -> list[str]:
    if chunks is None:
        return _WORD_PIECES.findall(text)
    return _split_even(text, chunks)


@dataclass(slots=True)
class Plan:
    """A reply laid out as the chat-completions deltas it streams, after the ``max_tokens`` budget."""

    deltas: list[dict[str, Any]]
    text: str | None
    tool_calls: list[dict[str, Any]]
    """The calls as a whole message carries them (``{"id", "type", "function"}``), as far as they got."""
    finish_reason: str
    fragments: int
    """Pieces streamed (the completion's token count unless the reply gives its own usage)."""
    reasoning: str | None = None
    reasoning_fragments: int = 0

    def usage(self, reply: Reply, messages: Any) -> tuple[int, int]:
        """``(prompt_tokens, completion_tokens)``: the reply's own, or counted."""
        if reply.usage is not None:
            return reply.usage
        return count_prompt_tokens(messages), self.fragments


def plan(reply: Reply, budget: int | None) -> Plan:
    """``reply`` as deltas (reasoning, text, refusal, then each call's header and argument pieces),
    cut where ``budget`` pieces are spent (``finish_reason`` ``length`` then)."""
    deltas: list[dict[str, Any]] = []
    fragments = 0
    truncated = False

    def spend() -> bool:
        nonlocal fragments, truncated
        if budget is not None and fragments >= budget:
            truncated = True
            return False
        fragments += 1
        return True

    thoughts: list[str] = []
    for piece in _split_text(reply.reasoning or "", reply.chunks):
        if not spend():
            break
        thoughts.append(piece)
        deltas.append({reply.reasoning_field: piece})
    text_parts: list[str] = []
    for piece in _split_text(reply.text or "", reply.chunks):
        if not spend():
            break
        text_parts.append(piece)
        deltas.append({"content": piece})
    for piece in _split_text(reply.refusal or "", reply.chunks):
        if not spend():
            break
        deltas.append({"refusal": piece})

    calls: list[dict[str, Any]] = []
    for index, call in enumerate(reply.tool_calls):
        if truncated:
            break
        call_id = call.id or "call_" + uuid.uuid4().hex[:24]
        pieces = _split_even(call.arguments_json(), reply.chunks or _DEFAULT_ARGUMENT_CHUNKS)
        if pieces and not spend():
            break
        deltas.append(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ]
            }
        )
        sent: list[str] = []
        for n, piece in enumerate(pieces):
            # The first piece's budget was spent above, so the call header is never sent on its own.
            if n and not spend():
                break
            sent.append(piece)
            deltas.append({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        calls.append(
            {"id": call_id, "type": "function", "function": {"name": call.name, "arguments": "".join(sent)}}
        )

    if reply.finish_reason is not None:
        finish = reply.finish_reason
    elif truncated:
        finish = "length"
    elif calls:
        finish = "tool_calls"
    else:
        finish = "stop"
    text = "".join(text_parts) if reply.text is not None else None
    reasoning = "".join(thoughts) if reply.reasoning is not None else None
    return Plan(deltas, text, calls, finish, fragments, reasoning, len(thoughts))
