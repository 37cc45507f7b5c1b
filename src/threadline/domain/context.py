"""Building what the model sees for one turn of a run, inside the model's context window.

The prompt is: the run's instructions; a summary of older conversation, when some had to be left
out; as many of the thread's newest messages as fit; then what this run has already done — its own
assistant messages and each tool round as an assistant ``tool_calls`` message followed by one
``role: tool`` message per call (a call and its output are never separated). A built-in call a
Responses client gave back as input (``file_search_call``, ``code_interpreter_call``) is shown the
same way, as a call and its output; a ``reasoning`` item is kept in the thread but not shown; a
``compaction`` item (made by ``/v1/responses/compact``) is shown as the summary it carries. An
``input_file`` part is shown as the file's text between ``<file name="...">`` and ``</file>`` lines
(read once, when it was given: ``domain/input_files.py``), and costs its tokens like any text.

The budget is the context window (or ``max_prompt_tokens``, what is left of it over the run) minus
room for the answer. Messages are read newest first, a page at a time, until the budget is full, so
building a prompt costs the same for a 20-message thread and a 20,000-message one. Under
``truncation_strategy: auto`` the dropped part is summarised by the run's model; the summary is
stored with the thread and extended, not rewritten, as the conversation moves on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from threadline.domain.clock import now
from threadline.domain.entities import (
    Message,
    MessageCreation,
    Run,
    RunStep,
    Summary,
    ToolCallRecord,
    ToolCalls,
)
from threadline.domain.model_calls import ModelCallObserver, Timed
from threadline.domain.ports.models import (
    ChatMessage,
    LocalModel,
    ModelRequest,
    ProviderError,
    Route,
    TextDelta,
    Usage,
)
from threadline.domain.ports.storage import Store
from threadline.domain.ports.tools import CODE_INTERPRETER, FILE_SEARCH, NoTools, ToolSet

log = logging.getLogger(__name__)

MESSAGE_OVERHEAD = 4
"""Tokens a chat message costs beyond its text (role, separators), as OpenAI counts them."""
PAGE = 64
"""Messages read per round trip while filling the budget."""
COUNT_BATCH = 8
"""Messages whose tokens are counted at once (one trip off the event loop for a GGUF tokenizer)."""
DEFAULT_OUTPUT_RESERVE = 1024
SUMMARY_MAX_TOKENS = 400
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
        item = message.content[0]
        call = {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        return {"role": "assistant", "content": None, "tool_calls": [call]}
    if message.type == "function_call_output":
        item = message.content[0]
        return {"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]}
    if message.type in HOSTED_CALLS:
        # Counted as one message; ``entry_messages`` gives it to the model as a call and its output.
        call, output = hosted_call(message)
        return {"role": "assistant", "content": output["content"], "tool_calls": call["tool_calls"]}
    if message.type == "reasoning":
        # A chat model takes no reasoning back: the item is kept for the client, not shown.
        return {"role": "assistant", "content": ""}
    if message.type == "compaction":
        return {"role": "system", "content": SUMMARY_PREFIX + message.content[0]["summary"]}
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if part.get("type") == "text":
            parts.append({"type": "text", "text": part["text"]["value"]})
        elif part.get("type") == "image_url" and vision:
            parts.append({"type": "image_url", "image_url": part["image_url"]})
        elif part.get("type") == "image_url":
            parts.append({"type": "text", "text": "[The user sent an image, which this model cannot see.]"})
        elif part.get("type") == "input_file":
            parts.append(file_part(part["input_file"], parts, images, vision))
        elif part.get("type") == "image_file" and message.role != "assistant":
            # (An answer's images are the charts its code drew: the model was told of them when the
            # code ran.)
            image = part.get("image_file") or {}
            url = (images or {}).get(image.get("file_id", ""))
            if url is not None:
                parts.append(
                    {"type": "image_url", "image_url": {"url": url, "detail": image.get("detail") or "auto"}}
                )
            else:
                # The model is told an image is there, not left to answer as if the user sent nothing.
                parts.append(
                    {
                        "type": "text",
                        "text": f"[The user attached an image, file {image.get('file_id', '')}, which is not shown here.]",
                    }
                )
    # Responses' "developer" messages are system messages to a chat model.
    role = "system" if message.role == "developer" else message.role
    if all(p["type"] == "text" for p in parts):
        return {"role": role, "content": "".join(p["text"] for p in parts)}
    return {"role": role, "content": parts}


def file_part(
    file: dict[str, Any], before: list[dict[str, Any]], images: Mapping[str, str] | None, vision: bool
) -> dict[str, Any]:
    """An ``input_file`` part for the model: its text inside ``<file name="...">`` and ``</file>``
    lines (on a line of its own after text), or, for an image, the image as ``input_image`` sends it."""
    name = str(file.get("filename") or file.get("file_id") or "file")
    if "text" in file:
        quoted = name.replace("&", "&amp;").replace('"', "&quot;")
        glue = (
            "\n" if before and before[-1]["type"] == "text" and not before[-1]["text"].endswith("\n") else ""
        )
        return {"type": "text", "text": f'{glue}<file name="{quoted}">\n{file["text"]}\n</file>\n'}
    url = file.get("image_url") or (images or {}).get(str(file.get("file_id")))
    if url is not None and vision:
        return {"type": "image_url", "image_url": {"url": url, "detail": "auto"}}
    return {"type": "text", "text": f"[The user attached an image, {name}, which is not shown here.]"}


HOSTED_CALLS = ("file_search_call", "code_interpreter_call")
"""Thread entries that are a built-in tool's call and its result, given back as Responses input."""


def hosted_call(message: Message) -> tuple[ChatMessage, ChatMessage]:
    """A ``file_search_call`` or ``code_interpreter_call`` entry as the model saw the server's own
    calls: an assistant call of the tool's function, and the tool's answer."""
    item = message.content[0]
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


def entry_messages(
    message: Message, images: Mapping[str, str] | None = None, vision: bool = True
) -> list[ChatMessage]:
    """A thread entry as the chat messages the model is shown (none, one, or a call and its output)."""
    if message.type in HOSTED_CALLS:
        return list(hosted_call(message))
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


def run_messages(steps: list[RunStep], own: dict[str, Message]) -> list[ChatMessage]:
    """What this run did so far, as chat messages, in the order it happened.

    The tool calls of one model response (built-in and function calls alike, though they sit in
    separate steps) go back as one assistant message, followed by each call's output; a response
    whose calls are not all answered yet is left out.
    """
    out: list[ChatMessage] = []
    calls: list[ToolCallRecord] = []
    turn: int | None = None

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
    return out


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


def _text(message: ChatMessage) -> str:
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
        texts = [_text(m) for m in messages]
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
        store: Store,
        *,
        summaries: bool = True,
        default_window: int = 8192,
        tools: ToolSet | None = None,
        images: ImageSource | None = None,
        observe_model_call: ModelCallObserver | None = None,
    ) -> None:
        self.store = store
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
        own = {m.id: m for m in await self.store.messages_by_id(own_ids)} if own_ids else {}
        tail = run_messages(steps, own)
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
            summary, summary_usage = await self._summary(run, route, counter, window, kept[-1])
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

    async def _images(self, run: Run, route: Route, messages: list[Message]) -> dict[str, str]:
        """Data URLs of the images uploaded in ``messages``, for a model that sees them."""
        wanted = {
            part["image_file"]["file_id"]
            for m in messages
            for part in m.content
            if part.get("type") == "image_file" and m.role != "assistant"
        } | {
            part["input_file"]["file_id"]
            for m in messages
            for part in m.content
            if part.get("type") == "input_file" and part["input_file"].get("image")
        }
        if not wanted or not route.vision or self.images is None:
            return {}
        thread = await self.store.get_thread(run.thread_id)
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
            page = await self.store.newest_messages(run.thread_id, PAGE, before=before)
            if not page:
                return kept, total, 0
            before = page[-1].id
            last_page = len(page) < PAGE
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

    async def _summary(
        self, run: Run, route: Route, counter: Counter, window: int, oldest_kept: tuple[Message, int]
    ) -> tuple[Summary | None, Usage | None]:
        """The thread's summary brought up to the message before ``oldest_kept``.

        Only what the stored summary does not cover yet is read, newest first, up to half the
        context window: a thread that was never summarised gets its most recent history summarised
        first rather than its whole past re-read.
        """
        stored = await self.store.get_summary(run.thread_id)
        after = stored.last_message_id if stored else None
        fresh: list[Message] = []
        budget = (
            window // 2
            - SUMMARY_MAX_TOKENS
            - (await counter.messages([{"content": stored.text}]) if stored else 0)
        )
        before: str | None = oldest_kept[0].id
        while budget > 0:
            page = await self.store.newest_messages(run.thread_id, PAGE, before=before, after=after)
            if not page:
                break
            before = page[-1].id
            for message, cost in zip(page, await counter.each([chat_message(m) for m in page]), strict=True):
                if cost > budget:
                    budget = 0
                    break
                fresh.append(message)
                budget -= cost
        if not fresh:
            return stored, None
        transcript = "\n".join(_line(m) for m in reversed(fresh))
        try:
            text, usage = await summarise(
                route, stored.text if stored else None, transcript, self.observe_model_call
            )
        except ProviderError as exc:
            log.warning("run %s: could not summarise older messages: %s", run.id, exc.message)
            return stored, None
        if not text.strip():
            return stored, usage
        summary = Summary(run.thread_id, text.strip(), fresh[0].id, now())
        await self.store.save_summary(summary)
        log.info("run %s: summarised %d older messages of %s", run.id, len(fresh), run.thread_id)
        return summary, usage


def _line(message: Message) -> str:
    """A thread entry as a line of the transcript a summary is made of."""
    if message.type == "compaction":
        return f"(summary of what came before) {message.content[0]['summary']}"
    return f"{message.role}: {message.text}"


async def summarise(
    route: Route, previous: str | None, transcript: str, observe: ModelCallObserver | None = None
) -> tuple[str, Usage | None]:
    """``previous`` summary (if any) extended with ``transcript`` by the route's model: the new
    summary's text (empty if the model wrote none) and the call's usage. Raises ``ProviderError``."""
    so_far = f"Summary so far:\n{previous}\n\n" if previous else ""
    request = ModelRequest(
        model=route.model,
        messages=[
            {
                "role": "system",
                "content": "You keep a running summary of a conversation. Keep names, numbers, "
                "decisions and open questions. Answer with the summary only.",
            },
            {
                "role": "user",
                "content": f"{so_far}New part of the conversation:\n{transcript}\n\n"
                "Write the updated summary.",
            },
        ],
        temperature=0.0,
        max_tokens=SUMMARY_MAX_TOKENS,
    )
    text, usage = "", None
    with Timed(observe, route.model, "summary") as timing:
        async for event in route.provider.stream(request):
            timing.event()
            if isinstance(event, TextDelta):
                text += event.text
            elif isinstance(event, Usage):
                usage = event
    return text.strip(), usage


async def summarise_entries(
    route: Route, entries: list[Message], observe: ModelCallObserver | None = None
) -> tuple[str, Usage]:
    """A summary of ``entries`` (a conversation, oldest first) made as the runs' summaries are, a
    part at a time when the whole does not fit in half the context window, each part extending the
    summary of those before. A ``compaction`` entry's summary stands for everything before it. The
    summary (empty if there was nothing to summarise) and the usage of the model calls."""
    counter = Counter(route)
    window = await counter.window(8192)
    summary: str | None = None
    lines: list[str] = []
    for entry in entries:
        if entry.type == "compaction":
            summary, lines = entry.content[0]["summary"], []
            continue
        for message in entry_messages(entry):
            if text := _text(message):
                lines.append(f"{message['role']}: {text}")

    async def room() -> int:
        held = await counter.messages([{"role": "user", "content": summary or ""}])
        return window // 2 - SUMMARY_MAX_TOKENS - held

    prompt_tokens = completion_tokens = 0
    part: list[str] = []
    left = await room()
    costs = await counter.each([{"role": "user", "content": line} for line in lines])
    for line, cost in zip(lines, costs, strict=True):
        if part and cost > left:
            text, usage = await summarise(route, summary, "\n".join(part), observe)
            summary, part = text or summary, []
            if usage is not None:
                prompt_tokens += usage.prompt_tokens
                completion_tokens += usage.completion_tokens
            left = await room()
        if cost > left > 0:
            line = line[: len(line) * left // cost]  # one entry larger than a part: its start
        part.append(line)
        left -= cost
    if part:
        text, usage = await summarise(route, summary, "\n".join(part), observe)
        summary = text or summary
        if usage is not None:
            prompt_tokens += usage.prompt_tokens
            completion_tokens += usage.completion_tokens
    return summary or "", Usage(prompt_tokens, completion_tokens)
