"""``/v1/chat/completions`` on the embedded model (SmolLM2 through llama.cpp): JSON and function
calls forced by grammars as in runs, and what an embedded route cannot do refused plainly."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from pydantic import BaseModel

from tests.api.test_chat import mixed_program
from tests.integration.test_embedded import needs_embedded
from tests.support import ThreadlineServer
from threadline.config import Settings

pytestmark = [needs_embedded, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    from tests.conftest import database_url

    directory = tmp_path_factory.mktemp("chat-embedded")
    # No upstream, no models file: every model name goes to the embedded SmolLM2.
    server = ThreadlineServer(Settings(data_dir=directory, database_url=database_url(directory)))
    try:
        with openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=120) as client:
            yield client
    finally:
        server.stop()


class Order(BaseModel):
    item: str
    quantity: int


def test_json_schema_is_forced(local: openai.OpenAI) -> None:
    reply = local.chat.completions.parse(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "I want 3 books. Give the order as JSON."}],
        response_format=Order,
        temperature=0,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, Order)
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_required_tool_call_fits_its_schema(local: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "place_order",
                "parameters": {
                    "type": "object",
                    "properties": {"item": {"type": "string"}, "quantity": {"type": "integer"}},
                    "required": ["item", "quantity"],
                },
            },
        }
    ]
    chunks = list(
        local.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Order 2 pens."}],
            tools=tools,  # type: ignore[arg-type]
            tool_choice="required",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function and calls[0].function.name == "place_order"
    arguments = json.loads("".join(tc.function.arguments or "" for tc in calls if tc.function))
    assert set(arguments) == {"item", "quantity"} and isinstance(arguments["quantity"], int)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0


def test_what_an_embedded_route_cannot_do_is_refused(local: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as logprobs:
        local.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], logprobs=True
        )
    assert logprobs.value.param == "logprobs" and "embedded" in logprobs.value.message
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    with pytest.raises(openai.BadRequestError) as images:
        local.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": [{"type": "text", "text": "what is this?"}, image]}],
        )
    assert images.value.param == "messages" and "images" in images.value.message


def test_stop_and_max_tokens_hold(local: openai.OpenAI) -> None:
    capped = local.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_completion_tokens=5,
        temperature=0,
    )
    assert capped.choices[0].finish_reason == "length"
    assert capped.usage is not None and capped.usage.completion_tokens <= 5
    free = local.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
        max_completion_tokens=40,
        temperature=0,
    )
    text = free.choices[0].message.content or ""
    assert len(text) > 2
    stop = text[len(text) // 2]  # a character the model does write, at temperature 0 again
    cut = local.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
        max_completion_tokens=40,
        temperature=0,
        stop=[stop],
    )
    assert cut.choices[0].message.content == text[: text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    # The model itself stopped there, and said how far it got.
    assert cut.usage is not None and 0 < cut.usage.completion_tokens < (
        free.usage.completion_tokens if free.usage else 0
    )


def test_seed_repeats_a_sampled_answer(local: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        reply = local.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Invent a name for a cat."}],
            temperature=1.5,
            max_completion_tokens=24,
            seed=seed,
        )
        return reply.choices[0].message.content or ""

    first = sample(11)
    assert sample(11) == first
    assert len({first, sample(12), sample(13), sample(14)}) > 1  # the seed decides, at this temperature


def test_one_client_for_threads_chat_embeddings_and_models(local: openai.OpenAI) -> None:
    seen = mixed_program(local)
    assert seen["run"] == "completed" and seen["chat"]
    assert seen["vectors"] == [384, 384]
    assert "multilingual-e5-small" in seen["models"]  # type: ignore[operator]
