"""The embedded model provider: a GGUF model run by llama.cpp in a supervised host process.

This is what lets a user with no API key and no model server get real answers. The model runs in a
child process (:mod:`model_host` supervises it, :mod:`host_process` is the child, :mod:`decoding` its
decode loop), so a crash in native code fails the calls in flight with a clear error instead of
taking the server down. Function calls and ``response_format`` JSON are decoded under grammars
(:mod:`grammars`), with the tool-choice prompting of :mod:`local_tools`.
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator
from pathlib import Path

from threadline.domain.ports.models import ModelEvent, ModelRequest, ReplyLimits
from threadline.providers.model_host import ModelHost

__all__ = ["LlamaCppProvider", "default_threads", "usable_cores"]

MAX_DEFAULT_THREADS = 8
"""Past this many threads, decoding (bound by memory bandwidth, not arithmetic) gains next to
nothing, and each thread is one more that every step of every token waits for."""

CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cores(affinity: int | None = None, cpu_max: str | None = None) -> int:
    """The cores this process may use: those it may be scheduled on (its CPU affinity: ``taskset``,
    a cpuset), fewer when its cgroup's CPU quota (``cpu.max``: a container's ``--cpus``) allows
    less. The arguments stand in for what the system says (for tests)."""
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if cpu_max is None:
        try:
            cpu_max = CPU_MAX.read_text(encoding="ascii")
        except OSError:
            cpu_max = ""
    quota, _, period = cpu_max.strip().partition(" ")
    if quota.isdigit() and period.isdigit() and int(period) > 0:
        affinity = min(affinity, max(1, math.ceil(int(quota) / int(period))))
    return max(1, affinity)


def default_threads(cores: int | None = None) -> int:
    """All usable cores but one, at most :data:`MAX_DEFAULT_THREADS`. The core left over is the
    server's: llama.cpp's threads wait for each other at every step of every token, so when the
    server (or anything else) takes one of their cores, the token waits for the descheduled thread;
    on 2 cores 2 threads decode at a fraction of the speed of 1 while the server streams.
    docs/benchmarks.md has the figures, docs/deploy.md the advice for larger machines."""
    cores = usable_cores() if cores is None else cores
    return max(1, min(cores - 1, MAX_DEFAULT_THREADS))


class LlamaCppProvider:
    """A :class:`~threadline.domain.ports.models.Provider` for one GGUF file.

    The host process starts on first use, or at start-up through :meth:`start` (which runs the
    start-up check). ``count_tokens`` and ``context_window`` use the model's own tokenizer and
    context size, from the host.
    """

    def __init__(
        self,
        model_path: str,
        *,
        n_threads: int | None = None,
        stall_seconds: float = 300.0,
        repeat_penalty: float | None = None,
        limits: ReplyLimits | None = None,
    ) -> None:
        self.model_path = model_path
        self.n_threads = n_threads or default_threads()
        self.host = ModelHost(
            model_path,
            n_threads=self.n_threads,
            stall_seconds=stall_seconds,
            repeat_penalty=repeat_penalty,
            limits=limits,
        )

    @property
    def name(self) -> str:
        return self.host.name

    async def start(self) -> None:
        await self.host.start()

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        return self.host.generate(request)

    async def count_tokens(self, texts: list[str]) -> list[int]:
        """How many tokens each text is for this model's tokenizer (no special tokens added)."""
        return await self.host.count_tokens(texts)

    async def context_window(self) -> int:
        """The model's context size in tokens (from the GGUF metadata)."""
        await self.host.start()
        return self.host.n_ctx

    def problem(self) -> str | None:
        if self.host.state == "failed":
            return self.host.failure
        if self.host.state == "starting":
            return f"The model {self.host.name} is loading."
        return None

    async def aclose(self) -> None:
        await self.host.aclose()
