"""``/v1/embeddings`` and ``/v1/models`` with the official SDK: the embedded e5 model file search
uses, every encoding and input form, and the listed models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from tests.support import ThreadlineServer
from threadline.providers.tokenizers import tiktoken_encoding
from threadline.testing import ScriptedModel


def _vector(item: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.asarray(item.embedding, dtype=np.float32)


def test_float_base64_and_batches_agree(client: openai.OpenAI) -> None:
    texts = ["The cat sleeps on the sofa.", "A kitten naps on the couch.", "Quarterly bond yields rose."]
    floats = client.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
    assert floats.object == "list" and floats.model == "multilingual-e5-small"
    assert [d.index for d in floats.data] == [0, 1, 2]
    vectors = np.stack([_vector(d) for d in floats.data])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    # A real embedding, in input order: the two sentences about cats are nearest each other.
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.05
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 10
    # The SDK asks for base64 when no format is given, and decodes it.
    encoded = client.embeddings.create(model="text-embedding-3-small", input=texts)
    assert np.allclose(np.stack([_vector(d) for d in encoded.data]), vectors, atol=1e-6)
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=texts[1], encoding_format="base64"
    )
    assert isinstance(raw.http_response.json()["data"][0]["embedding"], str)
    one = client.embeddings.create(model="m", input=texts[1], encoding_format="float")
    assert np.allclose(_vector(one.data[0]), vectors[1], atol=1e-4)


def test_token_arrays_are_cl100k_tokens(client: openai.OpenAI) -> None:
    text = "Bonjour tout le monde"
    tokens = tiktoken_encoding("cl100k_base").encode(text)
    by_text = client.embeddings.create(model="m", input=text, encoding_format="float")
    by_tokens = client.embeddings.create(model="m", input=[tokens, tokens], encoding_format="float")
    single = client.embeddings.create(model="m", input=tokens, encoding_format="float")
    assert len(by_tokens.data) == 2 and len(single.data) == 1
    for item in [*by_tokens.data, *single.data]:
        assert np.allclose(_vector(item), _vector(by_text.data[0]), atol=1e-4)


def test_dimensions(client: openai.OpenAI) -> None:
    native = client.embeddings.create(model="m", input="x y", dimensions=384, encoding_format="float")
    assert len(native.data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="m", input="x y", dimensions=128)
    assert caught.value.param == "dimensions" and "384" in caught.value.message
    with pytest.raises(openai.BadRequestError) as empty:
        client.embeddings.create(model="m", input="")
    assert empty.value.param == "input"


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert "multilingual-e5-small" in ids
    assert client.models.retrieve("multilingual-e5-small").id == "multilingual-e5-small"
    # The test server routes every name upstream: any name is served, so any is retrievable.
    assert client.models.retrieve("gpt-4o-mini").object == "model"


def test_models_of_a_models_file(make_server: Any, model: ScriptedModel, tmp_path: Path) -> None:
    models_file = tmp_path / "models.yaml"
    models_file.write_text(
        f"- name: gpt-4o-mini\n  base_url: {model.base_url}\n- name: 'llama-*'\n  base_url: {model.base_url}\n"
    )
    server: ThreadlineServer = make_server(models_file=str(models_file))
    with openai.OpenAI(base_url=server.url, api_key="k", max_retries=0) as sdk:
        assert [m.id for m in sdk.models.list()] == ["gpt-4o-mini", "multilingual-e5-small"]
        assert sdk.models.retrieve("llama-3").id == "llama-3"
        with pytest.raises(openai.NotFoundError) as caught:
            sdk.models.retrieve("claude-9")
        assert caught.value.code == "model_not_found"
        with pytest.raises(openai.NotFoundError) as unrouted:
            sdk.chat.completions.create(model="claude-9", messages=[{"role": "user", "content": "hi"}])
        assert unrouted.value.code == "model_not_found"


def test_matryoshka_dimensions_through_an_embeddings_upstream(
    make_server: Any, client: openai.OpenAI
) -> None:
    # This server's own /v1/embeddings is the upstream of another one, which names it as OpenAI's
    # text-embedding-3-small: a model whose vectors may be shortened.
    upstream = client.base_url.__str__().rstrip("/")
    front: ThreadlineServer = make_server(
        embeddings_base_url=upstream, embeddings_model="text-embedding-3-small", embeddings_api_key="k"
    )
    text = "Le chat dort sur le canapé."
    full = np.asarray(
        client.embeddings.create(model="m", input=text, encoding_format="float").data[0].embedding
    )
    with openai.OpenAI(base_url=front.url, api_key="k", max_retries=0) as sdk:
        assert "text-embedding-3-small" in [m.id for m in sdk.models.list()]
        short = sdk.embeddings.create(model="text-embedding-3-small", input=text, dimensions=96)
    assert short.model == "text-embedding-3-small"
    vector = np.asarray(short.data[0].embedding)
    assert vector.shape == (96,)
    assert np.allclose(vector, full[:96] / np.linalg.norm(full[:96]), atol=1e-4)


def test_passages_embed_as_file_search_stores_them(client: openai.OpenAI) -> None:
    text = "Le chat dort sur le canapé."
    query = client.embeddings.create(model="m", input=text, encoding_format="float").data[0].embedding
    passage = (
        client.embeddings.create(
            model="m", input=text, encoding_format="float", extra_body={"input_type": "passage"}
        )
        .data[0]
        .embedding
    )
    assert 0.8 < float(np.dot(query, passage)) < 0.9999  # the same text, with e5's other prefix
