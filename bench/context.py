"""Prompt building against thread length: 20, 2,000 and 20,000 messages at the same token budget.

``python -m bench.context`` runs in one process, without HTTP or a model. It fills a fresh database
(SQLite, and PostgreSQL when one answers on 127.0.0.1:5432) with threads of 20, 2,000 and 20,000
messages of 80-160 words each, then times ``ContextBuilder.build`` for a run on each thread with the
same ``max_prompt_tokens``: the builder reads the newest messages a page at a time until the budget is
full, so the time should not depend on how long the thread is. The builds take turns across the
threads (round-robin), so a noisy moment of the machine hits every thread alike.

It measures with summaries off, then with summaries on and a stored summary that already covers every
message the prompt leaves out: the builder must then only look the summary up (the model, which
would write a new one, fails the benchmark if it is called). It prints a markdown table and replaces
its own section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    POSTGRES_USED,
    add_postgres_arguments,
    log,
    machine,
    markdown_table,
    pct,
    postgres_database,
    postgres_skipped,
    publish,
    today,
)

SECTION = "## Context building: prompt time against thread length"
SIZES = (20, 2_000, 20_000)
GOAL_RATIO = 2.0
INSERT_BATCH = 2_000
# A plain vocabulary: English-like text that tokenizes at about one token per word.
_VOCABULARY = (
    "the a of to and in is it that for on with as was at by be this from or have an they which one you"
    " were her all she there would their we him been has when who will more no if out so said what up"
    " its about into than them can only other new some could time these two may then do first any my"
    " now such like our over man me even most made after also did many before must through back years"
    " where much your way well down should because each just those people how too little state good"
    " very make world still own see men work long get here between both life being under never day"
    " same another know while last might us great old year off come since against go came right used"
    " take three lighthouse harbour invoice schedule deploy kernel budget weather recipe ticket"
)
WORDS = _VOCABULARY.split()


# --- fixtures -------------------------------------------------------------------------------------


def message_text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(80, 160))).capitalize() + "."


@dataclass
class ThreadCase:
    size: int
    thread_id: str
    message_ids: list[str]
    """Oldest first."""
    off: list[float] = field(default_factory=list)
    on: list[float] = field(default_factory=list)
    kept: int = 0
    dropped: int = 0
    prompt_tokens: int = 0


async def fill(url: str, sizes: Sequence[int]) -> list[ThreadCase]:
    """Insert one thread per size, its messages in bulk (straight into the tables, for speed)."""
    from sqlalchemy import insert
    from sqlalchemy.ext.asyncio import create_async_engine

    from threadline.domain.entities import Message
    from threadline.ids import new_id
    from threadline.store import tables

    rng = random.Random(20)
    engine = create_async_engine(url)
    cases = []
    try:
        for size in sizes:
            thread_id = new_id("thread")
            created = int(time.time())
            async with engine.begin() as conn:
                await conn.execute(
                    insert(tables.threads).values(
                        id=thread_id, created_at=created, meta={}, tool_resources=None, active_run_id=None
                    )
                )
            ids: list[str] = []
            for start in range(0, size, INSERT_BATCH):
                rows = []
                for i in range(start, min(size, start + INSERT_BATCH)):
                    message = Message(
                        id=new_id("message"),
                        thread_id=thread_id,
                        created_at=created,
                        role="user" if i % 2 == 0 else "assistant",
                        content=[{"type": "text", "text": {"value": message_text(rng), "annotations": []}}],
                    )
                    row = dataclasses.asdict(message)
                    row["meta"] = row.pop("metadata")
                    rows.append(row)
                    ids.append(message.id)
                async with engine.begin() as conn:
                    await conn.execute(insert(tables.messages), rows)
            cases.append(ThreadCase(size, thread_id, ids))
            log(f"  thread of {size:,} messages inserted")
    finally:
        await engine.dispose()
    return cases


class NoModel:
    """The provider of the route: with summaries off, or a summary up to date, it is never called."""

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        raise AssertionError("the builder called the model: the stored summary was not used")
        yield  # an async generator, like every provider's stream

    async def aclose(self) -> None:
        return None


# --- measuring ------------------------------------------------------------------------------------


async def measure(url: str, sizes: Sequence[int], budget: int, builds: int, warmup: int) -> list[ThreadCase]:
    from threadline.domain.context import ContextBuilder
    from threadline.domain.entities import Run, Summary
    from threadline.domain.ports.models import Route
    from threadline.ids import new_id
    from threadline.providers.tokenizers import for_model
    from threadline.store import sql_stores
    from threadline.store.database import Database, migrate

    await asyncio.to_thread(migrate, url)
    cases = await fill(url, sizes)
    db = Database(url)
    stores = sql_stores(db)
    route = Route(provider=NoModel(), model="gpt-4o", context_window=8192, tokenizer=for_model("gpt-4o"))
    instructions = "You are a helpful assistant. Answer briefly."

    def run_for(case: ThreadCase) -> Run:
        return Run(
            id=new_id("run"),
            thread_id=case.thread_id,
            assistant_id="asst_bench",
            created_at=int(time.time()),
            model="gpt-4o",
            instructions=instructions,
            max_prompt_tokens=budget,
        )

    try:
        for summaries, attr in ((False, "off"), (True, "on")):
            builder = ContextBuilder(stores.threads, summaries=summaries)
            for number in range(warmup + builds):
                for case in cases:
                    run = run_for(case)
                    start = time.perf_counter()
                    prompt = await builder.build(run, route, [])
                    elapsed = time.perf_counter() - start
                    if prompt.request is None:
                        raise RuntimeError(f"no prompt fits a budget of {budget} tokens")
                    if number >= warmup:
                        getattr(case, attr).append(elapsed)
                    if not summaries and number == 0:
                        case.kept = len(prompt.request.messages) - 1  # minus the instructions
                        case.dropped = case.size - case.kept
                        case.prompt_tokens = prompt.prompt_tokens
            if not summaries:
                # A summary that covers every message the prompt leaves out: up to date, so builds
                # with summaries on only look it up.
                for case in cases:
                    if case.dropped:
                        newest_dropped = case.message_ids[case.size - case.kept - 1]
                        await stores.threads.save_summary(
                            Summary(
                                case.thread_id,
                                "The user and the assistant discussed the weather and a budget.",
                                newest_dropped,
                                int(time.time()),
                            )
                        )
    finally:
        await db.dispose()
    return cases


# --- report ---------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def table(results: list[tuple[str, list[ThreadCase]]]) -> tuple[str, dict[str, float]]:
    head = [
        "database",
        "messages in thread",
        "kept in prompt",
        "prompt tokens",
        "summaries off: median ms",
        "p95 ms",
        "× smallest",
        "summaries on, summary up to date: median ms",
        "× smallest",
    ]
    rows = []
    worst: dict[str, float] = {}
    for name, cases in results:
        base_off = statistics.median(cases[0].off)
        base_on = statistics.median(cases[0].on)
        for case in cases:
            off, on = statistics.median(case.off), statistics.median(case.on)
            worst[name] = max(worst.get(name, 0.0), off / base_off, on / base_on)
            rows.append(
                [
                    name,
                    f"{case.size:,}",
                    str(case.kept),
                    str(case.prompt_tokens),
                    f"**{ms(off)}**",
                    ms(pct(case.off, 0.95)),
                    f"{off / base_off:.2f}×",
                    f"**{ms(on)}**",
                    f"{on / base_on:.2f}×",
                ]
            )
    return markdown_table(head, rows), worst


def report(
    results: list[tuple[str, list[ThreadCase]]], *, budget: int, builds: int, info: str, pg: str
) -> str:
    from threadline.domain.context import PAGE

    rows, worst = table(results)
    spread = max(worst.values())
    verdict = "met" if spread <= GOAL_RATIO else "not met"
    kept = results[0][1][-1].kept
    # The two threads longer than a page: whether length itself costs anything.
    longest = max(
        statistics.median(getattr(cases[-1], attr)) / statistics.median(getattr(cases[-2], attr))
        for _, cases in results
        for attr in ("off", "on")
    )
    return "\n".join(
        [
            f"- date: {today()}; machine: {info}",
            f"- budget: `max_prompt_tokens` {budget} on every run; route `gpt-4o` (tiktoken o200k_base,"
            " context window 8192); messages of 80-160 words, user and assistant alternating",
            f"- {builds} builds per thread and setting after a warm-up, round-robin across the threads;"
            " in-process, no HTTP, no model",
            f"- PostgreSQL: {pg}",
            "- reproduce: `python -m bench.context` (under a minute)",
            "",
            "Each figure is one `ContextBuilder.build` for a new run on the thread: reading the newest"
            " messages a page at a time until the budget is full, counting their tokens, and (summaries"
            " on) looking up the thread's stored summary, which already covers every message left out,"
            " so no model call is made. × smallest is the median against the 20-message thread's.",
            "",
            rows,
            "",
            f"Goal: flat, within {GOAL_RATIO:.0f}× of each other: **{verdict}** (largest ratio to the"
            f" 20-message thread {spread:.2f}×; 20,000 messages against 2,000: at most {longest:.2f}×).",
            "",
            f"The builder reads {PAGE} messages per query and counts the tokens of the whole page before"
            " it checks the budget. A thread shorter than a page is read in one short query and only its"
            f" own messages are counted; a longer one reads and counts a full page of {PAGE} although"
            f" {kept} fit. That step, not the thread's length, separates the first row from the other two;"
            " past one page, the length of the thread no longer matters (20,000 against 2,000 above).",
        ]
    )


async def bench(args: argparse.Namespace, workdir: Path) -> tuple[list[tuple[str, list[ThreadCase]]], str]:
    results = []
    log("SQLite")
    sqlite_url = f"sqlite+aiosqlite:///{workdir / 'context.db'}"
    results.append(("SQLite", await measure(sqlite_url, SIZES, args.budget, args.builds, args.warmup)))
    pg = await postgres_skipped(args.no_postgres, args.postgres_admin_url)
    if pg is None:
        log("PostgreSQL")
        async with postgres_database(args.postgres_admin_url) as url:
            results.append(("PostgreSQL", await measure(url, SIZES, args.budget, args.builds, args.warmup)))
        pg = POSTGRES_USED
    return results, pg


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.context", description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=int, default=2000, help="max_prompt_tokens of every run")
    parser.add_argument("--builds", type=int, default=50, help="timed builds per thread and setting")
    parser.add_argument("--warmup", type=int, default=3)
    add_postgres_arguments(parser)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    args = parser.parse_args(argv)
    if not 200 <= args.budget <= 8000 or not 1 <= args.builds <= 500 or not 0 <= args.warmup <= 50:
        parser.error("--budget in [200, 8000], --builds in [1, 500], --warmup in [0, 50]")
    info = str(machine())
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="threadline-bench-") as tmp:
        results, pg = asyncio.run(asyncio.wait_for(bench(args, Path(tmp)), 300))
    body = report(results, budget=args.budget, builds=args.builds, info=info, pg=pg)
    publish([(SECTION, body)], write=not args.no_write, began=began)


if __name__ == "__main__":
    main()
