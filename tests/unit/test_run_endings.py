"""Every way a run ends, reached through ``RunLoop.execute`` with the scripted model in process.

completed; requires_action, then tool outputs, then completed; failed (the model's error, a retry
that gives up, a reply over the server's caps, no route, a forced tool that is missing); incomplete
(``max_completion_tokens``, a call cut off, ``max_prompt_tokens``) and completed with a cut message
(the model's own limit, a content filter); too large for the context window; cancelled (queued,
waiting, mid-answer, and a cancel that lands before the loop's last write); expired (by the
sweeper, before and while a worker drives it); lost to another worker, and a dead worker's half
turn redone. Each test checks what a loop that got the ending wrong would show.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.unit.conftest import Domain, wait_until
from threadline.config import Settings
from threadline.domain.commands import FunctionOutput, NewRun
from threadline.domain.entities import FunctionCall, MessageCreation, ToolCalls
from threadline.domain.events import MessageDelta
from threadline.domain.ports.models import ReplyLimits
from threadline.domain.run_states import RunStatus
from threadline.testing import Reply, ScriptedRouter, ToolCall
from threadline.workers.worker import Worker

pytestmark = pytest.mark.anyio

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


async def test_an_answer_completes_the_run(domain: Domain) -> None:
    run = await domain.start("weather in Paris?")
    events = domain.follow(run)
    domain.model.script(Reply(text="It is sunny in Paris."))
    done = await domain.drive(run)

    assert done.status is RunStatus.COMPLETED and done.completed_at is not None
    assert done.worker_id is None and done.lease_expires_at is None and done.expires_at is None
    (message,) = await domain.messages(run)
    assert message.text == "It is sunny in Paris." and message.status == "completed"
    assert message.run_id == run.id and message.completed_at is not None
    (step,) = await domain.steps(run)
    assert step.type == "message_creation" and step.status == "completed"
    assert isinstance(step.step_details, MessageCreation) and step.step_details.message_id == message.id
    # The fake counts 1 + 3 words for the prompt and 5 streamed pieces for the answer.
    assert done.usage == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}
    assert step.usage == done.usage
    deltas = [e.text for e in events.pull() if isinstance(e, MessageDelta)]
    assert "".join(deltas) == "It is sunny in Paris." and len(deltas) == 5
    names = events.names()
    assert names[-1] == "thread.run.completed"
    assert names.index("thread.message.completed") < names.index("thread.run.completed")
    # The thread's lock went with the run: another run may start.
    await domain.services.runs.create_run(run.thread_id, NewRun(run.assistant_id))


async def test_function_call_waits_for_outputs_then_completes(domain: Domain) -> None:
    run = await domain.start(tools=[WEATHER])
    domain.model.script(Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"})]), "Sunny, 18C.")
    waiting = await domain.drive(run)

    assert waiting.status is RunStatus.REQUIRES_ACTION
    assert waiting.worker_id is None and waiting.lease_expires_at is None
    assert waiting.required_action is not None
    (call,) = waiting.required_action.calls
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert await domain.messages(run) == []
    (step,) = await domain.steps(run)
    assert step.type == "tool_calls" and step.status == "in_progress"

    await domain.services.runs.submit_tool_outputs(
        run.thread_id, run.id, [FunctionOutput(call.id, "18C, sunny")]
    )
    done = await domain.drive(run)
    assert done.status is RunStatus.COMPLETED and done.required_action is None
    # The second model call sees the call and its output, paired, after the user's message.
    first, second = domain.model.requests
    assert second.messages[:-2] == first.messages
    assert second.messages[-2]["tool_calls"][0]["id"] == call.id
    assert second.messages[-1] == {"role": "tool", "tool_call_id": call.id, "content": "18C, sunny"}
    (answer,) = await domain.messages(run)
    assert answer.text == "Sunny, 18C." and answer.status == "completed"
    tools, created = await domain.steps(run)
    assert tools.status == "completed" and isinstance(tools.step_details, ToolCalls)
    (recorded,) = tools.step_details.calls
    assert isinstance(recorded, FunctionCall) and recorded.output == "18C, sunny"
    assert created.type == "message_creation" and created.status == "completed"
    # Usage adds up both turns: (4 + 8) prompt, (3 argument pieces + 2 words) completion.
    assert done.usage == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


@pytest.mark.parametrize(
    ("status", "code"), [(500, "server_error"), (429, "rate_limit_exceeded"), (400, "server_error")]
)
async def test_model_error_fails_the_run(domain: Domain, status: int, code: str) -> None:
    run = await domain.start()
    domain.model.script(Reply(status=status, error_message="upstream is unhappy"))
    failed = await domain.drive(run, retries=0)
    assert failed.status is RunStatus.FAILED and failed.failed_at is not None
    assert failed.last_error is not None and failed.last_error["code"] == code
    assert (
        str(status) in failed.last_error["message"] and "upstream is unhappy" in failed.last_error["message"]
    )
    assert await domain.messages(run) == []
    assert failed.worker_id is None
    await domain.services.runs.create_run(run.thread_id, NewRun(run.assistant_id))


async def test_retryable_errors_are_retried_and_others_are_not(domain: Domain) -> None:
    run = await domain.start()
    domain.model.script(Reply(status=503), Reply(status=429), "Third time lucky.")
    done = await domain.drive(run, retries=2)
    assert done.status is RunStatus.COMPLETED and len(domain.model.requests) == 3
    (message,) = await domain.messages(run)
    assert message.text == "Third time lucky."

    domain.model.reset()
    again = await domain.services.runs.create_run(run.thread_id, NewRun(run.assistant_id))
    domain.model.script(Reply(status=400), "never asked")
    failed = await domain.drive(again, retries=2)
    assert failed.status is RunStatus.FAILED and len(domain.model.requests) == 1
    assert domain.model.pending == 1


async def test_reply_over_the_servers_cap_fails_and_keeps_what_was_said(domain: Domain) -> None:
    run = await domain.start()
    domain.model.limits = ReplyLimits(max_bytes=12)
    domain.model.script(Reply(text="one two three four five"))
    failed = await domain.drive(run)
    assert failed.status is RunStatus.FAILED
    assert failed.last_error is not None and "MAX_REPLY_BYTES" in failed.last_error["message"]
    (message,) = await domain.messages(run)
    assert message.status == "incomplete" and message.text == "one two "
    assert message.incomplete_details == {"reason": "run_failed"}
    (step,) = await domain.steps(run)
    assert step.status == "failed" and step.last_error is not None
    assert step.last_error["code"] == "server_error"


async def test_no_route_for_the_model_fails_before_any_call(domain: Domain) -> None:
    run = await domain.start()
    nowhere = ScriptedRouter(domain.model, models=["another-model"])
    failed = await domain.drive(run, router=nowhere)
    assert failed.status is RunStatus.FAILED and failed.last_error is not None
    assert "No route" in failed.last_error["message"]
    assert domain.model.requests == []


async def test_forcing_a_tool_the_server_lacks_fails(domain: Domain) -> None:
    run = await domain.start(tools=[{"type": "code_interpreter"}], tool_choice={"type": "code_interpreter"})
    failed = await domain.drive(run)
    assert failed.status is RunStatus.FAILED and failed.last_error is not None
    assert "no implementation" in failed.last_error["message"]
    assert domain.model.requests == []


async def test_max_completion_tokens_ends_incomplete_with_the_text_so_far(domain: Domain) -> None:
    run = await domain.start(max_completion_tokens=3)
    domain.model.script(Reply(text="one two three four five six"))
    ended = await domain.drive(run)
    assert ended.status is RunStatus.INCOMPLETE
    assert ended.incomplete_details == {"reason": "max_completion_tokens"}
    assert ended.completed_at is None and ended.usage is not None
    assert ended.usage["completion_tokens"] == 3
    assert domain.model.requests[0].max_tokens == 3
    (message,) = await domain.messages(run)
    assert message.status == "incomplete" and message.text == "one two three "
    assert message.incomplete_details == {"reason": "max_tokens"} and message.completed_at is None


async def test_a_call_cut_off_never_reaches_the_client(domain: Domain) -> None:
    run = await domain.start(tools=[WEATHER], max_completion_tokens=4)
    domain.model.script(Reply(tool_calls=[ToolCall("get_weather", {"city": "P" * 100})], chunks=20))
    ended = await domain.drive(run)
    assert ended.status is RunStatus.INCOMPLETE and ended.required_action is None
    assert ended.incomplete_details == {"reason": "max_completion_tokens"}
    (step,) = await domain.steps(run)
    assert isinstance(step.step_details, ToolCalls)
    (call,) = step.step_details.calls
    assert isinstance(call, FunctionCall) and call.output is None
    with pytest.raises(ValueError):
        json.loads(call.arguments)


async def test_max_prompt_tokens_too_small_ends_incomplete_without_a_call(domain: Domain) -> None:
    run = await domain.start(max_prompt_tokens=2)
    ended = await domain.drive(run)
    assert ended.status is RunStatus.INCOMPLETE
    assert ended.incomplete_details == {"reason": "max_prompt_tokens"}
    assert domain.model.requests == []


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_tokens"), ("content_filter", "content_filter")]
)
async def test_a_cut_answer_completes_the_run_but_not_the_message(
    domain: Domain, finish: str, reason: str
) -> None:
    run = await domain.start()
    domain.model.script(Reply(text="It is sunny and", finish_reason=finish))
    done = await domain.drive(run)
    assert done.status is RunStatus.COMPLETED and done.incomplete_details is None
    (message,) = await domain.messages(run)
    assert message.status == "incomplete" and message.incomplete_details == {"reason": reason}
    assert message.text == "It is sunny and" and message.completed_at is None


async def test_newest_message_larger_than_the_window_fails_as_invalid_prompt(domain: Domain) -> None:
    domain.router.context_window = 40
    run = await domain.start(" ".join(["word"] * 40))
    failed = await domain.drive(run)
    assert failed.status is RunStatus.FAILED and failed.last_error is not None
    assert failed.last_error["code"] == "invalid_prompt"
    assert domain.model.requests == []


async def test_cancelling_a_queued_run_ends_it_at_once(domain: Domain) -> None:
    run = await domain.start()
    cancelling = await domain.services.runs.cancel_run(run.thread_id, run.id)
    assert cancelling.status is RunStatus.CANCELLING
    ended = await domain.reload(run)
    assert ended.status is RunStatus.CANCELLED and ended.cancelled_at is not None
    assert await domain.stores.runs.claim_next("worker-1", 0, 30, 1) == []


async def test_cancelling_a_waiting_run_closes_its_calls(domain: Domain) -> None:
    run = await domain.start(tools=[WEATHER])
    domain.model.script(Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"})]))
    await domain.drive(run)
    await domain.services.runs.cancel_run(run.thread_id, run.id)
    ended = await domain.reload(run)
    assert ended.status is RunStatus.CANCELLED and ended.required_action is None
    (step,) = await domain.steps(run)
    assert step.status == "cancelled" and step.cancelled_at is not None


async def test_cancel_mid_answer_stops_the_model_and_keeps_the_partial_text(domain: Domain) -> None:
    run = await domain.start()
    events = domain.follow(run)
    # Paced: unpaced, a busy machine's model reaches the reply token cap before the cancel lands.
    domain.model.script(Reply(text="and so on ", endless=True, delay=0.005))
    claimed = await domain.claim()
    task = asyncio.create_task(domain.loop().execute(claimed))
    await wait_until(lambda: len([e for e in events.pull() if isinstance(e, MessageDelta)]) >= 6)
    await domain.services.runs.cancel_run(run.thread_id, run.id)
    task.cancel()  # what the worker does when it sees the run cancelling
    await asyncio.gather(task, return_exceptions=True)

    ended = await domain.reload(run)
    assert ended.status is RunStatus.CANCELLED and ended.cancelled_at is not None
    assert domain.model.stopped == 1
    (message,) = await domain.messages(run)
    assert message.status == "incomplete" and message.incomplete_details == {"reason": "run_cancelled"}
    assert message.text.startswith("and so on and so on ")
    (step,) = await domain.steps(run)
    assert step.status == "cancelled"
    assert events.names()[-1] == "thread.run.cancelled"


async def test_cancel_landing_before_the_loops_write_wins(domain: Domain) -> None:
    run = await domain.start()
    domain.model.script("An answer nobody will see.")
    claimed = await domain.claim()
    await domain.services.runs.cancel_run(run.thread_id, run.id)
    await domain.loop().execute(claimed)  # not interrupted: its own guarded write must lose
    ended = await domain.reload(run)
    assert ended.status is RunStatus.CANCELLED
    assert [m for m in await domain.messages(run) if m.status == "completed"] == []


def _worker(domain: Domain) -> Worker:
    return Worker(Settings(), domain.stores, domain.bus, domain.router)


async def test_sweeper_expires_a_queued_run(domain: Domain) -> None:
    domain.expire_runs_after(-10)
    run = await domain.start()
    assert await _worker(domain).sweep() == 1
    ended = await domain.reload(run)
    assert ended.status is RunStatus.EXPIRED and ended.expires_at is None
    assert await domain.stores.runs.claim_next("worker-1", 0, 30, 1) == []


async def test_expired_while_driven_keeps_the_expiry(domain: Domain) -> None:
    domain.expire_runs_after(-10)
    run = await domain.start()
    events = domain.follow(run)
    domain.model.script(Reply(text="and so on ", endless=True, delay=0.005))
    claimed = await domain.claim()
    task = asyncio.create_task(domain.loop().execute(claimed))
    await wait_until(lambda: any(isinstance(e, MessageDelta) for e in events.pull()))
    assert await _worker(domain).sweep() == 1
    task.cancel()  # the worker stops driving a run that expired under it
    await asyncio.gather(task, return_exceptions=True)

    ended = await domain.reload(run)
    assert ended.status is RunStatus.EXPIRED
    (message,) = await domain.messages(run)
    assert message.status == "incomplete" and message.incomplete_details == {"reason": "run_expired"}
    (step,) = await domain.steps(run)
    assert step.status == "expired" and step.expired_at is not None


async def test_expired_before_the_loops_write_is_not_overwritten(domain: Domain) -> None:
    domain.expire_runs_after(-10)
    run = await domain.start()
    claimed = await domain.claim()
    assert await _worker(domain).sweep() == 1
    domain.model.script("Too late.")
    await domain.loop().execute(claimed)
    assert (await domain.reload(run)).status is RunStatus.EXPIRED
    assert await domain.messages(run) == []


async def test_a_worker_whose_run_was_taken_over_writes_nothing(domain: Domain) -> None:
    run = await domain.start()
    stale = await domain.claim("worker-1", lease=-1)  # its lease has already lapsed
    taken = await domain.claim("worker-2")
    assert taken.id == run.id and taken.claims == 2
    domain.model.script("from the first worker", "from the second worker")
    await domain.loop("worker-1").execute(stale)
    current = await domain.reload(run)
    assert current.status is RunStatus.IN_PROGRESS and current.worker_id == "worker-2"
    assert await domain.messages(run) == []

    await domain.loop("worker-2").execute(taken)
    done = await domain.reload(run)
    assert done.status is RunStatus.COMPLETED
    (message,) = await domain.messages(run)
    assert message.text == "from the second worker"


async def test_a_dead_workers_half_turn_is_redone_once(domain: Domain) -> None:
    run = await domain.start()
    events = domain.follow(run)
    domain.model.script(Reply(text="half ", endless=True, delay=0.005), "The whole answer.")
    first = await domain.claim("worker-1", lease=-1)
    task = asyncio.create_task(domain.loop("worker-1").execute(first))
    await wait_until(lambda: any(isinstance(e, MessageDelta) for e in events.pull()))
    task.cancel()  # the worker dies mid-answer; nobody asked for a cancel
    await asyncio.gather(task, return_exceptions=True)
    (half,) = await domain.messages(run)
    assert half.status == "in_progress"

    second = await domain.claim("worker-2")
    await domain.loop("worker-2").execute(second)
    done = await domain.reload(run)
    assert done.status is RunStatus.COMPLETED
    (message,) = await domain.messages(run)
    assert message.id == half.id and message.text == "The whole answer." and message.status == "completed"
    (step,) = await domain.steps(run)
    assert step.status == "completed"
