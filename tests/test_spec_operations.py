"""The operations of OpenAI's spec that are served last: a vector store file's ``attributes`` update
and its parsed content, and ``/responses/compact``; and a check that every Assistants and Responses
operation of the two spec files is served at all (59 of 59).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
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
