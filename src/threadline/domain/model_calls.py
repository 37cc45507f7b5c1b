"""Timing the engine's model calls for whoever watches the server (the metrics).

The domain reports each call as a plain :class:`ModelCall` through an optional callback; it knows
nothing of Prometheus. A call is timed from the request to the end of its stream, and to the first
event the model sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from threadline.domain.ports.models import ProviderError

log = logging.getLogger(__name__)

Outcome = Literal["ok", "error", "stopped"]


@dataclass(frozen=True, slots=True)
class ModelCall:
    model: str
    """The name the upstream was asked for (the route's model)."""
    purpose: Literal["answer", "summary", "chat"]
    """A run's turn, summarising older messages to fit the context window, or a chat completion."""
    outcome: Outcome
    """``ok``; ``error`` when the model failed (a ``ProviderError``); ``stopped`` when the call was
    given up for another reason (the run cancelled, expired or taken over meanwhile)."""
    seconds: float
    first_event_seconds: float | None
    """Until the model's first event (text, tool call, usage or finish); ``None`` if none came."""


ModelCallObserver = Callable[[ModelCall], None]


class Timed:
    """``with Timed(observe, model, purpose) as timing:`` around a model call's stream, calling
    ``timing.event()`` for each event; the call is reported when the block ends, however it ends."""

    def __init__(
        self, observe: ModelCallObserver | None, model: str, purpose: Literal["answer", "summary", "chat"]
    ) -> None:
        self.observe = observe
        self.model = model
        self.purpose = purpose
        self.started = 0.0
        self.first: float | None = None

    def __enter__(self) -> Timed:
        self.started = time.monotonic()
        return self

    def event(self) -> None:
        if self.first is None:
            self.first = time.monotonic()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.observe is None:
            return
        outcome: Outcome = "ok" if exc is None else "error" if isinstance(exc, ProviderError) else "stopped"
        first = None if self.first is None else self.first - self.started
        call = ModelCall(self.model, self.purpose, outcome, time.monotonic() - self.started, first)
        try:
            self.observe(call)
        except Exception:
            log.exception("reporting a model call failed")
