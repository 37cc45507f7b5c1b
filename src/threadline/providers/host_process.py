"""The model host: one child process per embedded model, running llama.cpp away from the server.

Started by :class:`threadline.providers.model_host.ModelHost` as ``python -m
threadline.providers.host_process <model.gguf> --threads N``. It loads the model, runs a tiny
generation (the start-up check: a build that cannot run on this CPU, or a file that cannot be
decoded, fails here rather than in a user's run), reports ``ready`` and then serves requests.

The protocol is JSON lines. Requests arrive on stdin; replies leave on a private copy of stdout
(fd 1 itself is pointed at stderr, so anything native code prints cannot corrupt the stream):

- ``{"op": "generate", "id": N, "request": {...}}`` → ``{"id": N, "events": [{...}, ...]}`` carrying
  the model's events in order, then ``{"id": N, "done": true}`` or ``{"id": N, "error": "...",
  "code": "..."}``. Events are sent as they come while tokens are slower than 50 ms; faster
  ones are held and sent together at most that long apart (:class:`Batcher`), so the server, the
  streams and their clients wake once per batch instead of once per token.
- ``{"op": "cancel", "id": N}`` stops generation N at its next token (or drops it while queued)
- ``{"op": "count", "id": N, "texts": [...]}`` → ``{"id": N, "counts": [...]}``, answered at once

Generations run one at a time, in arrival order, on one worker thread; counting runs on the reader
thread (tokenising only reads the vocabulary). When stdin closes the process exits.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from threadline.domain.ports.models import ModelEvent, ModelRequest, ProviderError, TextDelta, ToolCallDelta
from threadline.providers.decoding import DEFAULT_REPEAT_PENALTY, Loaded, Stopped, Turn, load_model

PROBE_PROMPT = [{"role": "user", "content": "Hi"}]
"""The start-up check's request: a real prompt through the real decode loop, two tokens long."""

FLUSH_SECONDS = 0.05
"""How long a generation's text may be held before it is sent (when tokens come faster than this)."""


def wire(event: ModelEvent) -> dict[str, Any]:
    """An event as the protocol sends it (``kind`` says which)."""
    if isinstance(event, TextDelta) and event.logprobs is None:
        return {"kind": "text", "text": event.text}  # the common case, without asdict's deep copy
    return dataclasses.asdict(event)


class Batcher:
    """Sends one generation's events in order, text and tool-call fragments in batches.

    A fragment goes out at once when nothing was sent for ``interval`` seconds (the first one
    always, and every one while tokens are slower than that); otherwise it waits for the next event,
    so a held fragment is late by less than ``interval`` plus one token. Any other event (usage,
    finish) sends everything held with it, as does :meth:`flush`.
    """

    def __init__(
        self,
        send: Callable[[list[dict[str, Any]]], None],
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.send = send
        self.interval = interval
        self.clock = clock
        self.held: list[dict[str, Any]] = []
        self.sent_at = -math.inf

    def add(self, event: ModelEvent) -> None:
        self.held.append(wire(event))
        now = self.clock()
        if not isinstance(event, TextDelta | ToolCallDelta) or now - self.sent_at >= self.interval:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        if self.held:
            events, self.held = self.held, []
            self.send(events)
            self.sent_at = self.clock() if now is None else now


# The CPU features llama.cpp's system info reports, by the name /proc/cpuinfo gives them.
_CPU_FLAGS = {
    "AVX": "avx",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}


def read_cpuinfo() -> str:
    """``/proc/cpuinfo``, or nothing where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            return file.read()
    except OSError:
        return ""


def _reported_flags(cpuinfo: str) -> set[str] | None:
    """The CPU's flags from ``/proc/cpuinfo``; ``None`` where it lists none (not x86 Linux)."""
    flags_line = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), None)
    return None if flags_line is None else set(flags_line.partition(":")[2].split())


def cpu_flags(cpuinfo: str | None = None) -> str:
    """The CPU features llama.cpp can use that this (x86 Linux) machine reports, space-separated."""
    have = _reported_flags(read_cpuinfo() if cpuinfo is None else cpuinfo) or set()
    return " ".join(name for name, flag in _CPU_FLAGS.items() if flag in have)


def missing_cpu_features(system_info: str, cpuinfo: str) -> list[str]:
    """Features the build was compiled to use that this (x86) CPU does not report."""
    have = _reported_flags(cpuinfo)
    if have is None:
        return []  # not x86 Linux: nothing to compare
    used = {name for name, value in re.findall(r"(\w+) = (\d+)", system_info) if value == "1"}
    return sorted(name for name in used if name in _CPU_FLAGS and _CPU_FLAGS[name] not in have)


def build_info() -> dict[str, str]:
    """What the llama.cpp build in use supports: its version and the CPU features it was compiled for."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info()
    return {
        "llama_cpp_python": str(getattr(llama_cpp, "__version__", "?")),
        "system_info": info.decode("utf-8", "replace").strip() if isinstance(info, bytes) else str(info),
    }


class Host:
    def __init__(self, loaded: Loaded, out: IO[str], repeat_penalty: float) -> None:
        self.loaded = loaded
        self.out = out
        self.repeat_penalty = repeat_penalty
        self.write_lock = threading.Lock()
        self.pending: queue.Queue[tuple[int, ModelRequest] | None] = queue.Queue()
        self.stops: dict[int, threading.Event] = {}
        self.stops_lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, ensure_ascii=False)
        with self.write_lock:
            self.out.write(line + "\n")
            self.out.flush()

    # -- the reader thread (main) ---------------------------------------------------------------------

    def serve(self, stdin: IO[str]) -> None:
        worker = threading.Thread(target=self.work, name="decode", daemon=True)
        worker.start()
        for line in stdin:
            try:
                message = json.loads(line)
                op, request_id = message["op"], int(message["id"])
            except (ValueError, KeyError, TypeError):
                continue  # the parent is ours; a garbled line is dropped, not fatal
            if op == "generate":
                with self.stops_lock:
                    self.stops[request_id] = threading.Event()
                self.pending.put((request_id, ModelRequest(**message["request"])))
            elif op == "cancel":
                with self.stops_lock:
                    stop = self.stops.get(request_id)
                if stop is not None:
                    stop.set()
            elif op == "count":
                self.count(request_id, message.get("texts") or [])
        self.pending.put(None)

    def count(self, request_id: int, texts: list[str]) -> None:
        llm = self.loaded.llm
        counts = [len(llm.tokenize(str(t).encode("utf-8"), add_bos=False, special=False)) for t in texts]
        self.send({"id": request_id, "counts": counts})

    # -- the decode thread ------------------------------------------------------------------------------

    def work(self) -> None:
        while (item := self.pending.get()) is not None:
            request_id, request = item
            with self.stops_lock:
                stop = self.stops.get(request_id) or threading.Event()
            try:
                if not stop.is_set():
                    self.send({"id": request_id, "started": True})
                    self.generate(request_id, request, stop)
                self.send({"id": request_id, "done": True})
            except Stopped:
                self.send({"id": request_id, "done": True})
            except ProviderError as exc:
                self.send({"id": request_id, "error": exc.message, "code": exc.code})
            except Exception as exc:
                self.send({"id": request_id, "error": f"llama.cpp failed: {exc}", "code": "server_error"})
            finally:
                with self.stops_lock:
                    self.stops.pop(request_id, None)

    def generate(self, request_id: int, request: ModelRequest, stop: threading.Event) -> None:
        batcher = Batcher(lambda events: self.send({"id": request_id, "events": events}), FLUSH_SECONDS)

        def emit(event: ModelEvent) -> None:
            if stop.is_set():
                raise Stopped
            batcher.add(event)

        try:
            Turn(self.loaded, request, emit, stop, repeat_penalty=self.repeat_penalty).run()
        finally:
            batcher.flush()  # what was decoded before an error goes out before it


def probe(loaded: Loaded) -> float:
    """Run the start-up check's tiny generation; its duration in seconds."""
    started = time.perf_counter()
    events: list[ModelEvent] = []
    request = ModelRequest(model="probe", messages=PROBE_PROMPT, temperature=0.0, max_tokens=2)
    Turn(loaded, request, events.append, threading.Event(), repeat_penalty=DEFAULT_REPEAT_PENALTY).run()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    args = argparse.ArgumentParser(prog="threadline-model-host")
    args.add_argument("model_path")
    args.add_argument("--threads", type=int, required=True)
    args.add_argument("--repeat-penalty", type=float, default=DEFAULT_REPEAT_PENALTY)
    options = args.parse_args(argv)

    # The protocol gets its own descriptor; fd 1 goes to stderr so native prints cannot corrupt it.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def say(message: dict[str, Any]) -> None:
        out.write(json.dumps(message, ensure_ascii=False) + "\n")
        out.flush()

    try:
        info = build_info()
        missing = missing_cpu_features(info["system_info"], read_cpuinfo())
        if missing:
            raise ProviderError(
                f"this llama.cpp build uses {', '.join(missing)}, which this CPU lacks;"
                " rebuild it for this machine with `make llama`"
            )
        loaded = load_model(options.model_path, options.threads)
        seconds = probe(loaded)
    except ProviderError as exc:
        say({"op": "failed", "error": exc.message})
        os._exit(3)  # no finalizers: a half-built llama.cpp object only complains on its way out
    except Exception as exc:
        say({"op": "failed", "error": f"{type(exc).__name__}: {exc}"})
        os._exit(3)
    say({"op": "ready", "n_ctx": loaded.n_ctx, "probe_seconds": round(seconds, 4), **info})
    Host(loaded, out, options.repeat_penalty).serve(sys.stdin)


if __name__ == "__main__":
    main()
