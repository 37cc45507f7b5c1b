"""What the domain needs from the outside world, as protocols: the store and the event bus.

``threadline.store.Store`` and the buses in ``threadline.events`` implement these; the domain only
sees the protocols, so it never imports SQLAlchemy or a transport.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

from threadline.domain.entities import Assistant, ListQuery, Message, Page, Run, RunStep, Summary, Thread
from threadline.domain.events import Event
from threadline.domain.run_states import RunStatus


@dataclass(slots=True)
class Change:
    """One atomic write around a run: a guarded status move and everything written beside it.

    The store applies it in one transaction, or not at all when the run is no longer in one of the
    ``expect`` statuses (or, with ``owner``, no longer held by that worker).
    """

    run: Run
    expect: frozenset[RunStatus]
    owner: str | None = None
    new_steps: list[RunStep] = field(default_factory=list)
    steps: list[RunStep] = field(default_factory=list)
    new_messages: list[Message] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    discard_steps: list[str] = field(default_factory=list)
    """Step ids to delete: a turn a previous holder of the run left half-written."""
    discard_messages: list[str] = field(default_factory=list)
    release_thread: bool = False


class ThreadLockedError(Exception):
    """The thread already has an active run (``run_id``)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id


class Store(Protocol):
    # assistants
    async def insert_assistant(self, assistant: Assistant) -> None: ...
    async def upsert_assistant(self, assistant: Assistant) -> None: ...
    async def get_assistant(self, assistant_id: str) -> Assistant | None: ...
    async def list_assistants(self, query: ListQuery) -> Page[Assistant]: ...
    async def update_assistant(self, assistant: Assistant) -> None: ...
    async def delete_assistant(self, assistant_id: str) -> bool: ...

    # threads and messages
    async def insert_thread(
        self, thread: Thread, messages: Sequence[Message], run: Run | None = None
    ) -> None:
        """Save a new thread with its messages and, for create-and-run, its first run (which holds its lock)."""

    async def get_thread(self, thread_id: str) -> Thread | None: ...
    async def list_threads(self, query: ListQuery, metadata: dict[str, str]) -> Page[Thread]: ...
    async def update_thread(self, thread: Thread) -> None: ...
    async def delete_thread(self, thread_id: str) -> bool: ...
    async def insert_message(self, message: Message) -> None:
        """Add a message unless the thread is locked (raises :class:`ThreadLockedError`)."""

    async def get_message(self, thread_id: str, message_id: str) -> Message | None: ...
    async def list_messages(self, thread_id: str, query: ListQuery, run_id: str | None) -> Page[Message]: ...
    async def newest_messages(
        self, thread_id: str, limit: int, *, before: str | None = None, after: str | None = None
    ) -> list[Message]:
        """Up to ``limit`` messages, newest first, older than ``before`` and newer than ``after``."""

    async def get_summary(self, thread_id: str) -> Summary | None: ...
    async def save_summary(self, summary: Summary) -> None: ...

    async def update_message_metadata(self, message: Message) -> None: ...
    async def delete_message(self, thread_id: str, message_id: str) -> bool: ...

    # runs and steps
    async def insert_run(self, run: Run, messages: Sequence[Message]) -> None:
        """Lock the thread for ``run`` and save it with the messages it adds, or raise ThreadLockedError."""

    async def get_run(self, thread_id: str, run_id: str) -> Run | None: ...
    async def get_run_by_id(self, run_id: str) -> Run | None: ...
    async def list_runs(self, thread_id: str, query: ListQuery) -> Page[Run]: ...
    async def update_run_metadata(self, run: Run) -> None: ...
    async def commit(self, change: Change) -> bool: ...
    async def claim(self, worker_id: str, now: float, lease_seconds: float, limit: int) -> list[Run]:
        """Atomically take up to ``limit`` queued runs (or runs whose holder's lease lapsed)."""

    async def renew_leases(self, worker_id: str, run_ids: Sequence[str], until: float) -> list[str]:
        """Extend this worker's leases; returns the ids it still holds in ``in_progress``."""

    async def expired_runs(self, now: int, limit: int) -> list[Run]: ...
    async def stalled_cancellations(self, now: float, limit: int) -> list[Run]:
        """Runs left in ``cancelling`` by a process that died before finishing the cancel."""

    async def get_step_by_id(self, step_id: str) -> RunStep | None: ...
    def exclusive(self, name: str) -> AbstractAsyncContextManager[bool]:
        """Hold a cluster-wide lock named ``name`` if no one else does; yields whether we got it."""

    async def ping(self) -> None: ...
    async def get_step(self, thread_id: str, run_id: str, step_id: str) -> RunStep | None: ...
    async def list_steps(self, thread_id: str, run_id: str, query: ListQuery) -> Page[RunStep]: ...
    async def run_steps(self, run_id: str) -> list[RunStep]:
        """All steps of a run, oldest first."""

    async def messages_by_id(self, message_ids: Sequence[str]) -> list[Message]: ...


class Subscription(Protocol):
    async def get(self, timeout: float | None = None) -> Event | None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Subscription: ...
    def __exit__(self, *exc: object) -> None: ...


class Bus(Protocol):
    """Carries run events from whoever executes a run to whoever follows it, and wakes workers."""

    async def publish(self, topic: str, event: Event) -> None: ...
    def subscribe(self, topic: str) -> Subscription: ...
    async def notify_work(self) -> None: ...
    async def wait_for_work(self, timeout: float) -> None: ...
