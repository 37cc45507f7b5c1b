"""The run lifecycle as data: statuses and the table of allowed transitions.

Every status change goes through ``stores.runs.transition(Change)``, which is one conditional
``UPDATE runs ... WHERE status IN (<allowed sources>)``; when no row changes, another actor won the
race and the caller gets a clean error instead of overwriting its result.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    REQUIRES_ACTION = "requires_action"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    FAILED = "failed"
    COMPLETED = "completed"
    INCOMPLETE = "incomplete"
    EXPIRED = "expired"


Q, P, R, C = RunStatus.QUEUED, RunStatus.IN_PROGRESS, RunStatus.REQUIRES_ACTION, RunStatus.CANCELLING

TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    # A worker claims it; a client cancels it; the sweeper expires it.
    Q: frozenset({P, C, RunStatus.CANCELLED, RunStatus.EXPIRED}),
    # The worker's own writes are in_progress -> in_progress (guarded by its lease).
    P: frozenset(
        {P, R, C, RunStatus.COMPLETED, RunStatus.INCOMPLETE, RunStatus.FAILED, RunStatus.EXPIRED, Q}
    ),
    R: frozenset({Q, C, RunStatus.CANCELLED, RunStatus.EXPIRED}),
    # Once cancelling, no answer lands: the worker's completion is guarded on in_progress.
    C: frozenset({RunStatus.CANCELLED, RunStatus.EXPIRED}),
}

ACTIVE: frozenset[RunStatus] = frozenset(TRANSITIONS)
"""Statuses that hold the thread's lock."""

TERMINAL: frozenset[RunStatus] = frozenset(RunStatus) - ACTIVE

WAITING: frozenset[RunStatus] = TERMINAL | {R}
"""Statuses at which the SDK's pollers stop."""


def can_move(src: RunStatus, target: RunStatus) -> bool:
    return target in TRANSITIONS.get(src, frozenset())


def cause_of(status: RunStatus, expect: frozenset[RunStatus], detail: str | None) -> str:
    """Why a run moved to ``status``, in words, for its history. ``expect`` holds the statuses it could
    have left; ``detail`` is the run's error or incomplete reason, when it has one."""
    if status is RunStatus.QUEUED:
        if expect == frozenset({RunStatus.REQUIRES_ACTION}):
            return "tool outputs submitted"
        return "handed back by its worker" if RunStatus.IN_PROGRESS in expect else "created"
    if status is RunStatus.IN_PROGRESS:
        return "claimed by a worker"
    if status is RunStatus.REQUIRES_ACTION:
        return f"waiting for tool outputs: {detail}" if detail else "waiting for tool outputs"
    if status is RunStatus.CANCELLING:
        return "cancel requested"
    if status is RunStatus.CANCELLED:
        return "cancelled"
    if status is RunStatus.EXPIRED:
        return "expires_at passed"
    if status is RunStatus.COMPLETED:
        return "answered"
    return f"{status.value}: {detail}" if detail else status.value
