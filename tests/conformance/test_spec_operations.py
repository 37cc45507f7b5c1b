"""The operations of OpenAI's spec that are served last: a vector store file's ``attributes`` update
and its parsed content, and ``/responses/compact``; and a check that every Assistants and Responses
operation of the two spec files is served at all (59 of 59).
"""

from __future__ import annotations

import functools
from typing import Any

import httpx
import openai
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.conformance.fuzzing import check_answer, fuzz, reference_spec
from tests.conformance.test_conformance import SPEC, conformance_spec
from tests.support import ThreadlineServer
from threadline.domain.ports.retrieval import ChunkingStrategy
from threadline.domain.prompt_messages import SUMMARY_PREFIX
from threadline.domain.vector_stores import without_overlap
from threadline.providers.tokenizers import tiktoken_encoding
from threadline.retrieval.chunking import chunk_text
from threadline.testing import Reply, ScriptedModel

MODEL = "gpt-4o"
POLL_MS = 100


def upload(client: openai.OpenAI, name: str, data: bytes) -> str:
    return client.files.create(file=(name, data), purpose="assistants").id


def bad_request(
    client: openai.OpenAI, store_id: str, file_id: str, attributes: Any
) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as refused:
        client.vector_stores.files.update(file_id, vector_store_id=store_id, attributes=attributes)
    return refused.value


# --- vector store files --------------------------------------------------------------------------


def test_updated_attributes_are_returned_kept_and_filtered_on(client: openai.OpenAI) -> None:
    store = client.vector_stores.create(name="attrs")
    tides = upload(client, "tides.txt", b"Ocean tides are caused by the pull of the Moon and the Sun.")
    moon = upload(client, "moon.txt", b"The Moon pulls on the oceans and raises the tides twice a day.")
    client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id,
        files=[
            {"file_id": tides, "attributes": {"team": "a"}},
            {"file_id": moon, "attributes": {"team": "a"}},
        ],
        poll_interval_ms=POLL_MS,
    )
    only_b = {"type": "eq", "key": "team", "value": "b"}
    assert client.vector_stores.search(store.id, query="tides", filters=only_b).data == []

    updated = client.vector_stores.files.update(
        moon, vector_store_id=store.id, attributes={"team": "b", "year": 2024, "public": True}
    )
    assert updated.id == moon and updated.object == "vector_store.file" and updated.status == "completed"
    assert updated.attributes == {"team": "b", "year": 2024, "public": True}
    assert (
        client.vector_stores.files.retrieve(moon, vector_store_id=store.id).attributes == updated.attributes
    )
    assert client.vector_stores.files.retrieve(tides, vector_store_id=store.id).attributes == {"team": "a"}

    found = client.vector_stores.search(store.id, query="tides", filters=only_b).data
    assert [(r.file_id, r.attributes) for r in found] == [(moon, updated.attributes)]
    later = {"type": "and", "filters": [{"type": "gte", "key": "year", "value": 2024}, only_b]}
    assert [r.file_id for r in client.vector_stores.search(store.id, query="tides", filters=later).data] == [
        moon
    ]

    cleared = client.vector_stores.files.update(moon, vector_store_id=store.id, attributes=None)
    assert cleared.attributes is None
    assert client.vector_stores.search(store.id, query="tides", filters=only_b).data == []


def test_attributes_out_of_the_spec_are_refused_and_unknown_files_are_404(client: openai.OpenAI) -> None:
    store = client.vector_stores.create(name="attrs-bad")
    file_id = upload(client, "a.txt", b"Some text to index.")
    client.vector_stores.files.create_and_poll(
        file_id, vector_store_id=store.id, attributes={"kept": "yes"}, poll_interval_ms=POLL_MS
    )
    assert bad_request(client, store.id, file_id, {f"k{i}": i for i in range(17)}).param == "attributes"
    assert bad_request(client, store.id, file_id, {"k" * 65: "v"}).param is not None
    assert bad_request(client, store.id, file_id, {"k": "v" * 513}).param is not None
    assert bad_request(client, store.id, file_id, {"k": {"nested": 1}}).param is not None
    assert bad_request(client, store.id, file_id, {"k": ["a"]}).param is not None
    at_limits = {**{f"k{i}": i for i in range(15)}, "k" * 64: "v" * 512}
    assert (
        client.vector_stores.files.update(file_id, vector_store_id=store.id, attributes=at_limits).attributes
        == at_limits
    )
    # A refused update changed nothing; an update without ``attributes`` is refused too.
    with pytest.raises(openai.BadRequestError):
        client.post(f"/vector_stores/{store.id}/files/{file_id}", body={}, cast_to=object)
    assert client.vector_stores.files.retrieve(file_id, vector_store_id=store.id).attributes == at_limits

    with pytest.raises(openai.NotFoundError) as missing:
        client.vector_stores.files.update("file-nope", vector_store_id=store.id, attributes={})
    assert missing.value.param == "file_id"
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.update(file_id, vector_store_id="vs_nope", attributes={})


@pytest.mark.parametrize("overlap", [0, 5, 37, 200])
def test_chunks_without_their_overlap_join_back_into_the_text(overlap: int) -> None:
    text = " ".join(
        f"Line {i}: the {['tide', 'moon', 'sun'][i % 3]} moved {i * 7} metres." for i in range(300)
    )
    chunks = [
        c.text for c in chunk_text(text, ChunkingStrategy(400, overlap), tiktoken_encoding("cl100k_base"))
    ]
    assert len(chunks) > 5
    pieces = without_overlap(chunks)
    if overlap:
        assert "".join(pieces) == text
    else:  # windows side by side: each chunk whole, on a line of its own
        assert pieces == [chunks[0], *("\n" + c for c in chunks[1:])]


def test_file_content_is_the_parsed_text_in_pieces_that_join_back(client: openai.OpenAI) -> None:
    sentences = [f"Sentence number {i} says that the tide turned at {i % 12} o'clock." for i in range(120)]
    text = "\n".join(sentences)
    store = client.vector_stores.create(name="content")
    file_id = upload(client, "long.txt", text.encode())
    row = client.vector_stores.files.create_and_poll(
        file_id,
        vector_store_id=store.id,
        chunking_strategy={
            "type": "static",
            "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 50},
        },
        poll_interval_ms=POLL_MS,
    )
    assert row.status == "completed"

    raw = client.get(f"/vector_stores/{store.id}/files/{file_id}/content", cast_to=object)
    assert isinstance(raw, dict)
    assert raw["object"] == "vector_store.file_content.page"
    assert raw["has_more"] is False and raw["next_page"] is None
    assert len(raw["data"]) > 10, "one piece per chunk"
    assert {part["type"] for part in raw["data"]} == {"text"}
    # Chunks overlap by half; the pieces do not: joined, they are the file's text.
    assert "".join(part["text"] for part in raw["data"]) == text

    pieces = list(client.vector_stores.files.content(file_id, vector_store_id=store.id))
    assert [p.text for p in pieces] == [part["text"] for part in raw["data"]]

    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.content("file-nope", vector_store_id=store.id)


FILE_OPERATIONS = [
    "POST /vector_stores/{vector_store_id}/files/{file_id}",
    "GET /vector_stores/{vector_store_id}/files/{file_id}/content",
]


@functools.cache
def file_operations() -> Any:
    spec = conformance_spec(reference_spec(SPEC))
    return schemathesis.openapi.from_dict(spec).include(
        path_regex=r"^/vector_stores/[^/]+/files/[^/]+(/content)?$"
    )


@pytest.mark.parametrize("label", FILE_OPERATIONS)
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_the_file_operations_conform_to_the_spec(
    label: str, mode: GenerationMode, server: ThreadlineServer, client: openai.OpenAI
) -> None:
    method, path = label.split(" ", 1)
    operation = file_operations()[path][method]
    if mode is GenerationMode.NEGATIVE and not operation.body:
        pytest.skip("no body to make invalid")
    store = client.vector_stores.create(name="fuzzed")
    file_id = upload(client, "a.txt", b"Text to index, and read back.")
    client.vector_stores.files.create_and_poll(file_id, vector_store_id=store.id, poll_interval_ms=POLL_MS)
    real = {"vector_store_id": store.id, "file_id": file_id}
    headers = {"Authorization": "Bearer x"}
    branches = [operation.as_strategy(generation_mode=mode, headers=headers)]
    aimed = operation.as_strategy(generation_mode=mode, headers=headers, path_parameters=real)
    branches += [aimed, aimed]

    @fuzz(25, case=st.one_of(branches))
    def check(case: Any) -> None:
        check_answer(case, case.call(base_url=server.url, timeout=30))

    check()


# --- /responses/compact --------------------------------------------------------------------------


def sent_back(items: list[Any]) -> list[dict[str, Any]]:
    """Output items as a client sends them back (the SDK's own serialisation of its models; the SDK
    types output messages as the assistant's, so a user message's parts make it warn)."""
    return [item.model_dump(exclude_unset=True, warnings=False) for item in items]


def summarised(model: ScriptedModel) -> str:
    """What the model was asked to summarise (the last request it got)."""
    messages = model.requests[-1]["messages"]
    assert "running summary" in messages[0]["content"], messages
    return str(messages[-1]["content"])


def test_compacting_keeps_user_messages_and_summarises_the_rest_for_the_next_turn(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(Reply("Nice to meet you, Ada."), Reply("Noted, tea it is."))
    first = client.responses.create(model=MODEL, input="My name is Ada and I live in Lyon.")
    second = client.responses.create(model=MODEL, previous_response_id=first.id, input="I like tea.")

    model.script(Reply("Ada lives in Lyon and likes tea."))
    compacted = client.responses.compact(
        model=MODEL, previous_response_id=second.id, input=[{"role": "user", "content": "Remember that."}]
    )
    assert compacted.object == "response.compaction" and compacted.id.startswith("resp_")
    *users, compaction = compacted.output
    assert [(u.type, u.role) for u in users] == [("message", "user")] * 3  # type: ignore[union-attr]
    texts = [u.content[0].text for u in users]  # type: ignore[union-attr]
    assert texts == ["My name is Ada and I live in Lyon.", "I like tea.", "Remember that."]
    assert compaction.type == "compaction" and compaction.id.startswith("cmp_")
    assert compaction.encrypted_content and "Ada" not in compaction.encrypted_content
    asked = summarised(model)
    assert (
        "user: My name is Ada and I live in Lyon." in asked and "assistant: Nice to meet you, Ada." in asked
    )
    assert "assistant: Noted, tea it is." in asked and "user: Remember that." in asked
    assert compacted.usage.input_tokens > 0 and compacted.usage.output_tokens > 0
    assert compacted.usage.total_tokens == compacted.usage.input_tokens + compacted.usage.output_tokens

    # The next turn starts from the compacted window: the summary in place of the answers.
    model.script(Reply("You live in Lyon."))
    third = client.responses.create(
        model=MODEL, input=[*sent_back(compacted.output), {"role": "user", "content": "Where do I live?"}]
    )
    assert third.output_text == "You live in Lyon."
    seen = model.requests[-1]["messages"]
    assert {"role": "system", "content": SUMMARY_PREFIX + "Ada lives in Lyon and likes tea."} in seen
    assert not any("Nice to meet you" in str(m.get("content")) for m in seen)
    assert [m["content"] for m in seen if m["role"] == "user"] == [*texts, "Where do I live?"]
    items = client.responses.input_items.list(third.id, order="asc").data
    given_back = [i for i in items if i.type == "compaction"]
    assert [(i.encrypted_content) for i in given_back] == [compaction.encrypted_content]  # type: ignore[union-attr]

    # Compacting again builds on the summary carried by the compaction item.
    model.script(Reply("Ada lives in Lyon, likes tea, and asked where she lives."))
    again = client.responses.compact(model=MODEL, previous_response_id=third.id)
    assert "Summary so far:\nAda lives in Lyon and likes tea." in summarised(model)
    assert "Nice to meet you" not in summarised(model)
    assert [o.type for o in again.output] == ["message"] * 4 + ["compaction"]


def test_compact_refuses_what_it_cannot_compact(client: openai.OpenAI, model: ScriptedModel) -> None:
    forged = {"type": "compaction", "encrypted_content": "gAAAAAB-not-ours"}
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=MODEL, input=[forged, {"role": "user", "content": "hi"}])
    assert refused.value.param == "input[0].encrypted_content"
    with pytest.raises(openai.BadRequestError) as empty:
        client.responses.compact(model=MODEL)
    assert empty.value.param == "input"
    with pytest.raises(openai.NotFoundError) as unknown:
        client.responses.compact(model=MODEL, previous_response_id="resp_nope")
    assert unknown.value.param == "previous_response_id"
    with pytest.raises(openai.BadRequestError):
        client.responses.compact(model=MODEL, input="x", extra_body={"conversation": "conv_x"})
    assert model.requests == [], "nothing reached the model"


def test_a_compaction_item_is_a_conversation_item_returned_as_it_came(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(Reply("Pi is about 3.14159."))
    compacted = client.responses.compact(model=MODEL, input="Remember: pi is about 3.14159.")
    compaction = compacted.output[-1]
    conversation = client.conversations.create()
    added = client.conversations.items.create(conversation.id, items=sent_back(compacted.output)).data
    assert [i.type for i in added] == ["message", "compaction"]
    listed = client.conversations.items.list(conversation.id, order="asc").data
    assert listed[-1].encrypted_content == compaction.encrypted_content  # type: ignore[union-attr]
    model.script(Reply("3.14159"))
    client.responses.create(model=MODEL, conversation=conversation.id, input="What is pi?")
    seen = model.requests[-1]["messages"]
    assert {"role": "system", "content": SUMMARY_PREFIX + "Pi is about 3.14159."} in seen


# --- every operation -----------------------------------------------------------------------------

SPECS = ("assistants-openapi.yaml", "responses-openapi.yaml")
METHODS = ("get", "post", "delete", "put", "patch")
MADE_UP = {
    "assistant_id": "asst_none",
    "thread_id": "thread_none",
    "message_id": "msg_none",
    "run_id": "run_none",
    "step_id": "step_none",
    "file_id": "file-none",
    "vector_store_id": "vs_none",
    "batch_id": "vsfb_none",
    "response_id": "resp_none",
    "conversation_id": "conv_none",
    "item_id": "msg_none",
}


def spec_operations() -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for name in SPECS
        for path, operations in reference_spec(name)["paths"].items()
        for method in operations
        if method in METHODS
    ]


def test_every_assistants_and_responses_operation_of_the_spec_is_served(server: ThreadlineServer) -> None:
    """Each operation, asked with made-up ids and an empty body, reaches its handler: it may answer
    anything a handler answers (the object not found, the body refused, a new object), but not the
    unknown-URL 404 or a 405, and never a 5xx."""
    operations = spec_operations()
    assert len(operations) == 59, operations
    headers = {"Authorization": "Bearer x", "OpenAI-Beta": "assistants=v2"}
    unserved = []
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
        for method, path in operations:
            url = path.format(**MADE_UP)
            answer = http.request(method, url, json={} if method == "POST" else None)
            message = answer.json().get("error", {}).get("message", "") if answer.status_code >= 400 else ""
            if answer.status_code == 405 or message.startswith("Invalid URL") or answer.status_code >= 500:
                unserved.append(f"{method} {path}: {answer.status_code} {message}")
    assert unserved == [], f"{59 - len(unserved)} of 59 served"


def test_a_compaction_item_that_falls_out_of_the_window_is_summarised_by_its_summary(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(Reply("Pi is about 3.14159."))
    compacted = client.responses.compact(model=MODEL, input="Remember: pi is about 3.14159.")
    filler = [{"role": "user", "content": f"note-{i:02d} " + "words " * 95} for i in range(25)]
    conversation = client.conversations.create(items=[sent_back(compacted.output)[-1], *filler[:19]])
    client.conversations.items.create(conversation.id, items=filler[19:])
    # A conversation is a thread: an Assistants run on it, with a small budget, drops the oldest.
    assistant = client.beta.assistants.create(model=MODEL)
    model.script(Reply("Summary."), Reply("ok"))
    run = client.beta.threads.runs.create_and_poll(
        thread_id=conversation.id, assistant_id=assistant.id, max_prompt_tokens=1000
    )
    assert run.status == "completed"
    summary_call, answer_call = model.requests[1:]
    transcript = str(summary_call["messages"][-1]["content"])
    assert transcript.startswith("New part of the conversation:\n(summary of what came before) Pi is about")
    assert "note-00" in transcript
    assert "Summary." in str(answer_call["messages"])
