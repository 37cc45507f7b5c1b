"""What the Responses API hands out, it takes back: every output item as input, item references,
answers without raw citation markers, and the small things clients read (statuses, container ids,
a log line for each refusal).

Second turns are made as client libraries make them: the first response's ``output`` sent back as
input (the Agents SDK's ``to_input_list()``), or as ``item_reference``s (the Vercel AI SDK with
``store``). The scripted model records what it was sent, so each test checks what the model saw.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.api.test_builtin_tools import needs_sandbox
from tests.api.test_projects import ADMIN, new_project, sdk
from tests.support import ThreadlineServer
from threadline.domain.prompt_messages import MESSAGE_OVERHEAD
from threadline.providers import tokenizers
from threadline.testing import Reply, ScriptedModel
from threadline.testing import ToolCall as Call

QUESTION = "每月缴纳多少养老金？"
ANSWER = "百分之八【0:0†retirement.md】，公司再补百分之四。"
SHOWN = "百分之八，公司再补百分之四。"
"""The answer as the Responses API shows it: the marker cut out, its citation where it stood."""


def handbook(client: openai.OpenAI) -> str:
    store = client.vector_stores.create(name="handbook")
    client.vector_stores.file_batches.upload_and_poll(
        vector_store_id=store.id,
        files=[
            ("retirement.md", "养老金计划：每月缴纳工资的百分之八，公司再补充百分之四。".encode()),
            ("holidays.md", b"Employees get 25 days of paid holiday a year, plus public holidays."),
        ],
    )
    return store.id


def search_then_answer(model: ScriptedModel, chunks: int | None = None) -> None:
    model.script(
        Reply(tool_calls=[Call("file_search", {"query": "每月缴纳养老金"})]),
        Reply(text=ANSWER, chunks=chunks),
    )


def sent_back(items: list[Any]) -> list[dict[str, Any]]:
    """Output items as a client sends them back (the SDK's own serialisation of its models)."""
    return [item.model_dump(exclude_unset=True) for item in items]


def tool_round(messages: list[dict[str, Any]], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The assistant call of function ``name`` the model was shown, and the tool message answering it."""
    for i, message in enumerate(messages):
        for call in message.get("tool_calls") or []:
            if call["function"]["name"] == name:
                answer = next(m for m in messages[i + 1 :] if m.get("tool_call_id") == call["id"])
                return call, answer
    raise AssertionError(f"no {name} call in {messages}")


def test_a_file_search_answer_comes_back_as_input_with_its_results(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    store = handbook(client)
    search_then_answer(model)
    tools: Any = [{"type": "file_search", "vector_store_ids": [store]}]
    first = client.responses.create(
        model="gpt-4o", input=QUESTION, tools=tools, include=["file_search_call.results"]
    )
    assert first.status == "completed", first.error
    assert [item.type for item in first.output] == ["file_search_call", "message"]
    model.script(Reply(text="公司百分之四。"))
    second = client.responses.create(
        model="gpt-4o",
        input=[*sent_back(first.output), {"role": "user", "content": "公司呢？"}],  # type: ignore[list-item]
        tools=tools,
    )
    assert second.status == "completed", second.error
    seen = model.requests[-1]["messages"]
    call, result = tool_round(seen, "file_search")
    assert "每月缴纳养老金" in call["function"]["arguments"]
    assert "retirement.md" in result["content"] and "百分之八" in result["content"]
    # Then the answer the search led to, and the new question.
    assert seen[-2] == {"role": "assistant", "content": SHOWN}
    assert seen[-1] == {"role": "user", "content": "公司呢？"}
    listed = client.responses.input_items.list(second.id, order="asc").data
    assert [item.type for item in listed] == ["file_search_call", "message", "message"]
    assert listed[0].results and listed[0].results[0].filename == "retirement.md"  # type: ignore[union-attr]


def test_a_file_search_call_without_results_is_still_a_call_and_an_answer(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(Reply(text="ok"))
    given = [
        {"type": "file_search_call", "id": "fs_given", "status": "completed", "queries": ["pension"]},
        {"role": "user", "content": "go on"},
    ]
    client.responses.create(model="gpt-4o", input=given)  # type: ignore[arg-type]
    call, result = tool_round(model.requests[-1]["messages"], "file_search")
    assert "pension" in call["function"]["arguments"]
    assert "not kept" in result["content"]


@needs_sandbox
def test_a_code_interpreter_call_comes_back_as_input_with_its_outputs_and_names_its_container(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    code = "print(6 * 7)"
    model.script(Reply(tool_calls=[Call("code_interpreter", {"code": code})]), Reply(text="42."))
    tools: Any = [{"type": "code_interpreter", "container": {"type": "auto"}}]
    with client.responses.stream(model="gpt-4o", input="6 times 7?", tools=tools) as stream:
        added = [e.item for e in stream if e.type == "response.output_item.added"]
        first = stream.get_final_response()
    call = first.output[0]
    assert call.type == "code_interpreter_call"
    assert call.container_id.startswith("cntr_") and added[0].container_id == call.container_id  # type: ignore[union-attr]

    # Continued on the same thread: the same kernel, so the same container.
    model.script(Reply(tool_calls=[Call("code_interpreter", {"code": "print(1)"})]), Reply(text="1."))
    chained = client.responses.create(
        model="gpt-4o", input="and one?", tools=tools, previous_response_id=first.id
    )
    assert chained.output[0].container_id == call.container_id  # type: ignore[union-attr]

    # Sent back as input: the model sees the code it ran and what it printed.
    model.script(Reply(text="42 it is."))
    client.responses.create(
        model="gpt-4o",
        input=[*sent_back(first.output), {"role": "user", "content": "sure?"}],  # type: ignore[list-item]
    )
    ran, printed = tool_round(model.requests[-1]["messages"], "code_interpreter")
    assert code in ran["function"]["arguments"]
    assert printed["content"].strip() == "42"
    # Another thread has another kernel.
    model.script(Reply(tool_calls=[Call("code_interpreter", {"code": code})]), Reply(text="42."))
    other = client.responses.create(model="gpt-4o", input="6 times 7?", tools=tools)
    assert other.output[0].container_id not in ("", call.container_id)  # type: ignore[union-attr]


def test_a_reasoning_item_is_kept_and_returned_as_it_came(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    reasoning = {
        "type": "reasoning",
        "id": "rs_from_elsewhere",
        "summary": [{"type": "summary_text", "text": "The user wants a number."}],
        "encrypted_content": "gAAAAB-opaque-blob==",
    }
    conversation = client.conversations.create(
        items=[{"role": "user", "content": "pick a number"}, reasoning]  # type: ignore[list-item]
    )
    model.script(Reply(text="7"))
    response = client.responses.create(
        model="gpt-4o", conversation=conversation.id, input=[{"role": "user", "content": "go"}]
    )
    assert response.output_text == "7"
    items = client.conversations.items.list(conversation.id, order="asc").data
    kept = items[1]
    assert kept.type == "reasoning"
    assert kept.encrypted_content == reasoning["encrypted_content"]  # type: ignore[union-attr]
    assert [s.text for s in kept.summary] == ["The user wants a number."]  # type: ignore[union-attr]
    # A chat model takes no reasoning back: it saw the two user messages, nothing dropped in between.
    assert [m["content"] for m in model.requests[-1]["messages"]] == ["pick a number", "go"]


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"type": "reasoning", "id": "rs_1", "summary": [], "thoughts": "x"}, "input[0].thoughts"),
        (
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "txt": "x"}]},
            "input[0].summary[0].txt",
        ),
        (
            {
                "type": "file_search_call",
                "id": "fs_1",
                "status": "completed",
                "queries": [],
                "results": [{"file_id": "f", "secret": 1}],
            },
            "input[0].results[0].secret",
        ),
        (
            {
                "type": "code_interpreter_call",
                "id": "ci_1",
                "status": "completed",
                "code": "1",
                "container_id": "c",
                "outputs": [{"type": "logs", "logs": "1", "extra": True}],
            },
            "input[0].outputs[0].extra",
        ),
        ({"type": "item_reference", "id": "msg_1", "role": "user"}, "input[0].role"),
    ],
)
def test_unknown_fields_of_given_back_items_are_refused(
    client: openai.OpenAI, item: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-4o", input=[item])  # type: ignore[list-item]
    assert caught.value.body["param"] == param  # type: ignore[index]
    assert "Unknown parameter" in caught.value.message


def test_item_references_resolve_to_the_projects_items(
    make_server: Callable[..., ThreadlineServer], model: ScriptedModel
) -> None:
    server = make_server(admin_key=ADMIN)
    ours, theirs = (sdk(server, new_project(server, name)[1]) for name in ("ours", "theirs"))
    with ours, theirs:
        tools: Any = [{"type": "file_search", "vector_store_ids": [handbook(ours)]}]
        search_then_answer(model)
        first = ours.responses.create(model="gpt-4o", input=QUESTION, tools=tools)
        search, answer = first.output
        # The AI SDK's multi-turn chat with store: the user's turns, and references to the answers.
        model.script(Reply(text="公司百分之四。"))
        second = ours.responses.create(
            model="gpt-4o",
            input=[
                {"role": "user", "content": QUESTION},
                {"type": "item_reference", "id": search.id},
                {"type": "item_reference", "id": answer.id},  # type: ignore[list-item]
                {"role": "user", "content": "公司呢？"},
            ],
            tools=tools,
        )
        assert second.status == "completed", second.error
        seen = model.requests[-1]["messages"]
        _, result = tool_round(seen, "file_search")
        assert "百分之八" in result["content"]
        # The answer as it is stored (the model wrote the marker; it may cite it again).
        assert seen[-2:] == [
            {"role": "assistant", "content": ANSWER},
            {"role": "user", "content": "公司呢？"},
        ]

        # The type may be left out; a call is found in the response continued, too.
        model.script(Reply(text="ok"), Reply(text="ok"))
        ours.responses.create(model="gpt-4o", input=[{"id": answer.id}, {"role": "user", "content": "x"}])  # type: ignore[list-item]
        ours.responses.create(
            model="gpt-4o", previous_response_id=first.id, input=[{"type": "item_reference", "id": search.id}]
        )
        # An unknown id, or another project's, is refused, naming it.
        other = theirs.responses.create(model="gpt-4o", input="hello")
        for client, foreign in ((ours, "msg_nope"), (ours, other.output[0].id), (theirs, answer.id)):
            with pytest.raises(openai.BadRequestError) as caught:
                client.responses.create(
                    model="gpt-4o",
                    input=[
                        {"role": "user", "content": "hi"},
                        {"type": "item_reference", "id": foreign},  # type: ignore[list-item]
                    ],
                )
            assert caught.value.body["param"] == "input[1].id", foreign  # type: ignore[index]
            assert foreign in caught.value.message

        # Conversation items take references and hosted-tool items too.
        conversation = ours.conversations.create()
        added = ours.conversations.items.create(
            conversation.id,
            items=[{"type": "item_reference", "id": search.id}, {"type": "item_reference", "id": answer.id}],  # type: ignore[list-item]
        )
        assert [item.type for item in added.data] == ["file_search_call", "message"]


def test_answers_come_without_markers_and_citations_stand_where_they_were(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    tools: Any = [{"type": "file_search", "vector_store_ids": [handbook(client)]}]
    search_then_answer(model)
    answer = client.responses.create(model="gpt-4o", input=QUESTION, tools=tools).output[1]
    (part,) = answer.content  # type: ignore[union-attr]
    assert part.text == SHOWN  # type: ignore[union-attr]
    (citation,) = part.annotations  # type: ignore[union-attr]
    assert citation.type == "file_citation" and citation.filename == "retirement.md"
    assert citation.index == SHOWN.index("，")

    # Streamed in pieces of one character, so the marker arrives split up.
    search_then_answer(model, chunks=len(ANSWER))
    with client.responses.stream(model="gpt-4o", input=QUESTION, tools=tools) as stream:
        events = list(stream)
        final = stream.get_final_response()
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text == SHOWN
    (added,) = [e.annotation for e in events if e.type == "response.output_text.annotation.added"]
    assert added.index == SHOWN.index("，")  # type: ignore[union-attr]
    assert final.output[1].content[0].annotations[0].index == added.index  # type: ignore[union-attr]

    # The Assistants API keeps the markers, as OpenAI's did, for the same message.
    conversation = client.conversations.create()
    search_then_answer(model)
    client.responses.create(model="gpt-4o", input=QUESTION, tools=tools, conversation=conversation.id)
    message = client.beta.threads.messages.list(thread_id=conversation.id).data[0]
    assert message.content[0].text.value == ANSWER  # type: ignore[union-attr]
    assert client.conversations.items.list(conversation.id).data[0].content[0].text == SHOWN  # type: ignore[union-attr]


def test_a_streamed_response_is_in_progress_from_its_first_event(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(Reply(text="hi"), Reply(text="later"))
    with client.responses.stream(model="gpt-4o", input="hello") as stream:
        events = list(stream)
    created = events[0]
    assert created.type == "response.created" and created.response.status == "in_progress"
    progressing = [e for e in events if e.type == "response.in_progress"]
    assert progressing and progressing[0].response.status == "in_progress"
    # A background response is queued first, as OpenAI's is.
    background = client.responses.create(model="gpt-4o", input="hello", background=True, stream=True)
    first = next(iter(background))
    background.close()
    assert first.type == "response.created" and first.response.status == "queued"


def test_each_refusal_is_one_log_line(
    client: openai.OpenAI, server: ThreadlineServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="threadline.api.errors")
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="gpt-4o", input=[{"type": "bogus_call", "secret": "s3cr3t"}])  # type: ignore[list-item]
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_missing")
    lines = [r.getMessage() for r in caplog.records if r.name == "threadline.api.errors"]
    assert len(lines) == 2, lines
    refused, missing = lines
    assert refused.startswith("POST /v1/responses -> 400 (param: input[0].type): ")
    assert "bogus_call" in refused
    assert missing.startswith("GET /v1/responses/resp_missing -> 404")
    assert not any("s3cr3t" in line or "test-key" in line for line in lines)

    # A body cut short at the limit is one refusal too (the 413), whatever the app made of the rest.
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "gpt-4o", "input": "'
        for _ in range(17):
            yield b"x" * 1024 * 1024
        yield b'"}'

    caplog.clear()
    answer = httpx.post(
        f"{server.url}/responses", content=chunks(), headers={"Content-Type": "application/json"}, timeout=60
    )
    assert answer.status_code == 413
    lines = [r.getMessage() for r in caplog.records if r.name == "threadline.api.errors"]
    assert len(lines) == 1 and lines[0].startswith("POST /v1/responses -> 413"), lines


def test_allowed_tools_narrow_what_the_model_is_offered(client: openai.OpenAI, model: ScriptedModel) -> None:
    def function(name: str) -> dict[str, Any]:
        return {"type": "function", "name": name, "parameters": {"type": "object", "properties": {}}}

    tools: Any = [
        function("add"),
        function("sub"),
        {"type": "code_interpreter", "container": {"type": "auto"}},
    ]
    choice: Any = {
        "type": "allowed_tools",
        "mode": "required",
        "tools": [{"type": "function", "name": "sub"}],
    }
    model.script(Reply(text="ok"))
    response = client.responses.create(model="gpt-4o", input="x", tools=tools, tool_choice=choice)
    sent = model.requests[-1]
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["sub"]
    assert sent["tool_choice"] == "required"
    assert response.tool_choice.type == "allowed_tools" and len(response.tools) == 3  # type: ignore[union-attr]
    for bad, param in (
        ({**choice, "tools": [{"type": "function", "name": "mul"}]}, "tool_choice.tools[0]"),
        ({**choice, "mode": "sometimes"}, "tool_choice.mode"),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model="gpt-4o", input="x", tools=tools, tool_choice=bad)
        assert caught.value.body["param"] == param  # type: ignore[index]


def test_input_tokens_are_counted_as_the_model_would_be_sent_them(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    tokenizer = tokenizers.for_model("gpt-4o")

    def cost(*texts: str) -> int:
        return sum(tokenizer.count(text) + MESSAGE_OVERHEAD for text in texts)

    counted = client.responses.input_tokens.count(
        model="gpt-4o", input="Tell me a joke.", instructions="Be brief."
    )
    assert counted.object == "response.input_tokens"
    assert counted.input_tokens == cost("Be brief.", "Tell me a joke.")

    # A continuation counts what it continues, as the model would be sent it.
    model.script(Reply(text="Why did the chicken cross the road?"))
    first = client.responses.create(model="gpt-4o", input="Tell me a joke.")
    following = client.responses.input_tokens.count(
        model="gpt-4o", previous_response_id=first.id, input="Another."
    )
    spelled_out = client.responses.input_tokens.count(
        model="gpt-4o",
        input=[
            {"role": "user", "content": "Tell me a joke."},
            {"role": "assistant", "content": "Why did the chicken cross the road?"},
            {"role": "user", "content": "Another."},
        ],
    )
    assert following.input_tokens == spelled_out.input_tokens
    assert following.input_tokens == cost(
        "Tell me a joke.", "Why did the chicken cross the road?", "Another."
    )
    # Tools are part of the prompt too.
    with_tools = client.responses.input_tokens.count(
        model="gpt-4o",
        input="Tell me a joke.",
        tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
    )
    assert with_tools.input_tokens > cost("Tell me a joke.")
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.input_tokens.count(model="gpt-4o", previous_response_id="resp_nope", input="x")
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_a_body_that_never_arrives_is_one_refusal_in_the_log(
    make_server: Callable[..., ThreadlineServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(body_idle_timeout_seconds=0.3)
    caplog.set_level(logging.INFO, logger="threadline.api.errors")
    head = (
        b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"model": '
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408")
    lines = [r.getMessage() for r in caplog.records if r.name == "threadline.api.errors"]
    assert len(lines) == 1 and lines[0].startswith("POST /v1/responses -> 408"), lines
