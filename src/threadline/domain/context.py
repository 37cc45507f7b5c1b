"""Building what the model sees for one turn of a run, inside the model's context window.

The prompt is: the run's instructions; a summary of older conversation, when some had to be left
out; as many of the thread's newest messages as fit; then what this run has already done — its own
assistant messages and each tool round as an assistant ``tool_calls`` message followed by one
``role: tool`` message per call (a call and its output are never separated). A built-in call a
Responses client gave back as input (``file_search_call``, ``code_interpreter_call``,
``web_search_call``) is shown the same way, as a call and its output; a ``reasoning`` item is kept
in the thread but not shown; a ``compaction`` item (made by ``/v1/responses/compact``) is shown as
the summary it carries. An ``input_file`` part is shown as the file's text between
``<file name="...">`` and ``</file>`` lines (read once, when it was given:
``domain/input_files.py``), and costs its tokens like any text.

The budget is the context window (or ``max_prompt_tokens``, what is left of it over the run) minus
room for the answer. Messages are read newest first, a page at a time, until the budget is full, so
building a prompt costs the same for a 20-message thread and a 20,000-message one. Under
``truncation_strategy: auto`` the dropped part is summarised by the run's model; the summary is
stored with the thread and extended, not rewritten, as the conversation moves on (``summaries.py``).
How each entry and step is shown, and what it costs, is ``prompt_messages.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from threadline.domain.content import ImageFile, InputFile
from threadline.domain.entities import ListQuery, Message, MessageCreation, Run, RunStep, ToolCalls
from threadline.domain.model_calls import ModelCallObserver
from threadline.domain.ports.models import ChatMessage, ModelRequest, Route, Usage
from threadline.domain.ports.storage import ThreadRepository
from threadline.domain.ports.tools import NoTools, ToolSet
from threadline.domain.prompt_messages import (
    SUMMARY_PREFIX,
    Counter,
    ImageSource,
    chat_message,
    entry_messages,
    paired,
    run_messages,
)
from threadline.domain.summaries import update_summary

PAGE = 64
"""Messages read per round trip while filling the budget."""
COUNT_BATCH = 8
"""Messages whose tokens are counted at once (one trip off the event loop for a GGUF tokenizer)."""
DEFAULT_OUTPUT_RESERVE = 1024


@dataclass
class Prompt:
    request: ModelRequest | None
    """``None`` when even the newest message does not fit (see ``too_large``)."""
    too_large: Literal["max_prompt_tokens", "context_window"] | None = None
    summary_usage: Usage | None = None
    prompt_tokens: int = 0


class ContextBuilder:
    def __init__(
        self,
        threads: ThreadRepository,
        *,
        summaries: bool = True,
        default_window: int = 8192,
        tools: ToolSet | None = None,
        images: ImageSource | None = None,
        observe_model_call: ModelCallObserver | None = None,
    ) -> None:
        self.threads = threads
        self.tools: ToolSet = tools if tools is not None else NoTools()
        self.images = images
        self.observe_model_call = observe_model_call
        """Told of each summarising model call, for metrics."""
        self.summaries = summaries
        self.default_window = default_window

    async def build(self, run: Run, route: Route, steps: list[RunStep]) -> Prompt:
        counter = Counter(route)
        used = run.usage or {}
        window = await counter.window(self.default_window)
        max_tokens = None
        if run.max_completion_tokens is not None:
            max_tokens = max(1, run.max_completion_tokens - used.get("completion_tokens", 0))
        reserve = max_tokens if max_tokens is not None else min(DEFAULT_OUTPUT_RESERVE, window // 4)
        limit = window - reserve
        binding: Literal["max_prompt_tokens", "context_window"] = "context_window"
        if run.max_prompt_tokens is not None:
            left = run.max_prompt_tokens - used.get("prompt_tokens", 0)
            if left < limit:
                limit, binding = left, "max_prompt_tokens"

        head: list[ChatMessage] = (
            [{"role": "system", "content": run.instructions}] if run.instructions else []
        )
        own_ids = [s.step_details.message_id for s in steps if isinstance(s.step_details, MessageCreation)]
        own = {m.id: m for m in await self.threads.messages_by_id(own_ids)} if own_ids else {}
        tail = run_messages(steps, own, await self._mcp_calls(run))
        tools = offered_tools(run, self.tools)
        first_call = not any(isinstance(s.step_details, ToolCalls) for s in steps)
        fixed = await counter.messages(head + tail)
        if tools:
            fixed += await counter.messages([{"role": "system", "content": json.dumps(tools)}])
        room = limit - fixed

        strategy = run.truncation_strategy or {}
        exact = strategy.get("last_messages") if strategy.get("type") == "last_messages" else None
        kept, kept_tokens, dropped = await self._newest(run, counter, room, exact)
        if dropped and strategy.get("type") == "disabled":
            return Prompt(None, too_large=binding)  # a response asked for no truncation
        if exact is None and not kept and dropped:
            return Prompt(None, too_large=binding)
        if kept_tokens > room:
            return Prompt(None, too_large=binding)

        summary_usage = None
        middle: list[ChatMessage] = []
        if dropped and exact is None and self.summaries and kept:
            summary, summary_usage = await update_summary(
                self.threads,
                run,
                route,
                counter,
                window,
                kept[-1],
                page_size=PAGE,
                observe=self.observe_model_call,
            )
            if summary is not None:
                note: ChatMessage = {"role": "system", "content": SUMMARY_PREFIX + summary.text}
                cost = (await counter.each([note]))[0]
                # The summary goes in front of what is kept; older kept messages make room for it.
                while kept_tokens + cost > room and len(kept) > 1:
                    kept_tokens -= kept.pop()[1]
                    dropped += 1
                if kept_tokens + cost <= room:
                    middle, kept_tokens = [note], kept_tokens + cost

        images = await self._images(run, route, [m for m, _ in kept])
        entries = [e for m, _ in reversed(kept) for e in entry_messages(m, images, route.vision)]
        messages = head + middle + paired(entries) + tail
        request = ModelRequest(
            model=route.model,
            messages=messages,
            tools=tools,
            tool_choice=tool_choice(run, tools, self.tools, first_call),
            parallel_tool_calls=run.parallel_tool_calls if tools else None,
            temperature=run.temperature,
            top_p=run.top_p,
            max_tokens=max_tokens,
            response_format=response_format(run),
            reasoning_effort=run.reasoning_effort,
        )
        return Prompt(request, None, summary_usage, fixed + kept_tokens)

    async def _mcp_calls(self, run: Run) -> list[Message]:
        """The ``mcp_call`` entries this run wrote (none without ``mcp`` tools)."""
        if not any(t.get("type") == "mcp" for t in run.tools):
            return []
        page = await self.threads.list_messages(
            run.thread_id, ListQuery(limit=1000, order="asc"), run.id, items=True
        )
        return [m for m in page.items if m.type == "mcp_call"]

    async def _images(self, run: Run, route: Route, messages: list[Message]) -> dict[str, str]:
        """Data URLs of the images uploaded in ``messages``, for a model that sees them."""
        wanted = {
            part.file_id
            for m in messages
            for part in m.content
            if isinstance(part, ImageFile) and m.role != "assistant"
        } | {
            part.file_id
            for m in messages
            for part in m.content
            if isinstance(part, InputFile) and part.image and part.file_id is not None
        }
        if not wanted or not route.vision or self.images is None:
            return {}
        thread = await self.threads.get(run.thread_id)
        if thread is None:
            return {}
        found = {
            file_id: await self.images.data_url(file_id, thread.project_id) for file_id in sorted(wanted)
        }
        return {file_id: url for file_id, url in found.items() if url is not None}

    async def _newest(
        self, run: Run, counter: Counter, room: int, exact: int | None
    ) -> tuple[list[tuple[Message, int]], int, int]:
        """The newest thread messages that fit in ``room`` (or exactly ``exact`` of them), newest
        first with their token counts; their total; and how many were passed over (0 or more)."""
        kept: list[tuple[Message, int]] = []
        total = 0
        before: str | None = None
        while True:
            page = await self.threads.newest_messages(run.thread_id, PAGE, before=before)
            if not page:
                return kept, total, 0
            before = page[-1].id
            last_page = len(page) < PAGE
            # This run's own words and MCP calls are shown after the thread's, in the order they came.
            page = [m for m in page if m.run_id != run.id]
            # Counted a few at a time: a page usually holds more than the budget takes.
            for start in range(0, len(page), COUNT_BATCH):
                chunk = page[start : start + COUNT_BATCH]
                costs = await counter.each([chat_message(m) for m in chunk])
                for position, (message, cost) in enumerate(zip(chunk, costs, strict=True), start):
                    if exact is not None:
                        if len(kept) == exact:
                            return kept, total, 1
                    elif total + cost > room:
                        return kept, total, len(page) - position
                    kept.append((message, cost))
                    total += cost
            if last_page:
                return kept, total, 0


def offered_tools(run: Run, tools: ToolSet) -> list[dict[str, Any]]:
    """The run's tools as chat-completions functions: its functions, and each built-in tool this
    server has an implementation for (under the implementation's function name, which wins over a
    client function of the same name). Built-in tools with no implementation are left out."""
    offered: list[dict[str, Any]] = []
    builtin_names = set()
    for tool in run.tools:
        implementation = tools.get(tool.get("type", ""))
        if implementation is not None and implementation.name not in builtin_names:
            builtin_names.add(implementation.name)
            function = {
                "name": implementation.name,
                "description": implementation.description,
                "parameters": implementation.parameters,
            }
            offered.append({"type": "function", "function": function})
    for tool in run.tools:
        if tool.get("type") == "function" and tool["function"]["name"] not in builtin_names:
            function = {k: v for k, v in tool["function"].items() if v is not None}
            offered.append({"type": "function", "function": function})
    return offered


def tool_choice(
    run: Run, offered: list[dict[str, Any]], tools: ToolSet, first_call: bool
) -> str | dict[str, Any] | None:
    """The run's ``tool_choice`` for this model call. Forcing a tool (by name or ``required``) holds
    for the run's first model call only: once the tool has answered, the model must be free to
    answer, or it would call the tool forever."""
    if not offered:
        return None
    choice = run.tool_choice
    forcing = isinstance(choice, dict) or choice == "required"
    if forcing and not first_call:
        return "auto"
    if isinstance(choice, dict):
        if choice.get("type") == "function":
            return {"type": "function", "function": {"name": choice["function"]["name"]}}
        implementation = tools.get(choice.get("type", ""))
        if implementation is not None:
            return {"type": "function", "function": {"name": implementation.name}}
        return "auto"
    return str(choice) if choice else None


def response_format(run: Run) -> dict[str, Any] | None:
    fmt = run.response_format
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        return fmt
    return None
