"""Oversized input is refused up front, in OpenAI's envelope, and nothing of it is kept."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support import ThreadlineServer

BETA = {"OpenAI-Beta": "assistants=v2", "Content-Type": "application/json"}
LIMIT = 16 * 1024 * 1024


def test_message_text_is_limited_like_openai(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create()
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content="x" * 256_001)
    assert caught.value.param == "content"
    assert client.beta.threads.messages.list(thread_id=thread.id).data == []
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="x" * 256_000)


def test_a_body_over_the_limit_is_refused_before_it_is_read(server: ThreadlineServer) -> None:
    body = b'{"metadata": {"k": "' + b"x" * (LIMIT + 1) + b'"}}'
    response = httpx.post(f"{server.url}/threads", content=body, headers=BETA, timeout=60)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_body_without_a_length_is_cut_off_at_the_limit(server: ThreadlineServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"metadata": {"k": "'
        for _ in range(LIMIT // (1024 * 1024) + 2):
            yield b"x" * 1024 * 1024
        yield b'"}}'

    response = httpx.post(f"{server.url}/threads", content=chunks(), headers=BETA, timeout=60)
    assert response.status_code == 413
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
