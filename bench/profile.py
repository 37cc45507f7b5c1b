"""Where Threadline's server spends its CPU per run: py-spy samples the server under the benchmark's load.

``python -m bench.profile`` starts the scripted model and ``threadline serve`` like ``bench.runs``,
attaches ``py-spy record`` (in the ``dev`` extra) to the server for a bounded time while C clients
drive runs (``--way``: held polls, streams, or the openai SDK's ``create_and_poll``), and prints where the samples taken while a server thread held the GIL fall: by
package, and by function, in the function itself (self) and in everything it called (total).
``--raw FILE`` keeps py-spy's collapsed stacks, e.g. for a flame graph.

``--loop`` profiles the CPU time of the event loop's thread instead (cProfile, ``bench.loop_profile``)
and counts what a run costs it: Python calls and hand-offs to other threads (the database, executors) per run;
``--against CHECKOUT`` profiles another checkout's server the same way, in the same invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from bench.common import log
from bench.runs import (
    SERVERS,
    TREES,
    Round,
    Stack,
    httpx_client,
    run_polling,
    run_streaming,
    sdk_config,
    stacks,
    throughput_round,
)


def pyspy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    return found


async def load(stack: Stack, clients: int, seconds: float, way: str) -> Round:
    if way == "sdk":
        once, close = sdk_config(clients).make(stack)
        try:
            result = await throughput_round(stack, once, clients, seconds)
        finally:
            await close()
    else:
        async with httpx_client(stack.url, clients) as client:
            follow = run_streaming if way == "stream" else run_polling
            result = await throughput_round(
                stack, lambda: follow(client, stack.url, stack.assistant_id), clients, seconds
            )
    return result


def described(result: Round) -> str:
    cpu = (
        f", server CPU {result.server_cpu * 1000 / max(1, result.runs):.1f} ms/run"
        if result.server_cpu
        else ""
    )
    return f"{result.runs} runs in {result.seconds:.1f} s ({result.rate:.0f} runs/s){cpu}"


def _package(frame: str) -> str:
    """``sqlalchemy`` for ``execute (sqlalchemy/engine/base.py)``; the module for top-level files."""
    where = frame.rpartition("(")[2].rstrip(")").split(":")[0]
    head = where.split("/")[0]
    return head.removesuffix(".py") if head else "?"


def summarise(raw: str, top: int) -> str:
    """Self and total sample shares per function and self share per package, from py-spy's collapsed
    stacks (``a;b;c count``)."""
    self_counts: collections.Counter[str] = collections.Counter()
    total_counts: collections.Counter[str] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        self_counts[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for frame in set(frames):
            total_counts[frame] += count
    if not samples:
        return "no samples"

    def table(title: str, counts: collections.Counter[str], limit: int) -> list[str]:
        lines = [f"{title} (of {samples} samples)", ""]
        for frame, count in counts.most_common(limit):
            lines.append(f"{count / samples * 100:5.1f}%  {frame}")
        return [*lines, ""]

    return "\n".join(
        table("self time by package", packages, 20)
        + table("self time by function", self_counts, top)
        + table("total time (self and callees) by function", total_counts, top)
    )


async def profile(args: argparse.Namespace, workdir: Path) -> str:
    raw_file = Path(args.raw) if args.raw else workdir / "profile.txt"
    with stacks(workdir, [(args.server, args.server, 0.0)]) as (stack,):
        # Warm the server up before sampling starts.
        log(f"warm-up: {described(await load(stack, args.clients, 1.5, args.way))}")
        argv = [pyspy(), "record", "--pid", str(stack.server.pid), "--rate", str(args.rate)]
        argv += ["--duration", str(int(args.seconds)), "--format", "raw", "--output", str(raw_file)]
        # Only samples holding the GIL: what the server's Python actually spends the core on.
        argv += ["--nonblocking", "--gil", "--nolineno"]
        argv += ["--threads"] if args.threads else []
        recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            time.sleep(0.5)  # let py-spy attach before the load starts
            log(f"profiled load: {described(await load(stack, args.clients, args.seconds - 1, args.way))}")
            _, err = recorder.communicate(timeout=args.seconds + 30)
        finally:
            if recorder.poll() is None:
                recorder.kill()
                recorder.wait()
        if recorder.returncode != 0 or not raw_file.exists():
            raise SystemExit(f"py-spy failed: {err.decode(errors='replace')}")
    return summarise(raw_file.read_text(), args.top)


SERVERS["loop-profiled"] = ["-m", "bench.loop_profile"]


async def loop_profile(args: argparse.Namespace, workdir: Path, name: str, tree: str | None) -> str:
    """The loop thread's CPU profile of the server (``tree``'s, or this checkout's) under the load."""
    output = workdir / f"{name}.prof"
    os.environ["BENCH_LOOP_PROFILE"] = str(output)  # the server's environment is made from ours
    if tree:
        TREES[name] = Path(tree).resolve()
    with stacks(workdir, [(name, "loop-profiled", 0.0)]) as (stack,):
        log(f"{name} warm-up: {described(await load(stack, args.clients, 1.5, args.way))}")
        os.kill(stack.server.pid, signal.SIGUSR1)
        profiled = await load(stack, args.clients, args.seconds, args.way)
        os.kill(stack.server.pid, signal.SIGUSR2)
        for _ in range(300):
            if output.with_suffix(".done").exists():
                break
            await asyncio.sleep(0.1)
    log(f"{name} profiled load: {described(profiled)}")
    return summarise_loop(pstats.Stats(str(output)), profiled.runs, args.top, name)


def summarise_loop(stats: pstats.Stats, runs: int, top: int, name: str) -> str:
    entries = stats.stats  # type: ignore[attr-defined]
    total: float = stats.total_tt  # type: ignore[attr-defined]
    # A job put on a thread's queue: an executor's (run_in_executor, to_thread) or SQLite's
    # database thread's; both are a queue.SimpleQueue.
    handoffs = sum(
        v[1] for k, v in entries.items() if k[2] == "<method 'put' of '_queue.SimpleQueue' objects>"
    )
    lines = [
        f"{name}: event loop thread, {runs} runs profiled: {total * 1000 / max(runs, 1):.1f} ms CPU per run "
        f"under the profiler, {stats.total_calls / max(runs, 1):.0f} Python calls per run, "  # type: ignore[attr-defined]
        f"{handoffs / max(runs, 1):.2f} hand-offs to another thread per run",
        "",
        "own time | with callees | calls per run | function",
        "---|---|---|---",
    ]
    by_own = sorted(entries.items(), key=lambda kv: -kv[1][2])[:top]
    for (path, line, function), (_, calls, own, cumulative, _) in by_own:
        lines.append(
            f"{own / total * 100:5.1f}% | {cumulative / total * 100:5.1f}% | {calls / max(runs, 1):6.1f} | "
            f"`{function}` ({_short(path)}:{line})"
        )
    return "\n".join([*lines, ""])


def _short(path: str) -> str:
    for marker in ("site-packages/", "/src/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path.rsplit("/", 1)[-1]  # the standard library's, or a built-in's


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--server", default="stock", choices=sorted(SERVERS), help="server variant")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="sampling time (bounded to 60)")
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--way",
        default="poll",
        choices=["poll", "stream", "sdk"],
        help="how clients follow runs: held polls, streams, or the openai SDK's create_and_poll",
    )
    parser.add_argument("--threads", action="store_true", help="keep threads apart in the stacks")
    parser.add_argument("--raw", help="keep py-spy's collapsed stacks in this file")
    parser.add_argument("--loop", action="store_true", help="the event loop thread's CPU time (cProfile)")
    parser.add_argument("--against", metavar="CHECKOUT", help="with --loop: that checkout's server first")
    args = parser.parse_args(argv)
    args.seconds = min(max(args.seconds, 2.0), 60.0)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the SDK's Assistants API
    with tempfile.TemporaryDirectory(prefix="threadline-profile-") as tmp:
        if not args.loop:
            print(asyncio.run(profile(args, Path(tmp))))
            return
        if args.against:
            print(asyncio.run(loop_profile(args, Path(tmp), "baseline", args.against)))
        print(asyncio.run(loop_profile(args, Path(tmp), "this-checkout", None)))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
