"""Chat completions and embeddings through Threadline against the model alone.

- A streamed chat completion straight to the scripted model (one process, 20 chunks) against the same
  request to ``POST /v1/chat/completions`` on a Threadline server routing to it: time to the first
  token and to ``data: [DONE]``, interleaved, read over a plain socket (``bench.streaming``'s reader).
- ``POST /v1/embeddings`` on the embedded multilingual-e5-small: inputs per second at batch 1 and 32,
  against the same model called in this process.

Run it with ``python -m bench.chat``; it replaces its own section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import openai

from bench.common import Child, child_env, log, machine, markdown_table, pct, publish, today
from bench.streaming import first_bytes_matching, start_server

SECTION = "## Chat completions and embeddings"
ANSWER = " ".join(f"token{i}" for i in range(20))
FIRST_DELAY = 0.05
CHUNK_DELAY = 0.005
GOAL_FIRST_TOKEN_MS = 10.0
SENTENCE = "Threadline serves chat completions and embeddings through the routing table, number {}."


def chat_times(url: str, headers: dict[str, str]) -> tuple[float, float]:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    first = first_bytes_matching(f"{url}/chat/completions", body, b"token0", headers)
    total = first_bytes_matching(f"{url}/chat/completions", body, b"[DONE]", headers)
    return first, total


def embeddings_rate(client: openai.OpenAI, batch: int, seconds: float) -> float:
    """Inputs per second, embedding batches of ``batch`` distinct sentences for about ``seconds``."""
    done, began, n = 0, time.perf_counter(), 0
    while time.perf_counter() - began < seconds or done == 0:
        texts = [SENTENCE.format(n + i) for i in range(batch)]
        n += batch
        client.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
        done += batch
    return done / (time.perf_counter() - began)


def model_rate(batch: int, seconds: float) -> float:
    from threadline.providers.embeddings import E5Embedder

    embedder = E5Embedder(1)
    done, began, n = 0, time.perf_counter(), 0
    while time.perf_counter() - began < seconds or done == 0:
        embedder.embed_queries([SENTENCE.format(n + i) for i in range(batch)])
        n += batch
        done += batch
    return done / (time.perf_counter() - began)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chat", description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=8.0, help="per embeddings measure")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    args = parser.parse_args(argv)
    info = str(machine())
    began = time.monotonic()
    children: list[Child] = []
    with tempfile.TemporaryDirectory(prefix="threadline-bench-") as tmp:
        workdir = Path(tmp)
        try:
            argv_model = [sys.executable, "-m", "threadline.testing", "--port", "0", "--text", ANSWER]
            argv_model += ["--first-delay", str(FIRST_DELAY), "--delay", str(CHUNK_DELAY)]
            model = Child("model", argv_model, child_env({}), workdir / "model.log")
            children.append(model)
            model_url = model.wait_for_line("ready ", 30, prefix=True).split(" ", 1)[1].strip()
            server, url = start_server(workdir, "chat", model_url, {"THREADLINE_EMBEDDINGS_THREADS": "1"})
            children.append(server)
            auth = {"Authorization": "Bearer bench"}
            log("chat completions ...")
            samples: dict[str, list[tuple[float, float]]] = {"model alone": [], "Threadline": []}
            chat_times(model_url, {}), chat_times(url, auth)  # warm-up
            for _ in range(args.reps):
                samples["model alone"].append(chat_times(model_url, {}))
                samples["Threadline"].append(chat_times(url, auth))
            log("embeddings ...")
            with openai.OpenAI(base_url=url, api_key="bench", max_retries=0, timeout=120) as client:
                embeddings_rate(client, 1, 0.1)  # loads the model
                rates = {b: embeddings_rate(client, b, args.seconds) for b in (1, 32)}
            alone = {b: model_rate(b, args.seconds) for b in (1, 32)}
        finally:
            for child in reversed(children):
                child.stop()

    def row(name: str, base: str | None) -> list[str]:
        firsts = [f * 1000 for f, _ in samples[name]]
        totals = [t * 1000 for _, t in samples[name]]
        cells = [name, f"{statistics.median(firsts):.1f}", f"{pct(firsts, 0.95):.1f}"]
        cells += [f"{statistics.median(totals):.1f}"]
        if base is None:
            return [*cells, "—", "—"]
        base_first = statistics.median(f * 1000 for f, _ in samples[base])
        base_total = statistics.median(t * 1000 for _, t in samples[base])
        return [
            *cells,
            f"+{statistics.median(firsts) - base_first:.1f}",
            f"{statistics.median(totals) / base_total:.2f}",
        ]

    added = statistics.median(f for f, _ in samples["Threadline"]) - statistics.median(
        f for f, _ in samples["model alone"]
    )
    added *= 1000
    body = "\n".join(
        [
            f"Measured {today()} on {info}; {args.reps} interleaved repetitions; the scripted model waits",
            f"{FIRST_DELAY * 1000:.0f} ms, then sends 20 chunks {CHUNK_DELAY * 1000:.0f} ms apart.",
            "",
            "**A streamed chat completion** straight to the model, against `POST /v1/chat/completions`",
            "routed to it; first token and `data: [DONE]`, read over a plain socket:",
            "",
            markdown_table(
                [
                    "path",
                    "first token median ms",
                    "p95 ms",
                    "total median ms",
                    "added first ms",
                    "total ratio",
                ],
                [row("model alone", None), row("Threadline", "model alone")],
            ),
            "",
            f"Threadline adds **{added:.1f} ms** to the first token at the median (goal < "
            f"{GOAL_FIRST_TOKEN_MS:.0f} ms: {'met' if added < GOAL_FIRST_TOKEN_MS else 'not met'}).",
            "",
            "**Embeddings** (multilingual-e5-small, 1 thread), inputs per second of ~15-token sentences:",
            "",
            markdown_table(
                ["batch", "POST /v1/embeddings", "model in process", "ratio"],
                [
                    [str(b), f"{rates[b]:.1f}", f"{alone[b]:.1f}", f"{rates[b] / alone[b]:.2f}"]
                    for b in (1, 32)
                ],
            ),
            "",
            "Reproduce: `python -m bench.chat` (about a minute).",
        ]
    )
    publish([(SECTION, body)], write=not args.no_write, began=began)


if __name__ == "__main__":
    main()
