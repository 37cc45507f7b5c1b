"""The in-process bus: a subscription that wants only some events is never handed (or woken by)
the others; one that wants everything gets everything, in order."""

from __future__ import annotations

import pytest

from threadline.domain.entities import Run
from threadline.domain.events import MessageDelta, ObjectEvent, is_run_event
from threadline.events.bus import LocalBus

pytestmark = pytest.mark.anyio


def _run() -> Run:
    return Run(
        id="run_1", thread_id="thread_1", assistant_id="asst_1", created_at=1, model="m", instructions=""
    )


async def test_a_subscription_gets_only_the_events_it_wants() -> None:
    bus = LocalBus()
    delta = MessageDelta("msg_1", 0, "hi")
    status = ObjectEvent("thread.run.completed", _run())
    with bus.subscribe("run_1", is_run_event) as runs_only, bus.subscribe("run_1") as everything:
        for event in (delta, delta, status):
            await bus.publish("run_1", event)
        assert runs_only.queue.qsize() == 1
        assert await runs_only.get(timeout=1) is status
        assert await runs_only.get(timeout=0.01) is None
        assert [await everything.get(timeout=1) for _ in range(3)] == [delta, delta, status]
    assert bus.subscriber_count("run_1") == 0
