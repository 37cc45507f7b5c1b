"""A stream that breaks after it started ends with an ``error`` event the SDK raises on, then ``done``."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from threadline.api.sse import DONE, follow
from threadline.domain.events import ErrorEvent, ObjectEvent
from threadline.events.bus import LocalBus


async def _frames(*events: object) -> list[bytes]:
    bus = LocalBus()
    subscription = bus.subscribe("run_x")
    for event in events:
        await bus.publish("run_x", event)  # type: ignore[arg-type]
    return [frame async for frame in follow(subscription, keepalive=5)]


def test_an_internal_failure_ends_the_stream_with_error_then_done() -> None:
    # An event the stream cannot render stands in for any failure inside the stream itself.
    frames = asyncio.run(_frames(ObjectEvent("thread.run.created", object())))  # type: ignore[arg-type]
    assert frames[-1] == DONE
    name, data = frames[-2].decode().strip().split("\n")
    assert name == "event: error"
    payload = json.loads(data.removeprefix("data: "))
    # Python's SDK reads payload["error"]; Node's reads payload.error or the payload; the spec the payload.
    assert payload["error"]["message"] == payload["message"]
    assert set(payload["error"]) == {"message", "type", "param", "code"}


def test_a_published_error_event_ends_the_stream() -> None:
    frames = asyncio.run(_frames(ErrorEvent("model server went away")))
    assert frames[-1] == DONE and frames[-2].startswith(b"event: error\n")


def test_the_python_sdk_raises_on_the_error_event() -> None:
    body = b"".join(asyncio.run(_frames(ErrorEvent("model server went away"))))
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    )
    with (
        httpx.Client(transport=transport) as http,
        openai.OpenAI(base_url="http://threadline.test/v1", api_key="x", http_client=http) as client,
    ):
        stream = client.beta.threads.runs.create(thread_id="thread_x", assistant_id="asst_x", stream=True)
        with pytest.raises(openai.APIError, match="model server went away"):
            for _ in stream:
                pass
