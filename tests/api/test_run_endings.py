"""How runs and messages end when the model is cut short, refuses, or fails; and metadata edits.

Each case here once went wrong: a tool call cut off by the token limit reached ``requires_action``
with broken JSON; a ``length`` or ``content_filter`` finish left a cut message ``completed``;
modifying without ``metadata`` wiped it; a step's ``last_error`` carried a run-only code; a
model's refusal was dropped; and the run loop's writes wound a renewed lease back to the claim's.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import openai
import pytest

from tests.conftest import database_url
from threadline.domain.clock import now
from threadline.domain.commands import NewAssistant, NewMessage, NewRun, NewThread
from threadline.domain.entities import RunStep, ToolCalls
from threadline.domain.files import FileService
from threadline.domain.lifecycle import end_run
from threadline.domain.ports.storage import Change
from threadline.domain.run_states import RunStatus
from threadline.domain.scope import Scope
from threadline.domain.service_set import ServiceSet
from threadline.events.bus import LocalBus
from threadline.ids import new_id
from threadline.store import Database, sql_stores
from threadline.store.blobs import LocalBlobStore
from threadline.store.database import migrate
from threadline.store.files import SqlFileStore
from threadline.testing import Reply, ScriptedModel, ToolCall

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def setup(client: openai.OpenAI, tools: list[dict[str, object]] | None = None) -> tuple[str, str]:
    assistant = client.beta.assistants.create(model="gpt-4o", tools=tools or [])  # type: ignore[arg-type]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "weather in Paris?"}])
    return assistant.id, thread.id


def test_tool_call_cut_off_by_max_completion_tokens_ends_incomplete(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    assistant_id, thread_id = setup(client, [WEATHER])
    # 400 argument fragments against a budget of 256: the call's JSON is cut in the middle.
    model.script(Reply(tool_calls=[ToolCall("get_weather", {"city": "P" * 1000})], chunks=400))
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=assistant_id, max_completion_tokens=256
    )
    assert run.status == "incomplete" and run.required_action is None
    assert run.incomplete_details is not None and run.incomplete_details.reason == "max_completion_tokens"
    assert run.usage is not None and run.usage.completion_tokens == 256
    (step,) = client.beta.threads.runs.steps.list(thread_id=thread_id, run_id=run.id).data
    (call,) = step.step_details.tool_calls  # type: ignore[union-attr]
    assert call.function.name == "get_weather" and call.function.output is None  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        json.loads(call.function.arguments)  # type: ignore[union-attr]


def test_tool_call_cut_off_by_the_models_own_limit_ends_incomplete(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    assistant_id, thread_id = setup(client, [WEATHER])
    model.script(Reply(tool_calls=[ToolCall("get_weather", '{"city": "Par')], finish_reason="length"))
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
    assert run.status == "incomplete" and run.required_action is None
    assert run.incomplete_details is not None and run.incomplete_details.reason == "max_completion_tokens"


def test_length_finish_without_a_budget_marks_the_message_incomplete(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    assistant_id, thread_id = setup(client)
    model.script(Reply(text="It is sunny and", finish_reason="length"))
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
    # None of the run's limits was reached, so the run completes (pollers that wait for "completed",
    # like the lesson's, still finish); the cut message says it is cut.
    assert run.status == "completed" and run.incomplete_details is None
    message = client.beta.threads.messages.list(thread_id=thread_id).data[0]
    assert message.status == "incomplete" and message.incomplete_at is not None
    assert message.completed_at is None
    assert message.incomplete_details is not None and message.incomplete_details.reason == "max_tokens"
    assert message.content[0].text.value == "It is sunny and"  # type: ignore[union-attr]


def test_content_filter_finish_marks_the_message_incomplete(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    assistant_id, thread_id = setup(client)
    model.script(Reply(text="Here is how", finish_reason="content_filter"))
    with client.beta.threads.runs.stream(thread_id=thread_id, assistant_id=assistant_id) as stream:
        stream.until_done()
    run = stream.get_final_run()
    assert run.status == "completed" and run.incomplete_details is None
    (message,) = stream.get_final_messages()
    assert message.status == "incomplete"
    assert message.incomplete_details is not None and message.incomplete_details.reason == "content_filter"
    stored = client.beta.threads.messages.retrieve(message_id=message.id, thread_id=thread_id)
    assert stored.status == "incomplete" and stored.content[0].text.value == "Here is how"  # type: ignore[union-attr]


def test_refusal_is_kept(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = setup(client)
    model.script(Reply(refusal="I can't help with that."))
    with client.beta.threads.runs.stream(thread_id=thread_id, assistant_id=assistant_id) as stream:
        stream.until_done()
    assert stream.get_final_run().status == "completed"
    (streamed,) = stream.get_final_messages()
    assert [p.model_dump() for p in streamed.content] == [
        {"type": "refusal", "refusal": "I can't help with that."}
    ]
    message = client.beta.threads.messages.list(thread_id=thread_id).data[0]
    assert message.status == "completed"
    assert [p.model_dump() for p in message.content] == [
        {"type": "refusal", "refusal": "I can't help with that."}
    ]


def test_text_then_refusal_keeps_both_parts(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = setup(client)
    model.script(Reply(text="Well.", refusal="I can't do that."))
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
    assert run.status == "completed"
    message = client.beta.threads.messages.list(thread_id=thread_id).data[0]
    assert [p.type for p in message.content] == ["text", "refusal"]
    assert message.content[1].refusal == "I can't do that."  # type: ignore[union-attr]


def test_modify_without_metadata_keeps_it(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = setup(client)
    message = client.beta.threads.messages.create(
        thread_id=thread_id, role="user", content="hi", metadata={"topic": "weather"}
    )
    assert client.beta.threads.messages.update(message_id=message.id, thread_id=thread_id).metadata == {
        "topic": "weather"
    }
    stored = client.beta.threads.messages.retrieve(message_id=message.id, thread_id=thread_id)
    assert stored.metadata == {"topic": "weather"}
    changed = client.beta.threads.messages.update(
        message_id=message.id, thread_id=thread_id, metadata={"a": "b"}
    )
    assert changed.metadata == {"a": "b"}

    model.script("ok")
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=assistant_id, metadata={"user": "42"}
    )
    assert client.beta.threads.runs.update(run_id=run.id, thread_id=thread_id).metadata == {"user": "42"}
    assert client.beta.threads.runs.retrieve(run_id=run.id, thread_id=thread_id).metadata == {"user": "42"}
    assert client.beta.threads.runs.update(run_id=run.id, thread_id=thread_id, metadata={}).metadata == {}


class _AnyModel:
    def routes(self, model: str) -> bool:
        return True


def test_step_errors_use_step_codes_only(tmp_path: Path) -> None:
    """A run failing with ``invalid_prompt`` (a run-only code) shows ``server_error`` on its steps."""
    url = database_url(tmp_path)
    migrate(url)

    async def scenario() -> tuple[dict[str, str] | None, dict[str, str] | None, dict[str, str] | None]:
        db = Database(url)
        try:
            stores, bus = sql_stores(db), LocalBus()
            services = ServiceSet.of(Scope(stores, bus, _AnyModel(), _files(db, tmp_path)))
            assistant = await services.assistants.create_assistant(NewAssistant(model="m"))
            thread = await services.threads.create_thread(NewThread([NewMessage("user", "hi")]))
            errors = []
            for code in ("invalid_prompt", "rate_limit_exceeded"):
                run = await services.runs.create_run(thread.id, NewRun(assistant.id))
                (claimed,) = await stores.runs.claim_next("worker-1", time.time(), 30, 1)
                assert claimed.id == run.id and claimed.status is RunStatus.IN_PROGRESS
                step = RunStep(
                    new_id("step"), run.id, thread.id, assistant.id, now(), "tool_calls", ToolCalls([])
                )
                change = Change(claimed, frozenset({RunStatus.IN_PROGRESS}), "worker-1", new_steps=[step])
                assert await stores.runs.transition(change)
                error = {"code": code, "message": "The model could not take this prompt."}
                ended = await end_run(
                    stores, bus, claimed, RunStatus.FAILED, owner="worker-1", last_error=error
                )
                assert ended is not None
                (failed,) = await stores.runs.steps(run.id)
                assert failed.status == "failed"
                errors.append(failed.last_error)
            final = await stores.runs.get_by_id(run.id)
            assert final is not None
            return errors[0], errors[1], final.last_error
        finally:
            await db.dispose()

    invalid, limited, run_error = asyncio.run(scenario())
    assert invalid == {"code": "server_error", "message": "The model could not take this prompt."}
    assert limited is not None and limited["code"] == "rate_limit_exceeded"
    assert run_error is not None and run_error["code"] == "rate_limit_exceeded"


def _files(db: Database, directory: Path) -> FileService:
    return FileService(SqlFileStore(db), LocalBlobStore(directory / "files"), max_bytes=1 << 20)


def test_writes_while_driving_a_run_keep_its_renewed_lease(tmp_path: Path) -> None:
    url = database_url(tmp_path)
    migrate(url)

    async def scenario() -> tuple[float | None, float]:
        db = Database(url)
        try:
            stores, bus = sql_stores(db), LocalBus()
            services = ServiceSet.of(Scope(stores, bus, _AnyModel(), _files(db, tmp_path)))
            assistant = await services.assistants.create_assistant(NewAssistant(model="m"))
            thread = await services.threads.create_thread(NewThread([NewMessage("user", "hi")]))
            run = await services.runs.create_run(thread.id, NewRun(assistant.id))
            (claimed,) = await stores.runs.claim_next("worker-1", time.time(), 30, 1)
            renewed = time.time() + 300
            assert await stores.runs.renew_leases("worker-1", [run.id], renewed) == [run.id]
            # A step written long after the claim, from the loop's copy of the run (the claim's lease).
            step = RunStep(
                new_id("step"), run.id, thread.id, assistant.id, now(), "tool_calls", ToolCalls([])
            )
            change = Change(claimed, frozenset({RunStatus.IN_PROGRESS}), "worker-1", new_steps=[step])
            assert await stores.runs.transition(change)
            current = await stores.runs.get_by_id(run.id)
            assert current is not None and current.worker_id == "worker-1"
            return current.lease_expires_at, renewed
        finally:
            await db.dispose()

    lease, renewed = asyncio.run(scenario())
    assert lease is not None and abs(lease - renewed) < 1
