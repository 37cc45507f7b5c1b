"""The fast lane (api/fast_lane.py): an SDK run's three requests are served by it, and whatever it
does not take (a body that is not JSON or does not validate, a missing body) is answered by FastAPI
exactly as before, the body the lane read handed on whole."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support import ThreadlineServer
from threadline.api import fast_lane
from threadline.testing import Reply, ScriptedModel

BETA = {"OpenAI-Beta": "assistants=v2", "Authorization": "Bearer test-key"}
JSON = {**BETA, "Content-Type": "application/json"}


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The outcome of each request the lane looked at: ``served`` or ``passed on``."""
    seen: list[str] = []
    original = fast_lane._Lane.serve

    async def serve(self: Any, request: Any) -> Any:
        try:
            response = await original(self, request)
        except fast_lane._NotHere:
            seen.append(f"passed on {self.method} {self.path}")
            raise
        seen.append(f"served {self.method} {self.path}")
        return response

    monkeypatch.setattr(fast_lane._Lane, "serve", serve)
    yield seen


def test_an_sdk_run_is_served_by_the_lane(
    client: openai.OpenAI, model: ScriptedModel, served: list[str]
) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o")
    model.script(Reply(text="hello"))
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"
    assert served[:2] == ["served POST /v1/threads", "served POST /v1/threads/{thread_id}/runs"]
    assert served[2:] and set(served[2:]) == {"served GET /v1/threads/{thread_id}/runs/{run_id}"}


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (
            b'{"assistant_id": ',
            JSON,
            "We could not parse the JSON body of your request. Please send valid JSON.",
        ),
        (
            b'{"assistant_id": "asst_x", "colour": "red"}',
            JSON,
            "Unrecognized request argument supplied: colour",
        ),
        (b"{}", JSON, "Missing required parameter: 'assistant_id'."),
        (b"", JSON, "The request body is missing. Please send a JSON object."),
        (b'"text"', JSON, "The request body must be a JSON object."),
        (b'{"assistant_id": "asst_x"}', {**BETA, "Content-Type": "text/plain"}, None),
    ],
    ids=["unparsable", "unknown-field", "missing-field", "no-body", "not-an-object", "not-json"],
)
def test_what_the_lane_passes_on_fastapi_answers(
    server: ThreadlineServer,
    client: openai.OpenAI,
    served: list[str],
    body: bytes,
    headers: dict[str, str],
    message: str | None,
) -> None:
    thread = client.beta.threads.create()
    served.clear()
    answer = httpx.post(f"{server.url}/threads/{thread.id}/runs", content=body, headers=headers, timeout=10)
    assert answer.status_code == 400, answer.text
    if message is not None:
        assert answer.json()["error"]["message"] == message
    assert served == ["passed on POST /v1/threads/{thread_id}/runs"]


def test_the_lane_checks_what_the_route_checks(server: ThreadlineServer, served: list[str]) -> None:
    url = f"{server.url}/threads"
    # The key and the beta header (the route's guards), and NUL in a body (its body check).
    no_beta = httpx.post(url, json={}, headers={"Authorization": "Bearer test-key"}, timeout=10)
    assert no_beta.status_code == 400 and "OpenAI-Beta" in no_beta.json()["error"]["message"]
    nul = httpx.post(url, json={"metadata": {"k": "a\u0000b"}}, headers=BETA, timeout=10)
    assert nul.status_code == 400 and nul.json()["error"]["param"] == "metadata.k"
    empty = httpx.post(url, headers=BETA, timeout=10)  # the body is optional
    assert empty.status_code == 200 and empty.json()["object"] == "thread"
    assert served == ["served POST /v1/threads"]  # the refusals were raised by the lane itself
