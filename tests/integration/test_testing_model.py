"""Tests for the scripted fake model in ``threadline.testing``, spoken to over real HTTP with httpx, and
for its in-process twin, the scripted provider, which must mean the same by the same script."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from threadline.domain.ports.models import ModelEvent, ModelRequest, Provider, ProviderError
from threadline.providers.openai_compat import OpenAICompatProvider
from threadline.testing import Reply, ScriptedModel, ScriptedProvider, ToolCall

USER = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as m:
        yield m


@pytest.fixture
def client(model: ScriptedModel) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=model.base_url, timeout=10.0) as c:
        yield c


def _events(lines: Iterator[str]) -> Iterator[str]:
    """The ``data:`` payloads of an SSE stream."""
    for line in lines:
        if line.startswith("data: "):
            yield line[len("data: ") :]


def _stream(client: httpx.Client, **body: Any) -> list[dict[str, Any]]:
    """POST a streamed request; return the parsed chunks and check the stream ends with [DONE]."""
    with client.stream("POST", "/chat/completions", json={"model": "m", "stream": True, **body}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        payloads = list(_events(r.iter_lines()))
    assert payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[:-1]]


def test_non_stream_text_reply(model: ScriptedModel, client: httpx.Client) -> None:
    model.script(Reply(text="Hi, how can I help?"))
    r = client.post("/chat/completions", json={"model": "gpt-x", "messages": USER})
    assert r.status_code == 200
    data = r.json()
    assert data["id"].startswith("chatcmpl-")
    assert data["object"] == "chat.completion"
    assert isinstance(data["created"], int)
    assert data["model"] == "gpt-x"
    [choice] = data["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "Hi, how can I help?"
    assert "tool_calls" not in choice["message"]
    # 2 words + 1 message; one fragment per word.
    assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert model.wait_for_requests(1)[0]["messages"] == USER


def test_default_responder_echoes_last_user_message(model: ScriptedModel, client: httpx.Client) -> None:
    messages = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "second"}]},
    ]
    r = client.post("/chat/completions", json={"model": "m", "messages": messages})
    assert r.json()["choices"][0]["message"]["content"] == "echo: second"

    model.responder = lambda body: Reply(text=f"{len(body['messages'])} messages")
    r = client.post("/chat/completions", json={"model": "m", "messages": messages})
    assert r.json()["choices"][0]["message"]["content"] == "3 messages"


def test_script_is_consumed_in_order(model: ScriptedModel, client: httpx.Client) -> None:
    model.script(Reply(text="one"), "two")
    texts = [
        client.post("/chat/completions", json={"model": "m", "messages": USER}).json()["choices"][0][
            "message"
        ]["content"]
        for _ in range(3)
    ]
    assert texts == ["one", "two", "echo: hello there"]
    assert len(model.requests) == 3
    model.reset()
    assert model.requests == []
    assert model.pending == 0


def test_streamed_text_chunks(client: httpx.Client, model: ScriptedModel) -> None:
    model.script(Reply(text="The quick brown fox"))
    chunks = _stream(client, messages=USER)
    first, *middle, last = chunks
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["id"] == first["id"] and chunk["id"].startswith("chatcmpl-")
        assert chunk["model"] == "m"
        assert isinstance(chunk["created"], int)
        assert "usage" not in chunk
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert first["choices"][0]["finish_reason"] is None
    assert [c["choices"][0]["delta"]["content"] for c in middle] == ["The ", "quick ", "brown ", "fox"]
    assert all(c["choices"][0]["finish_reason"] is None for c in middle)
    assert last["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]


def test_explicit_chunk_count(client: httpx.Client, model: ScriptedModel) -> None:
    model.script(Reply(text="abcdefghij", chunks=3))
    chunks = _stream(client, messages=USER)
    assert [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]] == ["abcd", "efg", "hij"]


def test_streamed_parallel_tool_calls(client: httpx.Client, model: ScriptedModel) -> None:
    weather = {"city": "Paris", "unit": "celsius"}
    model.script(Reply(tool_calls=[ToolCall("get_weather", weather), ToolCall("get_time", '{"tz": "CET"}')]))
    chunks = _stream(client, messages=USER)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks[1:-1]:
        [fragment] = chunk["choices"][0]["delta"]["tool_calls"]
        index = fragment["index"]
        if index not in calls:
            # The first fragment of a call names it and carries its id, with empty arguments.
            assert fragment["id"].startswith("call_")
            assert fragment["type"] == "function"
            assert fragment["function"]["arguments"] == ""
            calls[index] = {"id": fragment["id"], "name": fragment["function"]["name"], "arguments": ""}
        else:
            assert set(fragment) == {"index", "function"}
            assert set(fragment["function"]) == {"arguments"}
            calls[index]["arguments"] += fragment["function"]["arguments"]

    assert sorted(calls) == [0, 1]
    assert calls[0]["id"] != calls[1]["id"]
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == weather
    assert calls[1]["name"] == "get_time"
    assert calls[1]["arguments"] == '{"tz": "CET"}'
    # Arguments arrive in about three fragments each.
    fragments = [c for c in chunks[1:-1] if "id" not in c["choices"][0]["delta"]["tool_calls"][0]]
    assert len(fragments) == 6


def test_non_stream_tool_calls(client: httpx.Client, model: ScriptedModel) -> None:
    model.script(Reply(tool_calls=[ToolCall("lookup", {"q": "x"}, id="call_fixed")]))
    data = client.post("/chat/completions", json={"model": "m", "messages": USER}).json()
    [choice] = data["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "call_fixed", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
    ]


def test_usage_chunk_with_include_usage(client: httpx.Client, model: ScriptedModel) -> None:
    model.script(Reply(text="one two three"), Reply(text="x", usage=(100, 7)))
    chunks = _stream(client, messages=USER, stream_options={"include_usage": True})
    *body, usage_chunk = chunks
    assert all(c["usage"] is None and len(c["choices"]) == 1 for c in body)
    assert body[-1]["choices"][0]["finish_reason"] == "stop"
    assert usage_chunk["choices"] == []
    assert usage_chunk["id"] == body[0]["id"]
    assert usage_chunk["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}

    chunks = _stream(client, messages=USER, stream_options={"include_usage": True})
    assert chunks[-1]["usage"] == {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107}


@pytest.mark.parametrize("stream", [False, True])
def test_scripted_error_envelopes(client: httpx.Client, model: ScriptedModel, stream: bool) -> None:
    model.script(
        Reply(status=500, error_message="The server had an error"),
        Reply(status=429, error_message="Rate limit reached", headers={"retry-after": "0"}),
    )
    body = {"model": "m", "messages": USER, "stream": stream}

    r = client.post("/chat/completions", json=body)
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "error": {"message": "The server had an error", "type": "server_error", "param": None, "code": None}
    }

    r = client.post("/chat/completions", json=body)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "0"
    assert r.json() == {
        "error": {
            "message": "Rate limit reached",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }


def test_invalid_request_body(client: httpx.Client, model: ScriptedModel) -> None:
    r = client.post("/chat/completions", content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert model.requests == []


def test_slow_reply_is_spread_over_time(client: httpx.Client, model: ScriptedModel) -> None:
    model.script(Reply(text="abcdefghij", chunks=5, delay=0.05))
    arrivals: list[float] = []
    with client.stream(
        "POST", "/chat/completions", json={"model": "m", "stream": True, "messages": USER}
    ) as r:
        for payload in _events(r.iter_lines()):
            if payload != "[DONE]" and json.loads(payload)["choices"][0]["delta"].get("content"):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 5
    assert arrivals[-1] - arrivals[0] >= 0.15


def test_first_delay_holds_back_the_response(client: httpx.Client, model: ScriptedModel) -> None:
    model.script(Reply(text="late", first_delay=0.2))
    started = time.monotonic()
    r = client.post("/chat/completions", json={"model": "m", "messages": USER})
    assert time.monotonic() - started >= 0.2
    assert r.json()["choices"][0]["message"]["content"] == "late"


def test_hang_then_client_disconnect_is_recorded(client: httpx.Client, model: ScriptedModel) -> None:
    model.script(Reply(text="never sent", hang=True))
    with client.stream(
        "POST", "/chat/completions", json={"model": "m", "stream": True, "messages": USER}
    ) as r:
        assert r.status_code == 200
        # Keep the iterator referenced: closing it would close the connection early.
        events = _events(r.iter_lines())
        first = next(events)
        assert json.loads(first)["choices"][0]["delta"]["role"] == "assistant"
        assert model.disconnects == 0
    # Leaving the block closes the half-read response, which drops the connection.
    assert model.wait_for_disconnect(timeout=5.0) == 1
    assert model.disconnects == 1


def test_non_stream_hang_until_client_times_out(model: ScriptedModel) -> None:
    model.script(Reply(hang=True))
    with (
        httpx.Client(base_url=model.base_url, timeout=httpx.Timeout(5.0, read=0.2)) as c,
        pytest.raises(httpx.ReadTimeout),
    ):
        c.post("/chat/completions", json={"model": "m", "messages": USER})
    assert model.wait_for_disconnect(timeout=5.0) == 1


def test_stop_releases_a_hanging_reply(model: ScriptedModel, client: httpx.Client) -> None:
    model.script(Reply(hang=True))
    with client.stream(
        "POST", "/chat/completions", json={"model": "m", "stream": True, "messages": USER}
    ) as r:
        events = _events(r.iter_lines())
        next(events)
        started = time.monotonic()
        model.stop()
        assert time.monotonic() - started < 1.5
        rest = list(events)
    assert "[DONE]" not in rest
    assert model.disconnects == 0


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_truncates_with_length(client: httpx.Client, model: ScriptedModel, field: str) -> None:
    model.script(Reply(text="one two three four five"), Reply(text="one two three four five"))
    chunks = _stream(client, messages=USER, **{field: 2})
    assert [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]] == ["one ", "two "]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"

    data = client.post("/chat/completions", json={"model": "m", "messages": USER, field: 2}).json()
    assert data["choices"][0]["message"]["content"] == "one two "
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 2


def test_max_tokens_not_reached_finishes_normally(client: httpx.Client, model: ScriptedModel) -> None:
    model.script(Reply(text="one two"))
    data = client.post("/chat/completions", json={"model": "m", "messages": USER, "max_tokens": 2}).json()
    assert data["choices"][0]["finish_reason"] == "stop"


def test_models_endpoint(client: httpx.Client) -> None:
    r = client.get("/models")
    assert r.status_code == 200
    assert r.json() == {
        "object": "list",
        "data": [{"id": "scripted", "object": "model", "created": 0, "owned_by": "threadline-testing"}],
    }


def test_custom_model_ids_and_fixed_port() -> None:
    with ScriptedModel(model_ids=["a", "b"]) as first:
        port = first.port
    # The port is free again after stop(), so it can be asked for explicitly.
    with ScriptedModel(port=port, model_ids=["a", "b"]) as m, httpx.Client() as c:
        assert m.base_url == f"http://127.0.0.1:{port}/v1"
        assert [d["id"] for d in c.get(m.base_url + "/models").json()["data"]] == ["a", "b"]


def test_many_concurrent_requests(model: ScriptedModel) -> None:
    # Raw sockets rather than httpx: its connection pool, not the server, dominates at this concurrency.
    async def one(i: int) -> str:
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": f"n{i}"}]}).encode()
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", model.port)
        try:
            writer.write(head.encode() + body)
            response = await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()
        status, _, payload = response.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 200")
        content: str = json.loads(payload)["choices"][0]["message"]["content"]
        return content

    async def run() -> list[str]:
        return await asyncio.gather(*(one(i) for i in range(300)))

    assert asyncio.run(run()) == [f"echo: n{i}" for i in range(300)]
    assert len(model.wait_for_requests(300)) == 300


def test_wait_for_requests_times_out(model: ScriptedModel) -> None:
    with pytest.raises(TimeoutError):
        model.wait_for_requests(1, timeout=0.05)


def test_cli_serves_until_terminated() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "threadline.testing", "--port", "0", "--text", "fixed reply"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("ready http://127.0.0.1:")
        base_url = line.removeprefix("ready ")
        with httpx.Client(base_url=base_url, timeout=10.0) as c:
            r = c.post("/chat/completions", json={"model": "m", "messages": USER})
        assert r.json()["choices"][0]["message"]["content"] == "fixed reply"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        assert proc.stdout is not None
        proc.stdout.close()


PARITY = [
    Reply(text="Hello there, friend."),
    Reply(
        text="Let me look.",
        tool_calls=[ToolCall("lookup", {"q": "x"}, id="call_1"), ToolCall("f", id="call_2")],
    ),
    Reply(reasoning="Think first.", text="Then answer.", refusal="But not that."),
    Reply(text="one two three four five six", finish_reason="length"),
    Reply(text="Cut by the budget, word by word, here."),
    Reply(tool_calls=[ToolCall("lookup", {"q": "y" * 40}, id="call_3")], chunks=8),
    Reply(text="no", usage=(7, 9)),
    Reply(status=429, error_message="slow down"),
    Reply(status=503),
    Reply(status=400, error_code="context_length_exceeded"),
]


@pytest.mark.parametrize("reply", PARITY, ids=range(len(PARITY)))
def test_in_process_provider_yields_what_the_adapter_reads_from_the_server(
    model: ScriptedModel, reply: Reply
) -> None:
    """One script, two transports: the in-process provider's events (or error) are the ones the
    OpenAI-compatible adapter reads from the HTTP fake for the same reply."""
    request = ModelRequest(
        model="m", messages=[*USER], max_tokens=4 if "budget" in (reply.text or "") else None
    )

    async def events(provider: Provider) -> list[ModelEvent] | tuple[str, str, bool, int | None]:
        try:
            return [event async for event in provider.stream(request)]
        except ProviderError as exc:
            return (exc.message, exc.code, exc.retryable, exc.status)
        finally:
            await provider.aclose()

    model.script(reply)
    over_http = asyncio.run(events(OpenAICompatProvider(model.base_url)))
    in_process = ScriptedProvider()
    in_process.script(reply)
    assert asyncio.run(events(in_process)) == over_http
    assert in_process.requests == [request]
