"""An event's snapshot is a copy equal to its object with every field, and later changes to the
object do not show in it."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from threadline.domain.content import text_content
from threadline.domain.entities import Message, MessageCreation, Run, RunStep, Thread
from threadline.domain.lifecycle import snapshot
from threadline.domain.run_states import RunStatus

SAMPLES: list[Any] = [
    Thread(id="thread_1", created_at=1, metadata={"k": "v"}),
    Run(
        id="run_1",
        thread_id="thread_1",
        assistant_id="asst_1",
        created_at=2,
        model="m",
        instructions="i",
        status=RunStatus.IN_PROGRESS,
        usage={"total_tokens": 3},
    ),
    Message(id="msg_1", thread_id="thread_1", created_at=3, role="user", content=text_content("hi")),
    RunStep(
        id="step_1",
        run_id="run_1",
        thread_id="thread_1",
        assistant_id="asst_1",
        created_at=4,
        type="message_creation",
        step_details=MessageCreation("msg_1"),
    ),
]


@pytest.mark.parametrize("obj", SAMPLES, ids=lambda o: type(o).__name__)
def test_a_snapshot_is_an_equal_copy_that_does_not_follow_its_object(obj: Any) -> None:
    copy = snapshot(obj)
    assert copy == dataclasses.replace(obj) and copy is not obj
    assert [getattr(copy, f.name) for f in dataclasses.fields(obj)] == [
        getattr(obj, f.name) for f in dataclasses.fields(obj)
    ]
    obj.created_at = 999
    assert copy.created_at != 999
