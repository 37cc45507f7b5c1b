"""The core benchmark: runs per second, and the time Threadline adds to a run beyond the model's own.

``make bench`` (``python -m bench.runs``) starts the scripted model and Threadline as separate processes
on 127.0.0.1, with Threadline on a fresh SQLite file, and measures:

* throughput: C concurrent clients, each creating a thread with one user message, creating a run and
  following it (held polls or a stream) until it completes, for a few bounded rounds; runs/s is the
  median round, latencies are pooled over the rounds. The CPU each process used (client, server, model)
  is read from ``/proc`` so the figures show who had the machine's cores;
* overhead: one run at a time, a streamed chat completion straight to the model next to a run through
  Threadline (stream, and create-then-poll), with an instant model and one that takes 50 ms.

It prints markdown tables and replaces its own sections of ``docs/benchmarks.md`` (the title block with
this benchmark's setup, throughput, overhead, reproduce), leaving the other benchmarks' sections as they
are. Benchmarks are not tests: the figures are noisy (2 shared cores), so read medians and the ratios
measured side by side in one invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import (
    BETA,
    DOCS,
    ROOT,
    TITLE,
    Child,
    Section,
    child_env,
    free_port,
    load_average,
    log,
    machine,
    markdown_table,
    pct,
    publish,
    scripted_model_url,
    start_scripted_model,
    today,
    wait_healthy,
)

# The header the SDK's poll helpers send: the server holds such a poll until the run's status changes.
HELD_POLL = {"X-Stainless-Poll-Helper": "true"}
PROMPT = "What is the capital of France?"
MODEL = "scripted"
TERMINAL = frozenset({"requires_action", "cancelled", "completed", "failed", "expired", "incomplete"})
GOAL_RUNS_PER_SECOND = 150.0
THROUGHPUT = "## Throughput: completed runs per second"
OVERHEAD = "## Overhead: what Threadline adds to one run"
REPRODUCE = "## Reproduce"

START_TIMEOUT = 30.0
RUN_TIMEOUT = 30.0
MAX_POLLS = 200
MAX_RUNS_PER_CLIENT = 5_000
STOP_TIMEOUT = 10.0
TOTAL_TIMEOUT = 900.0

# Server variants: the stock command, and uvicorn configurations pinned explicitly (``bench.serve``).
SERVERS: dict[str, list[str]] = {
    "stock": ["-m", "threadline.cli", "serve"],
    "asyncio+h11": ["-m", "bench.serve", "--loop", "asyncio", "--http", "h11"],
    "uvloop+httptools": ["-m", "bench.serve", "--loop", "uvloop", "--http", "httptools"],
}


# --- processes -------------------------------------------------------------------------------------


@dataclass
class Stack:
    """A scripted model and a Threadline server using it, each in its own process."""

    name: str
    model: Child
    server: Child
    model_url: str
    url: str
    assistant_id: str = ""


BASELINE = "baseline"
"""The stack that runs another checkout's server (``--against``)."""
TREES: dict[str, Path] = {}
"""Stacks whose server is imported from another checkout's ``src`` (by stack name)."""


def start_server(workdir: Path, name: str, variant: str, model_url: str, port: int) -> Child:
    env = child_env(
        {
            "THREADLINE_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / f'{name}.db'}",
            "THREADLINE_UPSTREAM_BASE_URL": model_url,
        }
    )
    if name in TREES:
        env["PYTHONPATH"] = str(TREES[name] / "src")
    argv = [sys.executable, *SERVERS[variant], "--port", str(port)]
    return Child(
        f"threadline {name}", argv, env, workdir / f"threadline-{name}.log", stop_timeout=STOP_TIMEOUT
    )


@contextlib.contextmanager
def stacks(workdir: Path, specs: Sequence[tuple[str, str, float]]) -> Iterator[list[Stack]]:
    """Start one stack per ``(name, server variant, model first delay)``; always stop every process."""
    children: list[Child] = []
    started: list[Stack] = []
    try:
        for name, variant, first_delay in specs:
            model = start_scripted_model(workdir, name, first_delay, stop_timeout=STOP_TIMEOUT)
            children.append(model)
            upstream = scripted_model_url(model, START_TIMEOUT)
            port = free_port()
            server = start_server(workdir, name, variant, upstream, port)
            children.append(server)
            stack = Stack(name, model, server, upstream, wait_healthy(server, port, START_TIMEOUT))
            with httpx.Client(headers=BETA, timeout=10.0) as client:
                created = client.post(f"{stack.url}/assistants", json={"model": MODEL, "name": "bench"})
                created.raise_for_status()
                stack.assistant_id = created.json()["id"]
            started.append(stack)
        yield started
    finally:
        for child in reversed(children):
            child.stop()


# --- one run, as different clients do it ------------------------------------------------------------

RunOnce = Callable[[], Awaitable[str]]


def _user_thread() -> dict[str, object]:
    return {"messages": [{"role": "user", "content": PROMPT}]}


async def run_polling(client: httpx.AsyncClient, url: str, assistant_id: str) -> str:
    """Create a thread, create a run, hold-poll it until it stops; returns its final status."""
    thread = await client.post(f"{url}/threads", json=_user_thread())
    thread.raise_for_status()
    thread_id = thread.json()["id"]
    created = await client.post(f"{url}/threads/{thread_id}/runs", json={"assistant_id": assistant_id})
    created.raise_for_status()
    run = created.json()
    for _ in range(MAX_POLLS):
        if run["status"] in TERMINAL:
            return str(run["status"])
        polled = await client.get(f"{url}/threads/{thread_id}/runs/{run['id']}", headers=HELD_POLL)
        polled.raise_for_status()
        run = polled.json()
    raise RuntimeError(f"run {run['id']} still {run['status']} after {MAX_POLLS} polls")


async def run_streaming(client: httpx.AsyncClient, url: str, assistant_id: str) -> str:
    """``POST /threads/runs`` with ``stream: true``, read to the end; returns the final status."""
    body = {"assistant_id": assistant_id, "thread": _user_thread(), "stream": True}
    chunks: list[bytes] = []
    async with client.stream("POST", f"{url}/threads/runs", json=body) as response:
        response.raise_for_status()
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
    text = b"".join(chunks)
    if not text.endswith(b"data: [DONE]\n\n"):
        raise RuntimeError("the run's stream ended without [DONE]")
    for status in ("completed", "requires_action", "failed", "cancelled", "expired", "incomplete"):
        if f"event: thread.run.{status}\n".encode() in text:
            return status
    raise RuntimeError("the run's stream never reached a final status")


async def model_direct(client: httpx.AsyncClient, model_url: str) -> str:
    """A streamed chat completion straight to the model, read to the end (the model's own time)."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "stream": True}
    async with client.stream("POST", f"{model_url}/chat/completions", json=body) as response:
        response.raise_for_status()
        async for _ in response.aiter_bytes():
            pass
    return "completed"


# --- throughput -------------------------------------------------------------------------------------


@dataclass
class Round:
    runs: int
    failed: int
    seconds: float
    latencies: list[float]
    client_cpu: float
    server_cpu: float | None
    model_cpu: float | None
    first_error: str = ""

    @property
    def rate(self) -> float:
        return self.runs / self.seconds


@dataclass
class Config:
    label: str
    clients: int
    make: Callable[[Stack], tuple[RunOnce, Callable[[], Awaitable[None]]]]
    """Builds (one run, close) for a stack; the client behind it is shared by the concurrent callers."""
    rounds: dict[str, list[Round]] = field(default_factory=dict)


def httpx_client(url: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(headers=BETA, limits=limits, timeout=RUN_TIMEOUT)


def polling_config(clients: int) -> Config:
    def make(stack: Stack) -> tuple[RunOnce, Callable[[], Awaitable[None]]]:
        client = httpx_client(stack.url, clients)
        return (lambda: run_polling(client, stack.url, stack.assistant_id)), client.aclose

    return Config(f"httpx: thread, run, held polls · C={clients}", clients, make)


def streaming_config(clients: int) -> Config:
    def make(stack: Stack) -> tuple[RunOnce, Callable[[], Awaitable[None]]]:
        client = httpx_client(stack.url, clients)
        return (lambda: run_streaming(client, stack.url, stack.assistant_id)), client.aclose

    return Config(f"httpx: thread+run, stream · C={clients}", clients, make)


def sdk_config(clients: int) -> Config:
    def make(stack: Stack) -> tuple[RunOnce, Callable[[], Awaitable[None]]]:
        from openai import AsyncOpenAI

        sdk = AsyncOpenAI(base_url=stack.url, api_key="bench", max_retries=0, timeout=RUN_TIMEOUT)

        async def once() -> str:
            thread = await sdk.beta.threads.create(messages=[{"role": "user", "content": PROMPT}])
            run = await sdk.beta.threads.runs.create_and_poll(
                thread_id=thread.id, assistant_id=stack.assistant_id
            )
            return str(run.status)

        return once, sdk.close

    return Config(f"openai SDK: create, create_and_poll · C={clients}", clients, make)


async def throughput_round(stack: Stack, once: RunOnce, clients: int, seconds: float) -> Round:
    """``clients`` loops starting runs until ``seconds`` pass; the round ends when the last run does."""
    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.monotonic() + seconds

    async def client_loop() -> None:
        for _ in range(MAX_RUNS_PER_CLIENT):
            if time.monotonic() >= deadline:
                return
            start = time.monotonic()
            try:
                status = await asyncio.wait_for(once(), RUN_TIMEOUT)
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            if status == "completed":
                latencies.append(time.monotonic() - start)
            else:
                failures.append(f"run ended {status}")

    server0, model0, client0 = stack.server.cpu(), stack.model.cpu(), time.process_time()
    start = time.monotonic()
    await asyncio.gather(*(client_loop() for _ in range(clients)))
    elapsed = time.monotonic() - start
    server1, model1, client1 = stack.server.cpu(), stack.model.cpu(), time.process_time()
    return Round(
        runs=len(latencies),
        failed=len(failures),
        seconds=elapsed,
        latencies=latencies,
        client_cpu=client1 - client0,
        server_cpu=None if server0 is None or server1 is None else server1 - server0,
        model_cpu=None if model0 is None or model1 is None else model1 - model0,
        first_error=failures[0] if failures else "",
    )


async def measure_throughput(
    stacks_: list[Stack], configs: list[Config], rounds: int, seconds: float, warmup: float
) -> None:
    for config in configs:
        log(f"throughput: {config.label}")
        made = {stack.name: config.make(stack) for stack in stacks_}
        try:
            for stack in stacks_:
                await throughput_round(stack, made[stack.name][0], config.clients, warmup)
            # Stacks alternate round by round, so a noisy moment hits all of them alike.
            for number in range(rounds):
                for stack in stacks_:
                    result = await throughput_round(stack, made[stack.name][0], config.clients, seconds)
                    config.rounds.setdefault(stack.name, []).append(result)
                    log(
                        f"  {stack.name} round {number + 1}: {result.rate:.0f} runs/s"
                        + (f", {result.failed} failed ({result.first_error})" if result.failed else "")
                    )
        finally:
            for _, close in made.values():
                await close()


# --- overhead ---------------------------------------------------------------------------------------


@dataclass
class Overhead:
    model_delay: float
    direct: list[float] = field(default_factory=list)
    stream: list[float] = field(default_factory=list)
    poll: list[float] = field(default_factory=list)


async def measure_overhead(stack: Stack, model_delay: float, n: int, warmup: int) -> Overhead:
    log(f"overhead: model first byte after {model_delay * 1000:.0f} ms, {n} sequential runs each way")
    result = Overhead(model_delay)
    async with httpx_client(stack.url, 4) as client:
        ways: list[tuple[list[float], RunOnce]] = [
            (result.direct, lambda: model_direct(client, stack.model_url)),
            (result.stream, lambda: run_streaming(client, stack.url, stack.assistant_id)),
            (result.poll, lambda: run_polling(client, stack.url, stack.assistant_id)),
        ]
        # Interleaved, so the three ways see the same moments of the machine.
        for i in range(warmup + n):
            for samples, once in ways:
                start = time.monotonic()
                status = await asyncio.wait_for(once(), RUN_TIMEOUT)
                elapsed = time.monotonic() - start
                if status != "completed":
                    raise RuntimeError(f"a sequential run ended {status}")
                if i >= warmup:
                    samples.append(elapsed)
    return result


# --- reporting --------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def share(cpu: Sequence[float | None], seconds: float) -> str:
    if any(c is None for c in cpu) or seconds <= 0:
        return "n/a"
    return f"{sum(c for c in cpu if c is not None) / seconds * 100:.0f}%"


def throughput_table(configs: list[Config], stack_names: list[str]) -> str:
    show_stack = len(stack_names) > 1
    head = ["client", *(["server"] if show_stack else []), "runs/s (median)", "rounds", "p50 ms", "p95 ms"]
    head += ["failed", "client CPU", "server CPU", "model CPU", "server CPU ms/run", "ceiling runs/s"]
    rows = []
    for config in configs:
        for name in stack_names:
            rounds = config.rounds.get(name, [])
            if not rounds:
                continue
            rates = [r.rate for r in rounds]
            latencies = [x for r in rounds for x in r.latencies]
            seconds = sum(r.seconds for r in rounds)
            row = [config.label, *([name] if show_stack else [])]
            row += [
                f"**{median_rate(rounds):.0f}**",
                " / ".join(f"{x:.0f}" for x in rates),
                ms(pct(latencies, 0.5)),
                ms(pct(latencies, 0.95)),
                str(sum(r.failed for r in rounds)),
                share([r.client_cpu for r in rounds], seconds),
                share([r.server_cpu for r in rounds], seconds),
                share([r.model_cpu for r in rounds], seconds),
            ]
            cpu = cpu_per_run(rounds)
            row += ["n/a", "n/a"] if cpu is None else [f"{cpu * 1000:.1f}", f"{1 / cpu:.0f}"]
            rows.append(row)
    return markdown_table(head, rows)


def median_rate(rounds: list[Round]) -> float:
    return statistics.median(r.rate for r in rounds) if rounds else 0.0


def cpu_per_run(rounds: list[Round]) -> float | None:
    runs = sum(r.runs for r in rounds)
    if not runs or any(r.server_cpu is None for r in rounds):
        return None
    return sum(r.server_cpu or 0.0 for r in rounds) / runs


def ratio_lines(configs: list[Config], stack_names: list[str]) -> str:
    """Each other server against the first, on runs/s and on server CPU per run."""
    if len(stack_names) < 2:
        return ""
    base, *others = stack_names
    lines = []
    for config in configs:
        base_rounds = config.rounds.get(base, [])
        if not base_rounds:
            continue
        for other in others:
            rounds = config.rounds.get(other, [])
            speedup = median_rate(rounds) / median_rate(base_rounds)
            line = f"- {config.label}: {other} / {base}: runs/s **{speedup:.2f}×**"
            cpu, base_cpu = cpu_per_run(rounds), cpu_per_run(base_rounds)
            if cpu is not None and base_cpu:
                line += f", server CPU per run **{cpu / base_cpu:.2f}×**"
            lines.append(line)
    return "\n".join(lines)


def overhead_table(results: list[Overhead]) -> str:
    head = ["model", "path", "median ms", "p95 ms", "added ms (median)", "ratio"]
    rows = []
    for result in results:
        model_name = (
            "instant" if result.model_delay == 0 else f"{result.model_delay * 1000:.0f} ms to first byte"
        )
        base = statistics.median(result.direct)
        paths = [
            ("model alone: streamed chat completion", result.direct),
            ("Threadline: thread+run, stream to the end", result.stream),
            ("Threadline: thread, run, held polls", result.poll),
        ]
        for label, samples in paths:
            median = statistics.median(samples)
            added = "—" if samples is result.direct else f"+{ms(median - base)}"
            ratio = "1.00×" if samples is result.direct else f"{median / base:.2f}×"
            rows.append([model_name, label, ms(median), ms(pct(samples, 0.95)), added, ratio])
    return markdown_table(head, rows)


def setup() -> dict[str, str]:
    """What the title block reports: when, on what machine, which event loop the stock command gets, and
    the load average (the one after the benchmark is appended to it)."""
    host = machine()
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return {
        "date": today(),
        "cores": str(host.cores),
        "cpu": host.cpu,
        "python": host.python,
        "os": host.os,
        "stock": f"uvicorn on {loop} with {http} (it picks uvloop and httptools whenever they are installed)",
        "load": host.load,
    }


SERVER_TEXT = {
    "stock": "`threadline serve`",
    "asyncio+h11": "`python -m bench.serve --loop asyncio --http h11`",
    "uvloop+httptools": "`python -m bench.serve --loop uvloop --http httptools`",
    BASELINE: "`threadline serve` from the checkout given to `--against`",
}


def report(
    info: dict[str, str],
    configs: list[Config],
    variants: list[str],
    overheads: list[Overhead],
    settings: str,
) -> list[Section]:
    """The title block (this benchmark's setup), then its throughput, overhead and reproduce sections."""
    polling = [
        median_rate(c.rounds.get(variants[0], []))
        for c in configs
        if c.label.startswith("httpx: thread, run")
    ]
    best = max(polling, default=0.0)
    verdict = "met" if best >= GOAL_RUNS_PER_SECOND else "not met"
    servers = ", ".join(f"{name}: {SERVER_TEXT.get(name, name)}" for name in variants)
    ratios = ratio_lines(configs, variants)
    title = [
        "Figures from `make bench` (`python -m bench.runs`). Benchmarks are not tests: the machine is small",
        "and may be shared, so read medians, server CPU per run, and ratios measured side by side in one",
        "invocation rather than single numbers.",
        "",
        f"- date: {info['date']}",
        f"- machine: {info['cores']} cores, {info['cpu']}; {info['os']}; Python {info['python']}",
        f"- load average (1 min) before → after: {info['load']}",
        f"- server: {servers}; SQLite (WAL) on a fresh file, API and worker in one process;",
        f"  the stock command runs {info['stock']}",
        "- model: the scripted model (`python -m threadline.testing`), its own process, answering at once",
        "  with the prompt echoed in word-sized stream chunks; client, server and model share the cores",
        f"- settings: {settings}",
    ]
    throughput = [
        "Each client repeatedly creates a thread with one user message, creates a run and follows it until",
        "it completes: with held polls (`GET` the run with the SDK helpers' `X-Stainless-Poll-Helper`",
        "header, answered when the status changes), with the create-thread-and-run stream, or with the",
        "`openai` SDK's `threads.create` and `runs.create_and_poll`. Latency is per run, from creating the",
        "thread to seeing the run completed. The CPU columns are each process's CPU time over the rounds'",
        "wall time (100% = one core). Server CPU ms/run is what one run costs the server, the figure least",
        "disturbed by other load on the machine; the ceiling (1000 / that) is what one fully used server",
        "core would sustain.",
        "",
        throughput_table(configs, variants),
        "",
    ]
    if ratios:
        throughput += ["Side by side, same invocation, rounds interleaved:", "", ratios, ""]
    throughput += [
        f"Goal: ≥ {GOAL_RUNS_PER_SECOND:.0f} runs/s with polling clients on a 2-core machine: "
        f"**{verdict}** (best polling median {best:.0f} runs/s).",
    ]
    overhead = [
        "One run at a time, the three ways interleaved: a streamed chat completion straight to the model",
        "(the model's own time), and a run through Threadline followed by its stream, or created and then",
        "followed by held polls, until completed.",
        "",
        overhead_table(overheads),
    ]
    reproduce = [
        "```sh",
        "make bench                                # every benchmark; each replaces only its own sections",
        "python -m bench.runs                      # 2-3 minutes; prints and replaces these sections",
        "python -m bench.runs --no-write           # print only",
        "python -m bench.runs --quick --no-write   # a smoke run of a few seconds",
        "python -m bench.runs --compare-loops      # asyncio+h11 against uvloop+httptools, side by side",
        "python -m bench.runs --against CHECKOUT   # another checkout's server beside this one, round by round",
        "python -m bench.profile                   # where the server's CPU goes (needs py-spy; --way sdk)",
        "python -m bench.profile --loop            # the event loop thread's CPU per run (cProfile; --against CHECKOUT)",
        "python -m bench.statements --clients 8    # transactions and statements per run, by store operation",
        "```",
    ]
    return [
        (TITLE, "\n".join(title)),
        (THROUGHPUT, "\n".join(throughput)),
        (OVERHEAD, "\n".join(overhead)),
        (REPRODUCE, "\n".join(reproduce)),
    ]


# --- main -------------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, workdir: Path) -> list[Section]:
    info = setup()
    rounds, seconds, warmup, n = args.rounds, args.seconds, args.warmup, args.n
    configs = [polling_config(c) for c in args.clients]
    configs.append(streaming_config(max(args.clients)))
    if not args.no_sdk:
        configs.append(sdk_config(min(args.clients)))
    variants = ["asyncio+h11", "uvloop+httptools"] if args.compare_loops else ["stock"]
    if args.compare_loops:
        missing = [m for m in ("uvloop", "httptools") if importlib.util.find_spec(m) is None]
        if missing:
            raise SystemExit(
                f"--compare-loops needs {' and '.join(missing)}: pip install {' '.join(missing)}"
            )

    if args.against:
        # Before and after, round by round: the baseline first, so the ratios read "this / baseline".
        TREES[BASELINE] = Path(args.against).resolve()
        variants = [BASELINE, *variants]
    own = 1 if args.against else 0  # the overhead is measured on this checkout's server
    warm = max(3, n // 10)
    with stacks(workdir, [(v, "stock" if v == BASELINE else v, 0.0) for v in variants]) as started:
        await measure_throughput(started, configs, rounds, seconds, warmup)
        overheads = [await measure_overhead(started[own], 0.0, n, warm)]
    with stacks(workdir, [(f"{variants[own]}-slow", variants[own], 0.05)]) as slow:
        overheads.append(await measure_overhead(slow[0], 0.05, n, warm))
    info["load"] += f" → {load_average()}"

    settings = (
        f"{rounds} rounds of {seconds:g} s per configuration after a {warmup:g} s warm-up; "
        f"overhead over {n} sequential runs per path"
    )
    return report(info, configs, variants, overheads, settings)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.runs", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32], help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one throughput round")
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds of unrecorded load first")
    parser.add_argument("-n", type=int, default=50, help="sequential runs per path for the overhead")
    parser.add_argument("--no-sdk", action="store_true", help="skip the openai SDK client configuration")
    parser.add_argument("--compare-loops", action="store_true", help="asyncio+h11 vs uvloop+httptools")
    parser.add_argument(
        "--against",
        metavar="CHECKOUT",
        help="also serve from another checkout (its src/), rounds alternating: before and after side by "
        "side; never writes",
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds' smoke run; never writes")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {DOCS.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.warmup, args.n = 1, 1.0, 0.5, 5
    if args.rounds < 1 or not 0 < args.seconds <= 60 or not 0 < args.n <= 1000 or min(args.clients) < 1:
        parser.error("rounds and clients must be positive, seconds in (0, 60], -n in [1, 1000]")
    # The SDK marks the Assistants API deprecated; using it is the point here.
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="threadline-bench-") as tmp:
        # A last bound on the whole benchmark; every process is stopped on the way out either way.
        sections = asyncio.run(asyncio.wait_for(bench(args, Path(tmp)), TOTAL_TIMEOUT))
    publish(sections, write=not (args.no_write or args.quick or args.against), began=started)


if __name__ == "__main__":
    main()
