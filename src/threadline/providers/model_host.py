"""Supervision of a model host process (:mod:`threadline.providers.host_process`), server side.

llama.cpp is native code: a fault in it (a CPU instruction the machine lacks, an assertion, running
out of memory) kills whatever process it runs in. So each embedded model runs in a child process
that this class starts, feeds and watches, as Ollama and LocalAI do:

- requests go to the child over its stdin and their events come back over its stdout (JSON lines),
  streamed as they are decoded (in batches while tokens come fast: each batch reaches the caller as
  one piece of text, so the run, its streams and their clients handle a batch, not every token);
  the child decodes requests one at a time in arrival order;
- when the child dies, the calls in flight fail with a :class:`ProviderError` that says how it died
  (signal or exit code, and its last words on stderr), and the next call starts a new child, after a
  back-off that grows while it keeps dying;
- a generation that produces nothing for ``stall_seconds`` is taken as hung: the child is killed;
- a generation that goes on past its deadline or its reply caps (:class:`ReplyLimits`) is stopped
  and its call fails;
- a model that cannot load or pass the start-up check (a tiny real generation) is reported in one
  line naming the file and the reason, and calls fail with that line until a retry succeeds.

Nothing here is tied to one event loop: a reader thread hands each event to the loop of the call
waiting for it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from threadline.domain.ports.models import (
    Finish,
    ModelEvent,
    ModelRequest,
    ProviderError,
    ReplyBudget,
    ReplyLimits,
    TextDelta,
    ToolCallDelta,
    Usage,
)

log = logging.getLogger(__name__)

HostState = Literal["stopped", "starting", "ready", "failed"]

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
STDERR_LINES = 20


def _event(data: dict[str, Any]) -> ModelEvent:
    kind = data.pop("kind")
    if kind == "text":
        return TextDelta(**data)
    if kind == "tool_call":
        return ToolCallDelta(**data)
    if kind == "usage":
        return Usage(**data)
    return Finish(**data)


def unbatch(batch: list[dict[str, Any]], budget: ReplyBudget) -> tuple[list[ModelEvent], bool]:
    """A batch of the child's events, each counted against ``budget``, with fragments that continue
    each other (text after text, arguments of the same call) joined into one; and whether the
    request's ``max_tokens`` ran out within it (the events up to that point are kept)."""
    events: list[ModelEvent] = []
    for data in batch:
        event = _event(dict(data))
        if budget.over(event):
            return events, True
        last = events[-1] if events else None
        if (
            isinstance(last, TextDelta)
            and isinstance(event, TextDelta)
            and last.logprobs is None
            and event.logprobs is None
        ):
            events[-1] = TextDelta(last.text + event.text)
        elif (
            isinstance(last, ToolCallDelta)
            and isinstance(event, ToolCallDelta)
            and last.index == event.index
            and event.name is None
        ):
            events[-1] = ToolCallDelta(last.index, last.arguments + event.arguments, last.name)
        else:
            events.append(event)
    return events, False


def describe_exit(returncode: int) -> str:
    """How a process ended, for people: ``killed by signal SIGSEGV (segmentation fault)``."""
    if returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        meaning: str | None = (
            {
                signal.SIGSEGV: "segmentation fault",
                signal.SIGILL: "an instruction this CPU cannot execute",
                signal.SIGABRT: "aborted",
                signal.SIGBUS: "bus error",
                signal.SIGKILL: "killed: out of memory, or by an operator",
                signal.SIGFPE: "arithmetic fault",
            }.get(signal.Signals(number))
            if number in signal.valid_signals()
            else None
        )
        return f"killed by signal {name}" + (f" ({meaning})" if meaning else "")
    return f"exited with code {returncode}"


@dataclass(eq=False)
class _Call:
    id: int
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    def deliver(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the caller's loop has closed: nobody is listening
            self.loop.call_soon_threadsafe(self.queue.put_nowait, message)


@dataclass
class _Child:
    process: subprocess.Popen[str]
    ready: threading.Event = field(default_factory=threading.Event)
    hello: dict[str, Any] = field(default_factory=dict)
    stderr: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=STDERR_LINES))
    stderr_reader: threading.Thread | None = None
    killed_because: str | None = None


class ModelHost:
    """One model host process for one GGUF file, started on first use (or by :meth:`start`)."""

    def __init__(
        self,
        model_path: str,
        *,
        n_threads: int,
        stall_seconds: float = 300.0,
        start_seconds: float = 300.0,
        repeat_penalty: float | None = None,
        limits: ReplyLimits | None = None,
    ) -> None:
        self.model_path = model_path
        self.limits = limits or ReplyLimits()
        """A generation's deadline counts from its start: calls queued behind others only wait."""
        self.n_threads = n_threads
        self.stall_seconds = stall_seconds
        self.start_seconds = start_seconds
        self.repeat_penalty = repeat_penalty
        self.state: HostState = "stopped"
        self.failure: str | None = None
        """Why the model cannot be served (set while ``state`` is ``failed``)."""
        self.info: dict[str, Any] = {}
        """The child's ``ready`` message: context size, llama.cpp build, start-up check time."""
        self._child: _Child | None = None
        self._calls: dict[int, _Call] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # guards _child, _calls, state, the restart schedule
        self._start_lock = threading.Lock()  # one start at a time
        self._write_lock = threading.Lock()
        self._deaths = 0
        self._retry_at = 0.0
        self._closed = False

    @property
    def name(self) -> str:
        return Path(self.model_path).name

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.process.pid if child is not None and child.process.poll() is None else None

    @property
    def n_ctx(self) -> int:
        return int(self.info.get("n_ctx", 0))

    # -- starting and stopping --------------------------------------------------------------------

    async def start(self) -> None:
        """Start the child and wait until it has loaded the model and passed the start-up check."""
        await asyncio.to_thread(self._ensure_started)

    def _live(self) -> _Child | None:
        child = self._child
        if (
            child is not None
            and child.killed_because is None  # killed, maybe not yet gone: never handed a new call
            and child.process.poll() is None
            and child.ready.is_set()
            and self.state == "ready"
        ):
            return child
        return None

    async def _started(self) -> _Child:
        child = self._live()
        return child if child is not None else await asyncio.to_thread(self._ensure_started)

    def _ensure_started(self) -> _Child:
        with self._start_lock:
            if self._closed:
                raise ProviderError(f"The model {self.name} is shut down.")
            child = self._live()
            if child is not None:
                return child
            wait = self._retry_at - time.monotonic()
            if self.state == "failed" and wait > 0:
                raise ProviderError(self.failure or f"The model {self.name} cannot be served.")
            if wait > 0:
                time.sleep(wait)  # back off while the model keeps dying
            return self._spawn()

    def _spawn(self) -> _Child:
        self.state = "starting"
        command = [
            sys.executable,
            "-m",
            "threadline.providers.host_process",
            self.model_path,
            "--threads",
            str(self.n_threads),
        ]
        if self.repeat_penalty is not None:
            command += ["--repeat-penalty", str(self.repeat_penalty)]
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        child = _Child(process)
        with self._lock:
            self._child = child
        threading.Thread(
            target=self._read, args=(child,), name=f"model-host-{process.pid}", daemon=True
        ).start()
        child.stderr_reader = threading.Thread(target=self._read_stderr, args=(child,), daemon=True)
        child.stderr_reader.start()
        if not child.ready.wait(self.start_seconds):
            child.killed_because = f"it did not load within {self.start_seconds:g} s"
            process.kill()
            child.ready.wait(10)
        if child.hello.get("op") != "ready":
            reason = child.hello.get("error") or self._death(child)
            self._fail(f"The model {self.model_path} cannot be served: {reason}")
            raise ProviderError(self.failure or reason)
        self.info = child.hello
        with self._lock:
            self.state, self.failure = "ready", None
        log.info(
            "model %s ready in process %d (context %d tokens, %d threads; start-up check %.2f s)",
            self.name,
            process.pid,
            self.n_ctx,
            self.n_threads,
            float(child.hello.get("probe_seconds", 0.0)),
        )
        return child

    def _fail(self, reason: str) -> None:
        with self._lock:
            self.state, self.failure = "failed", reason
            self._back_off()
        log.error("%s", reason)

    def _back_off(self) -> None:
        """One more death in a row: the next start waits twice as long (under ``_lock``)."""
        self._deaths += 1
        self._retry_at = time.monotonic() + min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self._deaths - 1))

    async def aclose(self) -> None:
        self._closed = True
        await asyncio.to_thread(self._stop)

    def _stop(self) -> None:
        child = self._child
        if child is None:
            return
        with contextlib.suppress(OSError):
            if child.process.stdin is not None:
                child.process.stdin.close()  # the host exits when its input ends
        try:
            child.process.wait(5)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait(5)

    def kill(self, reason: str, sig: int = signal.SIGKILL) -> None:
        """End the child (a hung generation); calls in flight fail with ``reason``."""
        child = self._child
        if child is not None and child.process.poll() is None:
            child.killed_because = reason
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.process.pid, sig)

    # -- the child's output -----------------------------------------------------------------------

    def _read(self, child: _Child) -> None:
        assert child.process.stdout is not None
        for line in child.process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if not child.ready.is_set():
                child.hello = message
                child.ready.set()
                continue
            with self._lock:
                call = self._calls.get(int(message.get("id", 0)))
            if call is not None:
                call.deliver(message)
        child.process.wait()
        child.ready.set()
        reason = self._death(child)
        for pipe in (child.process.stdin, child.process.stdout):
            with contextlib.suppress(OSError):
                if pipe is not None:
                    pipe.close()
        if self._closed:
            return
        with self._lock:
            orphans = [c for c in self._calls.values()]
            self._calls.clear()
            was_ready = self.state == "ready" and self._child is child
            if was_ready:
                self.state = "stopped"
                self._back_off()
        if was_ready:
            message = f"The model process for {self.name} died: {reason}."
            log.error("%s %d call(s) in flight failed; it restarts on the next call.", message, len(orphans))
            for call in orphans:
                call.deliver({"error": message, "code": "server_error"})

    def _read_stderr(self, child: _Child) -> None:
        assert child.process.stderr is not None
        for line in child.process.stderr:
            text = line.rstrip()
            if text:
                child.stderr.append(text)
                log.debug("model host %d: %s", child.process.pid, text)
        child.process.stderr.close()

    def _death(self, child: _Child) -> str:
        code = child.process.wait()
        if child.stderr_reader is not None:
            child.stderr_reader.join(2)  # its last words may still be in the pipe
        reason = child.killed_because or describe_exit(code)
        if child.killed_because is None and code < 0 and -code == signal.SIGILL:
            reason += (
                "; this llama.cpp build needs CPU features the machine lacks (see `threadline doctor`;"
                " rebuild with `make llama`)"
            )
        last = next((line for line in reversed(child.stderr) if line.strip()), None)
        return f"{reason}; its last words: {last[:300]}" if last else reason

    # -- calls ------------------------------------------------------------------------------------

    def _send(self, child: _Child, message: dict[str, Any]) -> None:
        data = json.dumps(message, ensure_ascii=False) + "\n"
        with self._write_lock:
            try:
                assert child.process.stdin is not None
                child.process.stdin.write(data)
                child.process.stdin.flush()
            except (OSError, ValueError):
                pass  # it died: the reader reports how, to every call in flight

    def _open_call(self, child: _Child) -> _Call:
        call = _Call(next(self._ids), asyncio.get_running_loop())
        with self._lock:
            if child.process.poll() is not None or self._child is not child:
                raise ProviderError(f"The model process for {self.name} died: {self._death(child)}.")
            self._calls[call.id] = call
        return call

    def _close_call(self, call: _Call) -> None:
        with self._lock:
            self._calls.pop(call.id, None)

    async def generate(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        child = await self._started()
        call = self._open_call(child)
        finished = False
        try:
            self._send(child, {"op": "generate", "id": call.id, "request": dataclasses.asdict(request)})
            budget = ReplyBudget(self.limits, request)
            deadline: float | None = None
            while True:
                # A queued call waits its turn; a started one must keep producing, and end in time.
                timeout = None if deadline is None else min(self.stall_seconds, deadline - time.monotonic())
                try:
                    if timeout is not None and timeout <= 0:
                        raise TimeoutError
                    message = await asyncio.wait_for(call.queue.get(), timeout)
                except TimeoutError:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise self.limits.overdue() from None  # the finally asks the host to stop it
                    reason = f"it produced nothing for {self.stall_seconds:g} s and was stopped"
                    self.kill(reason)
                    finished = True
                    raise ProviderError(f"The model process for {self.name} hung: {reason}.") from None
                if "error" in message:
                    finished = True
                    raise ProviderError(str(message["error"]), code=message.get("code") or "server_error")
                if message.get("done"):
                    finished = True
                    with self._lock:
                        self._deaths = 0
                    return
                if message.get("started"):
                    deadline = self.limits.deadline()
                elif "events" in message:
                    events, spent = unbatch(message["events"], budget)
                    for event in events:
                        yield event
                    if spent:
                        yield Finish("length")
                        return  # the finally asks the host to stop the generation
        finally:
            self._close_call(call)
            if not finished:
                self._send(child, {"op": "cancel", "id": call.id})

    async def count_tokens(self, texts: list[str]) -> list[int]:
        child = await self._started()
        call = self._open_call(child)
        try:
            self._send(child, {"op": "count", "id": call.id, "texts": texts})
            message = await call.queue.get()
        finally:
            self._close_call(call)
        if "error" in message:
            raise ProviderError(str(message["error"]))
        return [int(n) for n in message["counts"]]
