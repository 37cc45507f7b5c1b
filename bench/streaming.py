"""Streaming and polling latency: what Threadline adds to the first token, and to create_and_poll.

Side by side in one run, interleaved, against one scripted model process that answers in 20 chunks:

- time to the first token: a streamed chat completion straight to the model, against
  ``POST /v1/threads/runs`` with ``stream: true`` until its first ``thread.message.delta``;
- how long the SDK's ``create_and_poll`` takes beyond the run itself: ``create_and_poll`` against
  ``runs.stream(...).until_done()`` on the same kind of run, on a server that holds polls (the
  default) and on one that does not (``THREADLINE_POLL_HOLD_SECONDS=0``, the SDK's own 1 s polling).

Run it with ``python -m bench.streaming``; it replaces its own section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import openai

from bench.common import (
    BETA,
    Child,
    child_env,
    free_port,
    log,
    machine,
    markdown_table,
    pct,
    publish,
    today,
    wait_healthy,
)

SECTION = "## Streaming: first token and create_and_poll"
ANSWER = " ".join(f"token{i}" for i in range(20))
FIRST_DELAY = 0.05
CHUNK_DELAY = 0.005
GOAL_FIRST_TOKEN_MS = 10.0
GOAL_POLL_MS = 50.0


def first_bytes_matching(url: str, body: dict[str, object], marker: bytes, headers: dict[str, str]) -> float:
    """Seconds from sending a POST to seeing ``marker`` in the answer, over a plain socket.

    A raw HTTP/1.1 exchange keeps the client's own overhead (and its buffering) out of what is
    measured, the same for both paths."""
    parsed = httpx.URL(url)
    payload = json.dumps(body).encode()
    lines = [f"POST {parsed.raw_path.decode()} HTTP/1.1", f"Host: {parsed.host}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in {**headers, "Content-Type": "application/json"}.items()]
    lines.append(f"Content-Length: {len(payload)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
    with socket.create_connection((parsed.host, parsed.port or 80), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        began = time.perf_counter()
        sock.sendall(request)
        seen = b""
        while chunk := sock.recv(65536):
            seen += chunk
            if marker in seen:
                return time.perf_counter() - began
    raise RuntimeError(f"{url} never sent {marker!r}")


def first_token_direct(model_url: str) -> float:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    return first_bytes_matching(f"{model_url}/chat/completions", body, b'"content"', {})


def first_token_threadline(base_url: str, assistant_id: str) -> float:
    body = {
        "assistant_id": assistant_id,
        "stream": True,
        "thread": {"messages": [{"role": "user", "content": "hi"}]},
    }
    headers = {**BETA, "Authorization": "Bearer bench"}
    return first_bytes_matching(f"{base_url}/threads/runs", body, b"event: thread.message.delta", headers)


def run_with(client: openai.OpenAI, assistant_id: str, *, poll: bool) -> float:
    """Wall time of one run, followed either by create_and_poll or by its stream to the end."""
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    began = time.perf_counter()
    if poll:
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant_id)
    else:
        with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant_id) as stream:
            stream.until_done()
            run = stream.get_final_run()
    if run.status != "completed":
        raise RuntimeError(f"run ended {run.status}")
    return time.perf_counter() - began


def start_server(workdir: Path, name: str, model_url: str, extra: dict[str, str]) -> tuple[Child, str]:
    port = free_port()
    env = child_env(
        {
            "THREADLINE_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / name}.db",
            "THREADLINE_UPSTREAM_BASE_URL": model_url,
            "THREADLINE_LOG_LEVEL": "warning",
            **extra,
        }
    )
    argv = [sys.executable, "-m", "threadline.cli", "serve", "--port", str(port)]
    server = Child(name, argv, env, workdir / f"{name}.log")
    return server, wait_healthy(server, port, 60)


def sample(measures: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    """Each measure ``reps`` times, interleaved, after one unrecorded warm-up round."""
    for measure in measures.values():
        measure()
    samples: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(reps):
        for name, measure in measures.items():
            samples[name].append(measure() * 1000)
    return samples


def report(first: dict[str, list[float]], poll: dict[str, list[float]], reps: int, info: str) -> str:
    def row(name: str, values: list[float], base: list[float] | None) -> list[str]:
        median = statistics.median(values)
        added = "—" if base is None else f"+{median - statistics.median(base):.1f}"
        return [name, f"{median:.1f}", f"{pct(values, 0.95):.1f}", added]

    direct, through = first["model alone"], first["Threadline"]
    added_first = statistics.median(through) - statistics.median(direct)
    held = statistics.median(poll["create_and_poll, held polls"]) - statistics.median(poll["stream, held"])
    plain = statistics.median(poll["create_and_poll, no hold"]) - statistics.median(poll["stream, no hold"])
    head = ["path", "median ms", "p95 ms", "added ms (median)"]
    return "\n".join(
        [
            f"Measured {today()} on {info}; {reps} interleaved repetitions per path; the scripted model",
            f"waits {FIRST_DELAY * 1000:.0f} ms, then sends 20 chunks {CHUNK_DELAY * 1000:.0f} ms apart.",
            "",
            "**Time to the first token** — a streamed chat completion straight to the model, against",
            "`POST /v1/threads/runs` with `stream: true` (thread and run created in the same request)",
            "until the first `thread.message.delta`; both read over a plain socket, so that no client",
            "library's buffering is in the figures:",
            "",
            markdown_table(head, [row("model alone", direct, None), row("Threadline", through, direct)]),
            "",
            f"Threadline adds **{added_first:.1f} ms** to the first token at the median"
            f" (goal < {GOAL_FIRST_TOKEN_MS:.0f} ms: {'met' if added_first < GOAL_FIRST_TOKEN_MS else 'not met'}).",
            "",
            "**`create_and_poll` beyond the run itself** — the official SDK's `create_and_poll` against",
            "`runs.stream(...).until_done()` for the same kind of run, on a server that holds the SDK's",
            "polls (the default) and on one that does not (`THREADLINE_POLL_HOLD_SECONDS=0`):",
            "",
            markdown_table(
                head,
                [
                    row("stream, held", poll["stream, held"], None),
                    row(
                        "create_and_poll, held polls",
                        poll["create_and_poll, held polls"],
                        poll["stream, held"],
                    ),
                    row("stream, no hold", poll["stream, no hold"], None),
                    row(
                        "create_and_poll, no hold", poll["create_and_poll, no hold"], poll["stream, no hold"]
                    ),
                ],
            ),
            "",
            f"With held polls `create_and_poll` returns **{held:.1f} ms** after the stream would have"
            f" ended (goal < {GOAL_POLL_MS:.0f} ms: {'met' if held < GOAL_POLL_MS else 'not met'});"
            f" with the SDK's own polling, {plain:.0f} ms.",
            "",
            "Reproduce: `python -m bench.streaming` (about a minute).",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.streaming", description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    args = parser.parse_args(argv)
    if not 1 <= args.reps <= 200:
        parser.error("--reps in [1, 200]")
    info = str(machine())
    began = time.monotonic()
    children: list[Child] = []
    with tempfile.TemporaryDirectory(prefix="threadline-bench-") as tmp:
        workdir = Path(tmp)
        try:
            model = Child(
                "model",
                [
                    sys.executable,
                    "-m",
                    "threadline.testing",
                    "--port",
                    "0",
                    "--text",
                    ANSWER,
                    "--first-delay",
                    str(FIRST_DELAY),
                    "--delay",
                    str(CHUNK_DELAY),
                ],
                child_env({}),
                workdir / "model.log",
            )
            children.append(model)
            model_url = model.wait_for_line("ready ", 30, prefix=True).split(" ", 1)[1].strip()
            held, held_url = start_server(workdir, "held", model_url, {})
            children.append(held)
            plain, plain_url = start_server(
                workdir, "plain", model_url, {"THREADLINE_POLL_HOLD_SECONDS": "0"}
            )
            children.append(plain)
            with (
                openai.OpenAI(base_url=held_url, api_key="bench", max_retries=0) as held_client,
                openai.OpenAI(base_url=plain_url, api_key="bench", max_retries=0) as plain_client,
            ):
                held_assistant = held_client.beta.assistants.create(model="gpt-4o").id
                plain_assistant = plain_client.beta.assistants.create(model="gpt-4o").id
                log("time to first token ...")
                first = sample(
                    {
                        "model alone": lambda: first_token_direct(model_url),
                        "Threadline": lambda: first_token_threadline(held_url, held_assistant),
                    },
                    args.reps,
                )
                log("create_and_poll against streams ...")
                poll = sample(
                    {
                        "stream, held": lambda: run_with(held_client, held_assistant, poll=False),
                        "create_and_poll, held polls": lambda: run_with(
                            held_client, held_assistant, poll=True
                        ),
                        "stream, no hold": lambda: run_with(plain_client, plain_assistant, poll=False),
                        "create_and_poll, no hold": lambda: run_with(
                            plain_client, plain_assistant, poll=True
                        ),
                    },
                    max(3, args.reps // 3),
                )
        finally:
            for child in reversed(children):
                child.stop()
    publish([(SECTION, report(first, poll, args.reps, info))], write=not args.no_write, began=began)
    log(json.dumps({k: statistics.median(v) for k, v in {**first, **poll}.items()}))


if __name__ == "__main__":
    main()
