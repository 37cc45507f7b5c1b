"""A misbehaving model server cannot hold a run, fill the server's memory, or pass for an answer.

A real Threadline (SQLite or PostgreSQL) in front of the scripted model server, driven by the official
SDK. The scripted model trickles comments, streams for ever, sends one huge delta, answers HTML or
broken JSON with a 200, or a stream with nothing in it. Each time the run (or response) ends
``failed`` within the small deadline the test sets, with a ``last_error`` that says what happened,
and the server stopped reading where its caps say.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import database_url, server_settings
from tests.integration.test_embedded import needs_embedded
from tests.support import ThreadlineServer
from threadline.config import Settings
from threadline.testing import Reply, ScriptedModel

DEADLINE = 2.0
MAX_BYTES = 64 * 1024
MAX_TOKENS = 3000
SLACK = 8.0
"""Seconds a loaded machine may add to the deadline before a run is seen failed."""


@pytest.fixture(scope="module")
def bounded(model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadlineServer]:
    settings = server_settings(model, tmp_path_factory).replace(
        model_call_seconds=DEADLINE,
        model_max_reply_bytes=MAX_BYTES,
        model_max_reply_tokens=MAX_TOKENS,
        upstream_api_key="sk-upstream-secret",
    )
    server = ThreadlineServer(settings)
    yield server
    server.stop()


@pytest.fixture
def client(bounded: ThreadlineServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=bounded.url, api_key="test-key", max_retries=0, timeout=60) as sdk:
        yield sdk


def run_with(client: openai.OpenAI, **run: object) -> tuple[openai.types.beta.threads.Run, float]:
    """Create a run and poll it to its end: the run and the seconds it took."""
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    started = time.monotonic()
    ended = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        poll_interval_ms=50,
        **run,  # type: ignore[arg-type]
    )
    return ended, time.monotonic() - started


def answer_text(client: openai.OpenAI, run: openai.types.beta.threads.Run) -> str:
    messages = client.beta.threads.messages.list(thread_id=run.thread_id, run_id=run.id).data
    return "".join(part.text.value for m in messages for part in m.content if part.type == "text")


def failed_with(run: openai.types.beta.threads.Run, *phrases: str) -> str:
    assert run.status == "failed", (run.status, run.last_error)
    assert run.last_error is not None and run.last_error.code == "server_error"
    message = run.last_error.message
    for phrase in phrases:
        assert phrase in message, message
    assert "sk-upstream-secret" not in message
    return message


# --- time ------------------------------------------------------------------------------------------


def test_a_trickling_model_fails_the_run_at_the_deadline(client: openai.OpenAI, model: ScriptedModel) -> None:
    # An SSE comment every 0.2 s: never silent long enough for the (600 s) idle timeout.
    model.script(Reply(text="never", trickle=0.2))
    run, seconds = run_with(client)
    failed_with(run, "THREADLINE_MODEL_CALL_SECONDS (2 s)")
    assert DEADLINE <= seconds < DEADLINE + SLACK
    model.wait_for_disconnect()  # the upstream connection was closed, not left streaming
    assert len(model.requests) == 1  # a call that took the whole deadline is not tried again


def test_a_model_that_never_sends_its_headers_fails_the_run_at_the_deadline(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(Reply(text="late", first_delay=60))
    run, seconds = run_with(client)
    failed_with(run, "THREADLINE_MODEL_CALL_SECONDS (2 s)")
    assert DEADLINE <= seconds < DEADLINE + SLACK
    model.wait_for_disconnect()


def test_an_endless_slow_stream_keeps_what_came_and_fails_at_the_deadline(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(Reply(text="more ", endless=True, delay=0.05))
    run, seconds = run_with(client)
    failed_with(run, "THREADLINE_MODEL_CALL_SECONDS")
    assert DEADLINE <= seconds < DEADLINE + SLACK
    text = answer_text(client, run)
    assert text.startswith("more more ") and len(text) < MAX_BYTES
    model.wait_for_disconnect()


def test_a_non_background_response_ends_failed_instead_of_hanging(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(Reply(text="never", trickle=0.2))
    started = time.monotonic()
    response = client.responses.create(model="gpt-4o", input="hi")
    seconds = time.monotonic() - started
    assert response.status == "failed" and response.error is not None
    assert response.error.code == "server_error"
    assert "THREADLINE_MODEL_CALL_SECONDS" in response.error.message
    assert DEADLINE <= seconds < DEADLINE + SLACK


def test_a_streamed_response_ends_with_response_failed(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="again ", endless=True, delay=0.05))
    started = time.monotonic()
    events = list(client.responses.create(model="gpt-4o", input="hi", stream=True))
    seconds = time.monotonic() - started
    assert "response.output_text.delta" in [e.type for e in events]
    last = events[-1]
    assert last.type == "response.failed" and last.response.error is not None
    assert "THREADLINE_MODEL_CALL_SECONDS" in last.response.error.message
    assert DEADLINE <= seconds < DEADLINE + SLACK
    stored = client.responses.retrieve(last.response.id)
    assert stored.status == "failed" and stored.output_text.startswith("again again ")


# --- size ------------------------------------------------------------------------------------------


def test_an_endless_fast_stream_stops_at_the_byte_cap(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="x" * 1000, chunks=1, endless=True))
    run, seconds = run_with(client)
    failed_with(run, f"THREADLINE_MODEL_MAX_REPLY_BYTES ({MAX_BYTES} bytes)")
    assert seconds < DEADLINE  # the cap, not the deadline, ended it
    model.wait_for_disconnect()
    # What was kept is what fitted, and the server stopped reading there: the model could send only
    # what the connection's buffers hold (a few MB), not the hundreds of MB it would in two seconds.
    assert len(answer_text(client, run)) <= MAX_BYTES
    assert model.bytes_sent < 16 * 1024 * 1024


def test_an_endless_stream_of_small_pieces_stops_at_the_token_cap(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(Reply(text="a", endless=True))
    run, seconds = run_with(client)
    failed_with(run, f"THREADLINE_MODEL_MAX_REPLY_TOKENS ({MAX_TOKENS} tokens)")
    assert seconds < DEADLINE
    assert len(answer_text(client, run)) == MAX_TOKENS
    model.wait_for_disconnect()


def test_one_huge_delta_is_refused_without_being_stored(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="y" * (4 * MAX_BYTES), chunks=1))
    run, _ = run_with(client)
    failed_with(run, "a stream line longer than", "THREADLINE_MODEL_MAX_REPLY_BYTES")
    assert answer_text(client, run) == ""


def test_a_model_going_past_the_runs_max_tokens_is_cut_there(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(Reply(text="b", endless=True))
    run, seconds = run_with(client, max_completion_tokens=300)
    assert run.status == "incomplete", run.last_error
    assert run.incomplete_details is not None and run.incomplete_details.reason == "max_completion_tokens"
    asked = model.requests[0]["max_tokens"]
    assert 0 < asked <= 300 and answer_text(client, run) == "b" * asked
    assert seconds < DEADLINE
    model.wait_for_disconnect()


# --- form ------------------------------------------------------------------------------------------

HTML = b"<html><head><title>502 Bad Gateway</title></head><body>" + b"<p>nginx</p>" * 1000 + b"</body></html>"


@pytest.mark.parametrize(
    ("reply", "phrases"),
    [
        (
            Reply(body=HTML, content_type="text/html; charset=utf-8"),
            ["answered 200 (text/html; charset=utf-8)", "not an event stream", "<html><head><title>502"],
        ),
        (
            Reply(body=b'{"choices": [{"message": {"content": "cut', content_type="application/json"),
            ["answered 200 with JSON that is not a chat completion", '{"choices": [{"message"'],
        ),
        (
            Reply(body=b'{"id": "x", "choices": []}', content_type="application/json"),
            ["JSON that is not a chat completion"],
        ),
        (
            Reply(body=b": just a comment\n\n", content_type="text/event-stream"),
            ["without any data: line", ": just a comment"],
        ),
        (
            Reply(body=b"data: <b>not json</b>\n\n", content_type="text/event-stream"),
            ["a stream chunk that is not JSON", "<b>not json</b>"],
        ),
        (
            Reply(
                body=b'data: {"id":"c","choices":[]}\n\ndata: {"id":"c","choices":[]}\n\ndata: [DONE]\n\n',
                content_type="text/event-stream",
            ),
            ["no content, no tool calls and no finish_reason", '{"id":"c","choices":[]}'],
        ),
        (
            Reply(body=b"\x00\x1b[31m\xff\xfe binary", content_type="application/octet-stream"),
            ["(application/octet-stream)", "\\x00\\x1b[31m\\ufffd"],
        ),
    ],
    ids=["html", "broken-json", "no-choices", "no-data", "data-not-json", "empty-choices", "binary"],
)
def test_a_reply_that_is_not_the_protocol_fails_the_run_saying_what_came(
    client: openai.OpenAI, model: ScriptedModel, reply: Reply, phrases: list[str]
) -> None:
    model.script(reply)
    run, _ = run_with(client)
    message = failed_with(run, *phrases)
    assert len(message) < 500  # an excerpt, never the whole body
    assert answer_text(client, run) == ""
    assert len(model.requests) == 1


def test_a_whole_completion_answered_to_a_streamed_request_is_accepted(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    model.script(Reply(body=json.dumps(completion).encode(), content_type="application/json"))
    run, _ = run_with(client)
    assert run.status == "completed", run.last_error
    assert answer_text(client, run) == "whole"
    assert run.usage is not None and run.usage.completion_tokens == 1


def test_text_no_database_stores_is_replaced_in_what_the_model_sends(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    # Legal JSON escapes: a lone surrogate, NUL, and a real pair that must survive.
    chunk = '{"choices": [{"index": 0, "delta": {"content": "a\\udfffb\\u0000c\\ud83d\\ude00"}, "finish_reason": "stop"}]}'
    model.script(Reply(body=f"data: {chunk}\n\ndata: [DONE]\n\n".encode(), content_type="text/event-stream"))
    run, _ = run_with(client)
    assert run.status == "completed", run.last_error
    assert answer_text(client, run) == "a\ufffdb\ufffdc\U0001f600"
    # The thread's messages stay listable afterwards (a stored lone surrogate broke every list).
    assert len(client.beta.threads.messages.list(thread_id=run.thread_id).data) == 2


def test_an_empty_answer_that_says_it_stopped_still_completes(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(Reply(text=""))  # a role chunk, then finish_reason "stop": the model chose silence
    run, _ = run_with(client)
    assert run.status == "completed", run.last_error


def test_a_non_background_response_to_an_html_page_fails_with_it(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(Reply(body=HTML, content_type="text/html"))
    response = client.responses.create(model="gpt-4o", input="hi")
    assert response.status == "failed" and response.error is not None
    assert "text/html" in response.error.message and "502 Bad Gateway" in response.error.message
    assert response.output_text == ""


# --- the embedded model ------------------------------------------------------------------------------


@needs_embedded
def test_an_embedded_generation_is_stopped_at_the_deadline(tmp_path: Path) -> None:
    from tests.integration.test_model_host import LONG_PROMPT

    settings = Settings(
        data_dir=tmp_path, database_url=database_url(tmp_path), model_threads=1, model_call_seconds=3.0
    )
    server = ThreadlineServer(settings)
    try:
        with openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=120) as local:
            assistant = local.beta.assistants.create(model="smollm2")
            thread = local.beta.threads.create(messages=[{"role": "user", "content": LONG_PROMPT}])
            run = local.beta.threads.runs.create_and_poll(
                thread_id=thread.id,
                assistant_id=assistant.id,
                temperature=0,
                max_completion_tokens=3000,
                poll_interval_ms=50,
            )
            failed_with(run, "THREADLINE_MODEL_CALL_SECONDS (3 s)")
            assert run.started_at is not None and run.failed_at is not None
            assert 3 <= run.failed_at - run.started_at < 3 + SLACK
            # The host stopped that generation: the next call (short enough for the deadline) is answered.
            after = local.responses.create(model="smollm2", input="Say hi.", max_output_tokens=16)
            assert after.status in ("completed", "incomplete"), after.error
            assert after.output_text
    finally:
        server.stop()
