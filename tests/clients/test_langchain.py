"""LangChain's ``ChatOpenAI`` (chat completions, not the Responses flag) and ``OpenAIEmbeddings``
pointed at Threadline, as a program using them would be: only the base URL changed."""

from __future__ import annotations

import numpy as np
import openai
import pytest

from tests.support import ThreadlineServer
from threadline.providers.tokenizers import tiktoken_encoding
from threadline.testing import Reply, ScriptedModel, ToolCall

langchain_openai = pytest.importorskip("langchain_openai")


def test_chat_openai_invoke_stream_and_tools(model: ScriptedModel, server: ThreadlineServer) -> None:
    chat = langchain_openai.ChatOpenAI(
        model="gpt-4o-mini", base_url=server.url, api_key="test-key", max_retries=0, temperature=0.2
    )
    model.script(
        Reply(text="Paris.", usage=(9, 2)),
        Reply(text="one two three"),
        Reply(tool_calls=[ToolCall("get_weather", {"city": "Oslo"})]),
    )
    answer = chat.invoke([("system", "Answer in one word."), ("human", "Capital of France?")])
    assert answer.content == "Paris."
    assert answer.usage_metadata is not None and answer.usage_metadata["total_tokens"] == 11
    assert answer.response_metadata["finish_reason"] == "stop"
    pieces = [chunk.content for chunk in chat.stream("count to three")]
    assert "".join(str(p) for p in pieces) == "one two three" and len(pieces) >= 3

    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    called = chat.bind_tools([get_weather]).invoke("Weather in Oslo?")
    assert [(c["name"], c["args"]) for c in called.tool_calls] == [("get_weather", {"city": "Oslo"})]
    sent = model.wait_for_requests(3)
    assert sent[0]["messages"][0] == {"role": "system", "content": "Answer in one word."}
    assert sent[0]["temperature"] == 0.2
    assert sent[2]["tools"][0]["function"]["name"] == "get_weather"


def test_openai_embeddings_documents_and_query(server: ThreadlineServer, client: openai.OpenAI) -> None:
    tiktoken_encoding("cl100k_base")  # the table LangChain tokenises with, available offline
    embeddings = langchain_openai.OpenAIEmbeddings(
        model="text-embedding-3-small", base_url=server.url, api_key="test-key", max_retries=0
    )
    texts = ["The cat sleeps on the sofa.", "A kitten naps on the couch.", "Bond yields rose sharply."]
    # LangChain sends these as cl100k token arrays.
    documents = np.asarray(embeddings.embed_documents(texts))
    query = np.asarray(embeddings.embed_query("Where is the cat sleeping?"))
    assert documents.shape == (3, 384) and query.shape == (384,)
    scores = documents @ query
    assert int(np.argmax(scores[:3])) in (0, 1) and scores[2] < max(scores[0], scores[1])
    # The token arrays were read back as the texts they encode.
    direct = client.embeddings.create(model="m", input=texts, encoding_format="float")
    assert np.allclose(documents, [d.embedding for d in direct.data], atol=1e-4)
