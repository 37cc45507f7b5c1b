"""The embedded model provider: a GGUF model run by llama.cpp in a supervised host process.

This is what lets a user with no API key and no model server get real answers. The model runs in a
child process (:mod:`model_host` supervises it, :mod:`host_process` is the child, :mod:`decoding` its
decode loop), so a crash in native code fails the calls in flight with a clear error instead of
taking the server down. Function calls and ``response_format`` JSON are decoded under grammars
(:mod:`grammars`), with the tool-choice prompting of :mod:`local_tools`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from threadline.domain.ports.models import ModelEvent, ModelRequest, ReplyLimits
from threadline.providers.model_host import ModelHost

__all__ = ["LlamaCppProvider", "default_threads"]


def default_threads() -> int:
    """All cores but one. llama.cpp's threads wait for each other at every step of every token: when
    the server (or anything else) takes one of their cores, the token waits for the descheduled
    thread. On 2 busy cores 2 threads decode at half the speed of 1; docs/benchmarks.md has the
    figures."""
    return max(1, (os.cpu_count() or 1) - 1)


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
