"""The Responses API beside the Assistants runs on the same engine: throughput and the first token.

``python -m bench.responses`` starts the scripted model and Threadline as separate processes on
127.0.0.1 (Threadline on a fresh SQLite file, the same stacks as ``bench.runs``) and measures, side by
side in one invocation:

* throughput at C concurrent clients (1 and 8): a non-streamed ``POST /v1/responses``, which answers
  when the response is finished, and a streamed one read to its end, against a run (thread with one
  user message, run, held polls) and a create-thread-and-run stream read to its end; a few bounded
  rounds, the ways interleaved round by round; the median round is the rate;
* the first token: a streamed response (``stream: true``) until its first
  ``response.output_text.delta``, a streamed run until its first ``thread.message.delta``, and a
  streamed chat completion straight to the model, one at a time and interleaved, with an instant
  model and one that waits 50 ms before its first byte.

It prints markdown and replaces only its own section of ``docs/benchmarks.md``. Benchmarks are not
tests: the figures are noisy (2 shared cores), so read medians and the ratios measured side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import (
    BETA,
    DOCS,
    ROOT,
    Section,
    load_average,
    log,
    machine,
    markdown_table,
    pct,
    publish,
    today,
)
from bench.runs import (
    MODEL,
    PROMPT,
    Round,
    RunOnce,
    Stack,
    cpu_per_run,
    httpx_client,
    median_rate,
    run_polling,
    run_streaming,
    stacks,
    throughput_round,
)
from bench.streaming import first_bytes_matching, first_token_direct

SECTION = "## Responses API beside runs: throughput and first token"
TOTAL_TIMEOUT = 600.0
ENDINGS = {
    b"event: response.completed\n": "completed",
    b"event: response.incomplete\n": "incomplete",
    b"event: response.failed\n": "failed",
}


# --- one response, one run --------------------------------------------------------------------------


def _response_body(stream: bool) -> dict[str, object]:
    return {"model": MODEL, "input": PROMPT, "stream": stream}


async def response_plain(client: httpx.AsyncClient, url: str) -> str:
    """A non-streamed ``POST /responses``: it answers once the response is finished."""
    answer = await client.post(f"{url}/responses", json=_response_body(False))
    answer.raise_for_status()
    response = answer.json()
    if response["status"] == "completed" and not response["output"]:
        raise RuntimeError(f"response {response['id']} completed without output")
    return str(response["status"])


async def response_streaming(client: httpx.AsyncClient, url: str) -> str:
    """A streamed ``POST /responses`` read to its end (the event that ends the response)."""
    chunks: list[bytes] = []
    async with client.stream("POST", f"{url}/responses", json=_response_body(True)) as answer:
        answer.raise_for_status()
        async for chunk in answer.aiter_bytes():
            chunks.append(chunk)
    text = b"".join(chunks)
    for marker, status in ENDINGS.items():
        if marker in text:
            return status
    raise RuntimeError("the response's stream ended without a final event")


# --- throughput -------------------------------------------------------------------------------------


@dataclass
class Way:
    """One way of getting an answer, and the rounds measured with it."""

    label: str
    unit: str
    call: Callable[[httpx.AsyncClient, Stack], Awaitable[str]]
    rounds: dict[int, list[Round]] = field(default_factory=dict)
    """Rounds by concurrency."""


WAYS = [
    Way(
        "Responses: `POST /responses`, answered when finished",
        "responses",
        lambda c, s: response_plain(c, s.url),
    ),
    Way(
        "Responses: `POST /responses`, stream to the end",
        "responses",
        lambda c, s: response_streaming(c, s.url),
    ),
    Way(
        "Assistants: thread, run, held polls",
        "runs",
        lambda c, s: run_polling(c, s.url, s.assistant_id),
    ),
    Way(
        "Assistants: thread+run, stream to the end",
        "runs",
        lambda c, s: run_streaming(c, s.url, s.assistant_id),
    ),
]


def _bound(way: Way, client: httpx.AsyncClient, stack: Stack) -> RunOnce:
    return lambda: way.call(client, stack)


async def measure_throughput(
    stack: Stack, ways: list[Way], clients: Sequence[int], rounds: int, seconds: float, warmup: float
) -> None:
    for c in clients:
        log(f"throughput at C={c}")
        async with httpx_client(stack.url, c) as client:
            calls = [_bound(way, client, stack) for way in ways]
            for call in calls:
                await throughput_round(stack, call, c, warmup)
            # The ways alternate round by round, so a noisy moment hits all of them alike.
            for number in range(rounds):
                for way, call in zip(ways, calls, strict=True):
                    result = await throughput_round(stack, call, c, seconds)
                    way.rounds.setdefault(c, []).append(result)
                    log(
                        f"  round {number + 1}: {way.label}: {result.rate:.0f} {way.unit}/s"
                        + (f", {result.failed} failed ({result.first_error})" if result.failed else "")
                    )


# --- first token ------------------------------------------------------------------------------------

AUTH = {"Authorization": "Bearer bench"}


def first_token_response(url: str) -> float:
    body = {"model": MODEL, "input": PROMPT, "stream": True}
    return first_bytes_matching(f"{url}/responses", body, b"event: response.output_text.delta", AUTH)


def first_token_run(url: str, assistant_id: str) -> float:
    body = {
        "assistant_id": assistant_id,
        "stream": True,
        "thread": {"messages": [{"role": "user", "content": PROMPT}]},
    }
    return first_bytes_matching(f"{url}/threads/runs", body, b"event: thread.message.delta", {**BETA, **AUTH})


@dataclass
class FirstToken:
    model_delay: float
    samples: dict[str, list[float]]


DIRECT = "model alone: streamed chat completion"
RESPONSE = "Responses: `POST /responses` with `stream: true`, first `response.output_text.delta`"
RUN = "Assistants: `POST /threads/runs` with `stream: true`, first `thread.message.delta`"


def measure_first_token(stack: Stack, model_delay: float, n: int, warmup: int) -> FirstToken:
    log(f"first token: model first byte after {model_delay * 1000:.0f} ms, {n} of each, interleaved")
    ways: dict[str, Callable[[], float]] = {
        DIRECT: lambda: first_token_direct(stack.model_url),
        RESPONSE: lambda: first_token_response(stack.url),
        RUN: lambda: first_token_run(stack.url, stack.assistant_id),
    }
    samples: dict[str, list[float]] = {name: [] for name in ways}
    for i in range(warmup + n):
        for name, once in ways.items():
            elapsed = once()
            if i >= warmup:
                samples[name].append(elapsed)
    return FirstToken(model_delay, samples)


# --- reporting --------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def throughput_table(ways: list[Way], clients: Sequence[int]) -> str:
    head = ["C", "way", "per second (median)", "rounds", "p50 ms", "p95 ms", "failed", "server CPU ms each"]
    head.append("/s against held-poll runs")
    rows = []
    for c in clients:
        base = median_rate(next(w for w in ways if w.label.endswith("held polls")).rounds.get(c, []))
        for way in ways:
            rounds = way.rounds.get(c, [])
            if not rounds:
                continue
            latencies = [x for r in rounds for x in r.latencies]
            cpu = cpu_per_run(rounds)
            rate = median_rate(rounds)
            rows.append(
                [
                    str(c),
                    way.label,
                    f"**{rate:.0f}** {way.unit}/s",
                    " / ".join(f"{r.rate:.0f}" for r in rounds),
                    ms(pct(latencies, 0.5)),
                    ms(pct(latencies, 0.95)),
                    str(sum(r.failed for r in rounds)),
                    "n/a" if cpu is None else f"{cpu * 1000:.1f}",
                    f"{rate / base:.2f}×" if base else "n/a",
                ]
            )
    return markdown_table(head, rows)


def first_token_table(results: list[FirstToken]) -> str:
    head = [
        "model",
        "path",
        "median ms",
        "p95 ms",
        "added ms (median)",
        "against the model",
        "against the run",
    ]
    rows = []
    for result in results:
        model_name = (
            "instant" if result.model_delay == 0 else f"{result.model_delay * 1000:.0f} ms to first byte"
        )
        direct = statistics.median(result.samples[DIRECT])
        run = statistics.median(result.samples[RUN])
        for path in (DIRECT, RUN, RESPONSE):
            values = result.samples[path]
            median = statistics.median(values)
            rows.append(
                [
                    model_name,
                    path,
                    ms(median),
                    ms(pct(values, 0.95)),
                    "—" if path == DIRECT else f"+{ms(median - direct)}",
                    f"{median / direct:.2f}×",
                    "—" if path != RESPONSE else f"{median / run:.2f}×",
                ]
            )
    return markdown_table(head, rows)


def summary(ways: list[Way], clients: Sequence[int], first: list[FirstToken]) -> str:
    """The side-by-side ratios in a few lines: the non-streamed response against each kind of run, and
    the streamed response's first token against the streamed run's."""
    plain, _, polled, streamed = ways
    lines = []
    for c in clients:
        rate = median_rate(plain.rounds.get(c, []))
        against = [
            f"{rate / median_rate(way.rounds[c]):.2f}× {what}"
            for way, what in ((polled, "held-poll runs/s"), (streamed, "streamed runs/s"))
            if median_rate(way.rounds.get(c, []))
        ]
        lines.append(f"- C={c}: non-streamed responses/s **{rate:.0f}**, " + ", ".join(against))
    for result in first:
        model_name = (
            "instant model" if result.model_delay == 0 else f"{result.model_delay * 1000:.0f} ms model"
        )
        response = statistics.median(result.samples[RESPONSE])
        run = statistics.median(result.samples[RUN])
        direct = statistics.median(result.samples[DIRECT])
        lines.append(
            f"- first token, {model_name}: a streamed response adds **+{ms(response - direct)} ms** to the"
            f" model's own, a streamed run +{ms(run - direct)} ms (response / run **{response / run:.2f}×**)"
        )
    return "\n".join(lines)


def report(info: str, ways: list[Way], clients: Sequence[int], first: list[FirstToken], settings: str) -> str:
    return "\n".join(
        [
            f"- date: {today()}; machine: {info}",
            "- server: `threadline serve`, SQLite (WAL) on a fresh file, API and worker in one process;"
            " model: the scripted model (`python -m threadline.testing`), its own process, echoing the"
            " prompt in word-sized stream chunks; client, server and model share the cores",
            f"- settings: {settings}",
            "- reproduce: `python -m bench.responses` (about a minute and a half)",
            "",
            "**Throughput.** C clients each repeatedly ask for one answer to one user message, the four ways",
            "interleaved round by round on the same server. A response is a run on a thread of its own: the",
            "non-streamed create holds the request until the response is finished and answers with it, where",
            "the Assistants client creates the thread, creates the run and hold-polls it (three requests or",
            "more). Latency is per answer, from the first request to seeing it completed; server CPU ms each",
            "is the server's CPU time over the rounds divided by the answers completed.",
            "",
            throughput_table(ways, clients),
            "",
            "**The first token.** One at a time, the three paths interleaved, each one request read over a",
            "plain socket (no client library's buffering in the figures) until its first text delta: a",
            "streamed chat completion straight to the model, a create-thread-and-run stream, and a streamed",
            "response.",
            "",
            first_token_table(first),
            "",
            "Side by side, same invocation:",
            "",
            summary(ways, clients, first),
        ]
    )


# --- main -------------------------------------------------------------------------------------------


async def _throughput(stack: Stack, args: argparse.Namespace) -> None:
    await asyncio.wait_for(
        measure_throughput(stack, WAYS, args.clients, args.rounds, args.seconds, args.warmup), TOTAL_TIMEOUT
    )


def bench(args: argparse.Namespace, workdir: Path) -> list[Section]:
    info = str(machine())
    warm = max(3, args.n // 10)
    with stacks(workdir, [("instant", "stock", 0.0)]) as started:
        asyncio.run(_throughput(started[0], args))
        first = [measure_first_token(started[0], 0.0, args.n, warm)]
    with stacks(workdir, [("slow", "stock", 0.05)]) as slow:
        first.append(measure_first_token(slow[0], 0.05, args.n, warm))
    info += f" → {load_average()} at the end"
    settings = (
        f"{args.rounds} rounds of {args.seconds:g} s per way and concurrency after a {args.warmup:g} s"
        f" warm-up each; first token over {args.n} requests per path after {warm} unrecorded"
    )
    return [(SECTION, report(info, WAYS, args.clients, first, settings))]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.responses", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8], help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one throughput round")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of unrecorded load first")
    parser.add_argument("-n", type=int, default=40, help="requests per path for the first token")
    parser.add_argument("--quick", action="store_true", help="a few seconds' smoke run; never writes")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {DOCS.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.warmup, args.n = 1, 0.5, 0.2, 3
    if args.rounds < 1 or not 0 < args.seconds <= 60 or not 0 < args.n <= 1000 or min(args.clients) < 1:
        parser.error("rounds and clients must be positive, seconds in (0, 60], -n in [1, 1000]")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="threadline-bench-") as tmp:
        sections = bench(args, Path(tmp))
    publish(sections, write=not args.no_write and not args.quick, began=began)


if __name__ == "__main__":
    main()
