"""``/v1/chat/completions`` through the routing table, with the official SDK, against the scripted
model: what the client gets back and what reached the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.support import ThreadlineServer, install_node_sdk, run_node
from threadline.testing import Reply, ScriptedModel, ToolCall


def test_completion_has_the_spec_shape_and_passes_the_fields(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(Reply(text="Hello there", usage=(12, 3)))
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Say hello"}]},
        ],
        temperature=0.3,
        top_p=0.9,
        seed=7,
        stop=["END"],
        max_completion_tokens=50,
        reasoning_effort="low",
        logprobs=True,
        top_logprobs=2,
        presence_penalty=0.5,
        user="someone",
    )
    assert reply.id.startswith("chatcmpl-")
    assert reply.object == "chat.completion"
    assert reply.model == "gpt-4o-mini"
    assert reply.system_fingerprint and reply.created > 0
    [choice] = reply.choices
    assert (choice.index, choice.finish_reason) == (0, "stop")
    assert (choice.message.role, choice.message.content, choice.message.refusal) == (
        "assistant",
        "Hello there",
        None,
    )
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (12, 3, 15)
    [sent] = model.wait_for_requests(1)
    assert sent["model"] == "gpt-4o-mini"
    assert [m["role"] for m in sent["messages"]] == ["developer", "user"]
    assert sent["messages"][1]["content"] == [{"type": "text", "text": "Say hello"}]
    expected = {
        "temperature": 0.3,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["END"],
        "max_tokens": 50,
        "reasoning_effort": "low",
        "logprobs": True,
        "top_logprobs": 2,
        "presence_penalty": 0.5,
        "user": "someone",
    }
    assert {k: sent.get(k) for k in expected} == expected


def test_stream_with_usage(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="one two three", usage=(5, 3)))
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "count"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 3  # streamed, not lumped
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    *body, last = chunks
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (5, 3, 8)
    assert all(c.usage is None for c in body)


def test_tools_round_trip(client: openai.OpenAI, model: ScriptedModel) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    model.script(Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"})]), Reply(text="Sunny in Paris"))
    messages: list[dict[str, object]] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=messages,  # type: ignore[arg-type]
        tools=tools,  # type: ignore[arg-type]
        tool_choice="required",
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'},
    ]
    second = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=messages,  # type: ignore[arg-type]
        tools=tools,  # type: ignore[arg-type]
    )
    assert second.choices[0].message.content == "Sunny in Paris"
    sent = model.wait_for_requests(2)
    assert sent[0]["tools"] == tools and sent[0]["tool_choice"] == "required"
    assert sent[1]["messages"][1]["tool_calls"][0]["id"] == call.id
    assert sent[1]["messages"][2] == {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'}


def test_streamed_tool_call(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(tool_calls=[ToolCall("lookup", {"q": "x"})]))
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "look it up"}],
            tools=[{"type": "function", "function": {"name": "lookup"}}],
            stream=True,
        )
    )
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].id and calls[0].id.startswith("call_") and calls[0].function
    assert calls[0].function.name == "lookup"
    assert json.loads("".join(tc.function.arguments or "" for tc in calls if tc.function)) == {"q": "x"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["tool_calls"]


class City(BaseModel):
    city: str
    temperature: int


def test_json_schema_parse(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text='{"city": "Paris", "temperature": 21}'))
    reply = client.chat.completions.parse(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Paris weather"}], response_format=City
    )
    assert reply.choices[0].message.parsed == City(city="Paris", temperature=21)
    [sent] = model.wait_for_requests(1)
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["name"] == "City"
    assert sent["response_format"]["json_schema"]["schema"]["required"] == ["city", "temperature"]


def test_n_choices_and_stop_cut(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="alpha END beta"), Reply(text="gamma END delta"))
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "go"}], n=2, stop="END"
    )
    # The scripted model ignores stop, as the embedded one does: the cut is the server's.
    assert sorted(c.message.content or "" for c in reply.choices) == ["alpha ", "gamma "]
    assert [c.index for c in reply.choices] == [0, 1]
    assert len(model.wait_for_requests(2)) == 2


@pytest.mark.parametrize("status", [400, 404, 422])
def test_upstream_client_errors_pass_through(
    client: openai.OpenAI, model: ScriptedModel, status: int
) -> None:
    model.script(
        Reply(
            status=status, error_message="This model's maximum context length is 8 tokens", error_code="ctx"
        )
    )
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == status
    assert caught.value.code == "ctx"
    assert "maximum context length" in caught.value.message


def test_streamed_upstream_error_is_an_error_status(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(status=400, error_message="bad request upstream"))
    with pytest.raises(openai.BadRequestError, match="bad request upstream"):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )


def test_upstream_server_error_is_502(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(status=503, error_message="overloaded"))
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    assert "overloaded" in caught.value.message


def test_validation_and_legacy_route(server: ThreadlineServer) -> None:
    headers = {"Authorization": "Bearer test-key"}
    with httpx.Client(base_url=server.url, headers=headers) as http:
        empty = http.post("/chat/completions", json={"model": "m", "messages": []})
        assert empty.status_code == 400 and empty.json()["error"]["param"] == "messages"
        role = http.post("/chat/completions", json={"model": "m", "messages": [{"role": "robot"}]})
        assert role.status_code == 400
        unknown = http.post(
            "/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x"}], "bogus": 1},
        )
        assert unknown.status_code == 400
        options = http.post(
            "/chat/completions",
            json={
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "stream_options": {"include_usage": True},
            },
        )
        assert options.status_code == 400 and options.json()["error"]["param"] == "stream_options"
        legacy = http.post("/completions", json={"model": "m", "prompt": "x"})
        assert legacy.status_code == 404 and "/v1/chat/completions" in legacy.json()["error"]["message"]
        assert http.post("/chat/completions", headers={"Authorization": "Bearer wrong"}).status_code in (
            401,
            400,
        )


def test_metrics_count_chat_requests_and_tokens(
    client: openai.OpenAI, model: ScriptedModel, server: ThreadlineServer
) -> None:
    model.script(Reply(text="ok", usage=(40, 2)))
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    text = httpx.get(server.url.removesuffix("/v1") + "/metrics").text
    line = 'threadline_api_requests_total{route="/v1/chat/completions",status="200"}'
    assert line in text
    assert 'threadline_api_tokens_total{kind="prompt",route="/v1/chat/completions"}' in text
    assert 'threadline_api_request_duration_seconds_count{route="/v1/chat/completions"}' in text


@pytest.mark.timeout(180)
def test_node_sdk_mixes_chat_embeddings_and_models(model: ScriptedModel, server: ThreadlineServer) -> None:
    node_dir = install_node_sdk()
    model.script(Reply(text="Hi Node."), Reply(text="one two three", usage=(4, 3)))
    seen = run_node(node_dir, "chat.mjs", server.url, timeout=120)
    assert seen["id"].startswith("chatcmpl-")
    assert (seen["content"], seen["finish_reason"]) == ("Hi Node.", "stop")
    assert seen["deltas"] == ["one ", "two ", "three"]
    assert seen["usage"]["total_tokens"] == 7
    assert seen["dimensions"] == [384, 384]  # the SDK's default base64, decoded
    assert "multilingual-e5-small" in seen["models"]
    assert model.wait_for_requests(2)[0]["messages"] == [{"role": "user", "content": "hello from node"}]


def test_llm_cli_with_a_builtin_openai_model(
    model: ScriptedModel, server: ThreadlineServer, tmp_path: Path
) -> None:
    pytest.importorskip("llm")
    model.script(Reply(text="Bonjour from llm", usage=(6, 3)))
    env = {
        **os.environ,
        "OPENAI_BASE_URL": server.url,
        "OPENAI_API_KEY": "test-key",
        "LLM_USER_PATH": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "llm", "-m", "gpt-4o-mini", "-s", "Be brief.", "Say bonjour"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Bonjour from llm"
    [sent] = model.wait_for_requests(1)
    assert sent["model"] == "gpt-4o-mini"
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert sent["messages"][-1]["content"] == "Say bonjour"


def test_streamed_n_choices(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="first answer"), Reply(text="second answer"))
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "two"}], n=2, stream=True
        )
    )
    texts = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert sorted(texts.values()) == ["first answer", "second answer"]
    finished = [(c.index, c.finish_reason) for chunk in chunks for c in chunk.choices if c.finish_reason]
    assert sorted(finished) == [(0, "stop"), (1, "stop")]
    with pytest.raises(openai.BadRequestError, match="n must be between 1 and 16"):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], n=17)


def test_a_client_leaving_a_stream_stops_the_model_call(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text=" ".join(f"w{i}" for i in range(200)), delay=0.05))
    with client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "long"}], stream=True
    ) as stream:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
    assert model.wait_for_disconnect(timeout=5) >= 1


def test_one_failed_choice_fails_the_request_and_stops_the_others(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(
        Reply(text="a b c d e f g h i j", delay=0.5), Reply(status=400, error_message="no such thing")
    )
    with pytest.raises(openai.BadRequestError, match="no such thing"):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], n=2)
    assert model.wait_for_disconnect(timeout=3) >= 1  # long before the slow choice's 5 s


def mixed_program(sdk: openai.OpenAI) -> dict[str, object]:
    """What a program using one client for everything does: a thread's run, a chat completion,
    embeddings and the models list."""
    assistant = sdk.beta.assistants.create(model="gpt-4o-mini", instructions="Be brief.")
    thread = sdk.beta.threads.create(messages=[{"role": "user", "content": "Hello thread"}])
    run = sdk.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    reply = sdk.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi chat"}]
    )
    vectors = sdk.embeddings.create(model="text-embedding-3-small", input=["one", "two"])
    return {
        "run": run.status,
        "chat": reply.choices[0].message.content,
        "vectors": [len(d.embedding) for d in vectors.data],
        "models": [m.id for m in sdk.models.list()],
    }


def test_one_client_for_threads_chat_embeddings_and_models(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(Reply(text="From the run."), Reply(text="From chat."))
    seen = mixed_program(client)
    assert seen == {
        "run": "completed",
        "chat": "From chat.",
        "vectors": [384, 384],
        "models": seen["models"],
    }
    assert "multilingual-e5-small" in seen["models"]  # type: ignore[operator]


def test_upstream_logprobs_come_back(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="alpha beta gamma"), Reply(text="alpha beta gamma"))
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], logprobs=True, top_logprobs=0
    )
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert "".join(t.token for t in logprobs.content) == "alpha beta gamma"
    assert {t.logprob for t in logprobs.content} == {-0.5}
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], logprobs=True, stream=True
        )
    )
    tokens = [
        t.token for c in chunks for t in ((c.choices[0].logprobs and c.choices[0].logprobs.content) or [])
    ]
    assert "".join(tokens) == "alpha beta gamma"
    plain = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert plain.choices[0].logprobs is None


def test_reply_caps_hold_and_a_stream_failing_midway_says_so(make_server: Any, model: ScriptedModel) -> None:
    server: ThreadlineServer = make_server(model_max_reply_tokens=3)
    model.script(Reply(text="a b c d e f g"), Reply(text="a b c d e f g"))
    with openai.OpenAI(base_url=server.url, api_key="k", max_retries=0) as sdk:
        with pytest.raises(openai.APIStatusError, match="THREADLINE_MODEL_MAX_REPLY_TOKENS") as whole:
            sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        assert whole.value.status_code == 502
        seen: list[str] = []
        with pytest.raises(openai.APIError, match="THREADLINE_MODEL_MAX_REPLY_TOKENS"):
            for chunk in sdk.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=True
            ):
                seen.append(chunk.choices[0].delta.content or "")
        assert "".join(seen) == "a b c "
    text = httpx.get(server.url.removesuffix("/v1") + "/metrics").text
    assert 'threadline_api_requests_total{route="/v1/chat/completions",status="502"} 2.0' in text
