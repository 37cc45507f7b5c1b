"""Summarising conversation that no longer fits: a thread's running summary, and compaction.

Under ``truncation_strategy: auto`` the part of a thread the prompt leaves out is summarised by the
run's model (``update_summary``); the summary is stored with the thread and extended, not rewritten,
as the conversation moves on. ``summarise_entries`` summarises a whole conversation the same way,
a part at a time, for ``/v1/responses/compact``.
"""

from __future__ import annotations

import logging

from threadline.domain.clock import now
from threadline.domain.entities import Message, Run, Summary
from threadline.domain.model_calls import ModelCallObserver, Timed
from threadline.domain.ports.models import ModelRequest, ProviderError, Route, TextDelta, Usage
from threadline.domain.ports.storage import ThreadRepository
from threadline.domain.prompt_messages import Counter, chat_message, entry_messages, message_text

log = logging.getLogger(__name__)

SUMMARY_MAX_TOKENS = 400


async def update_summary(
    threads: ThreadRepository,
    run: Run,
    route: Route,
    counter: Counter,
    window: int,
    oldest_kept: tuple[Message, int],
    *,
    page_size: int,
    observe: ModelCallObserver | None = None,
) -> tuple[Summary | None, Usage | None]:
    """The thread's summary brought up to the message before ``oldest_kept``.

    Only what the stored summary does not cover yet is read, newest first, up to half the
    context window: a thread that was never summarised gets its most recent history summarised
    first rather than its whole past re-read.
    """
    stored = await threads.get_summary(run.thread_id)
    after = stored.last_message_id if stored else None
    fresh: list[Message] = []
    budget = (
        window // 2
        - SUMMARY_MAX_TOKENS
        - (await counter.messages([{"content": stored.text}]) if stored else 0)
    )
    before: str | None = oldest_kept[0].id
    while budget > 0:
        page = await threads.newest_messages(run.thread_id, page_size, before=before, after=after)
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
        text, usage = await summarise(route, stored.text if stored else None, transcript, observe)
    except ProviderError as exc:
        log.warning("run %s: could not summarise older messages: %s", run.id, exc.message)
        return stored, None
    if not text.strip():
        return stored, usage
    summary = Summary(run.thread_id, text.strip(), fresh[0].id, now())
    await threads.save_summary(summary)
    log.info("run %s: summarised %d older messages of %s", run.id, len(fresh), run.thread_id)
    return summary, usage


def _line(message: Message) -> str:
    """A thread entry as a line of the transcript a summary is made of."""
    if message.type == "compaction":
        return f"(summary of what came before) {message.fields['summary']}"
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
            summary, lines = entry.fields["summary"], []
            continue
        for message in entry_messages(entry):
            if text := message_text(message):
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
