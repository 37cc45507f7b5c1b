"""Every error path, through the official SDK: status, exception class and OpenAI's exact envelope.

The SDK builds its exception from ``{"error": {"message", "type", "param", "code"}}`` and picks the
class from the status, so a wrong status or a different body shape changes what user code sees.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest

from tests.support import ThreadlineServer, wait_for
from threadline.testing import Reply, ScriptedModel, ToolCall

BETA = {"OpenAI-Beta": "assistants=v2"}
JSON = {**BETA, "Content-Type": "application/json"}
BETA_MESSAGE = (
    "You must provide the 'OpenAI-Beta' header to access the Assistants API. "
    "Please try again by setting the header 'OpenAI-Beta: assistants=v2'."
)


@contextmanager
def refused(
    kind: type[openai.APIStatusError],
    status: int,
    message: str | re.Pattern[str],
    *,
    param: str | None = None,
    code: str | None = None,
    type_: str = "invalid_request_error",
) -> Iterator[None]:
    """The block must fail with exactly this exception class, status and envelope."""
    with pytest.raises(openai.APIStatusError) as caught:
        yield
    error = caught.value
    assert type(error) is kind, (type(error), error)
    assert error.status_code == status
    body = error.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    if isinstance(message, str):
        assert body["error"]["message"] == message, body
    else:
        assert message.fullmatch(body["error"]["message"]), body
    assert (body["error"]["type"], body["error"]["param"], body["error"]["code"]) == (type_, param, code)
    # What user code reads off the exception.
    assert (error.type, error.param, error.code) == (type_, param, code)


def _status(client: openai.OpenAI, thread_id: str, run_id: str) -> Callable[[], str | None]:
    def check() -> str | None:
        status = client.beta.threads.runs.retrieve(run_id, thread_id=thread_id).status
        return status if status in ("in_progress",) else None

    return check


def test_every_error_path(
    client: openai.OpenAI,
    server: ThreadlineServer,
    model: ScriptedModel,
    make_server: Callable[..., ThreadlineServer],
) -> None:
    # --- the beta header --------------------------------------------------------------------------
    raw = httpx.get(f"{server.url}/assistants", headers={"Authorization": "Bearer test-key"})
    assert raw.status_code == 400
    assert raw.json() == {
        "error": {
            "message": BETA_MESSAGE,
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_beta",
        }
    }
    # The SDK's low-level client does not add the header that its resource methods send.
    with refused(openai.BadRequestError, 400, BETA_MESSAGE, code="invalid_beta"):
        client.get("/threads/thread_x", cast_to=object)

    # --- unknown ids --------------------------------------------------------------------------------
    assistant = client.beta.assistants.create(model="scripted", instructions="Be brief.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hello"}])
    model.script(Reply(text="Hello."))
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run

    with refused(openai.NotFoundError, 404, "No assistant found with id 'asst_x'."):
        client.beta.assistants.retrieve("asst_x")
    with refused(openai.NotFoundError, 404, "No assistant found with id 'asst_x'."):
        client.beta.assistants.update("asst_x", name="n")
    with refused(openai.NotFoundError, 404, "No assistant found with id 'asst_x'."):
        client.beta.assistants.delete("asst_x")
    with refused(openai.NotFoundError, 404, "No assistant found with id 'asst_x'."):
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id="asst_x")
    with refused(openai.NotFoundError, 404, "No thread found with id 'thread_x'."):
        client.beta.threads.retrieve("thread_x")
    with refused(openai.NotFoundError, 404, "No thread found with id 'thread_x'."):
        client.beta.threads.delete("thread_x")
    with refused(openai.NotFoundError, 404, "No thread found with id 'thread_x'."):
        client.beta.threads.messages.list("thread_x")
    with refused(openai.NotFoundError, 404, "No thread found with id 'thread_x'."):
        client.beta.threads.messages.create("thread_x", role="user", content="hi")
    with refused(openai.NotFoundError, 404, "No thread found with id 'thread_x'."):
        client.beta.threads.runs.create(thread_id="thread_x", assistant_id=assistant.id)
    with refused(openai.NotFoundError, 404, "No message found with id 'msg_x'."):
        client.beta.threads.messages.retrieve("msg_x", thread_id=thread.id)
    with refused(openai.NotFoundError, 404, "No message found with id 'msg_x'."):
        client.beta.threads.messages.delete("msg_x", thread_id=thread.id)
    with refused(openai.NotFoundError, 404, "No run found with id 'run_x'."):
        client.beta.threads.runs.retrieve("run_x", thread_id=thread.id)
    with refused(openai.NotFoundError, 404, "No run found with id 'run_x'."):
        client.beta.threads.runs.cancel("run_x", thread_id=thread.id)
    with refused(openai.NotFoundError, 404, "No run found with id 'run_x'."):
        client.beta.threads.runs.steps.list("run_x", thread_id=thread.id)
    with refused(openai.NotFoundError, 404, "No run step found with id 'step_x'."):
        client.beta.threads.runs.steps.retrieve("step_x", thread_id=thread.id, run_id=run.id)
    # An object is found only under its own parent.
    other = client.beta.threads.create()
    with refused(openai.NotFoundError, 404, f"No run found with id '{run.id}'."):
        client.beta.threads.runs.retrieve(run.id, thread_id=other.id)

    # --- malformed bodies ---------------------------------------------------------------------------
    unparsable = "We could not parse the JSON body of your request. Please send valid JSON."
    with refused(openai.BadRequestError, 400, unparsable):
        client.post("/assistants", cast_to=object, content=b'{"model": ', options={"headers": JSON})
    with refused(openai.BadRequestError, 400, "The request body must be a JSON object."):
        client.post("/assistants", cast_to=object, content=b'["model"]', options={"headers": JSON})
    with refused(openai.BadRequestError, 400, "The request body must be a JSON object."):
        client.post("/threads", cast_to=object, content=b"42", options={"headers": JSON})
    with refused(openai.BadRequestError, 400, "Unrecognized request argument supplied: foo", param="foo"):
        client.beta.assistants.create(model="scripted", extra_body={"foo": 1})
    with refused(openai.BadRequestError, 400, "Missing required parameter: 'model'.", param="model"):
        client.post("/assistants", cast_to=object, body={"name": "x"}, options={"headers": BETA})
    with refused(
        openai.BadRequestError, 400, "Missing required parameter: 'assistant_id'.", param="assistant_id"
    ):
        client.post(f"/threads/{thread.id}/runs", cast_to=object, body={}, options={"headers": BETA})
    with refused(
        openai.BadRequestError,
        400,
        "Missing required parameter: 'messages[1].content'.",
        param="messages[1].content",
    ):
        client.beta.threads.create(messages=[{"role": "user", "content": "a"}, {"role": "user"}])  # type: ignore[typeddict-item]
    with refused(
        openai.BadRequestError,
        400,
        re.compile(r"Invalid value for 'tools\[0\]\.function\.name': .+"),
        param="tools[0].function.name",
    ):
        client.beta.assistants.create(
            model="scripted", tools=[{"type": "function", "function": {"name": "has space"}}]
        )
    # A union reports one error per branch; the one about what the client meant is the one shown.
    with refused(
        openai.BadRequestError,
        400,
        "Missing required parameter: 'messages[0].content[0].text'.",
        param="messages[0].content[0].text",
    ):
        client.beta.threads.create(messages=[{"role": "user", "content": [{"type": "text"}]}])  # type: ignore[typeddict-item]
    with refused(
        openai.BadRequestError,
        400,
        "Invalid value for 'tool_choice': tool_choice of type 'function' must name the function.",
        param="tool_choice",
    ):
        client.beta.threads.runs.create(
            thread_id=thread.id,
            assistant_id=assistant.id,
            tool_choice={"type": "function"},  # type: ignore[typeddict-item]
        )
    with refused(
        openai.BadRequestError,
        400,
        "Invalid value for 'metadata': metadata may hold at most 16 key-value pairs.",
        param="metadata",
    ):
        client.beta.assistants.create(model="scripted", metadata={f"k{i}": "v" for i in range(17)})
    with refused(
        openai.BadRequestError, 400, re.compile(r"Invalid value for 'metadata': .*64.*"), param="metadata"
    ):
        client.beta.threads.create(metadata={"k" * 65: "v"})
    with refused(
        openai.BadRequestError, 400, re.compile(r"Invalid value for 'metadata': .*512.*"), param="metadata"
    ):
        client.beta.threads.update(thread.id, metadata={"k": "v" * 513})

    # --- list parameters ----------------------------------------------------------------------------
    with refused(
        openai.BadRequestError,
        400,
        "Invalid value for 'limit': Input should be greater than or equal to 1.",
        param="limit",
    ):
        client.beta.assistants.list(limit=0)
    with refused(
        openai.BadRequestError,
        400,
        "Invalid value for 'limit': Input should be less than or equal to 100.",
        param="limit",
    ):
        client.beta.threads.messages.list(thread.id, limit=101)
    with refused(
        openai.BadRequestError,
        400,
        "Invalid value for 'order': Input should be 'asc' or 'desc'.",
        param="order",
    ):
        client.beta.threads.runs.list(thread.id, order="sideways")  # type: ignore[arg-type]
    with refused(
        openai.BadRequestError, 400, re.compile(r"Invalid value for 'include\[\]': .+"), param="include[]"
    ):
        client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, include=["everything"])  # type: ignore[list-item]

    # --- routes and methods -------------------------------------------------------------------------
    with refused(openai.NotFoundError, 404, "Invalid URL (GET /v1/nope)"):
        client.get("/nope", cast_to=object, options={"headers": BETA})
    with refused(openai.APIStatusError, 405, "Method PUT is not allowed for /v1/assistants."):
        client.put("/assistants", cast_to=object, body={}, options={"headers": BETA})

    # --- run state ----------------------------------------------------------------------------------
    with refused(openai.BadRequestError, 400, 'Runs in status "completed" do not accept tool outputs.'):
        client.beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "call_x", "output": "1"}]
        )
    with refused(openai.BadRequestError, 400, "Cannot cancel run with status 'completed'."):
        client.beta.threads.runs.cancel(run.id, thread_id=thread.id)

    # A run whose model call never answers keeps its thread locked.
    model.script(Reply(hang=True))
    busy = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    wait_for(_status(client, thread.id, busy.id), what="the run to be in progress")
    with refused(
        openai.BadRequestError, 400, f"Can't add messages to {thread.id} while a run {busy.id} is active."
    ):
        client.beta.threads.messages.create(thread.id, role="user", content="more")
    with refused(openai.BadRequestError, 400, f"Thread {thread.id} already has an active run {busy.id}."):
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    with refused(openai.BadRequestError, 400, 'Runs in status "in_progress" do not accept tool outputs.'):
        client.beta.threads.runs.submit_tool_outputs(
            busy.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "call_x", "output": "1"}]
        )
    client.beta.threads.runs.cancel(busy.id, thread_id=thread.id)
    cancelled = client.beta.threads.runs.poll(busy.id, thread_id=thread.id, poll_interval_ms=20)
    assert cancelled.status == "cancelled", cancelled
    with refused(openai.BadRequestError, 400, "Cannot cancel run with status 'cancelled'."):
        client.beta.threads.runs.cancel(busy.id, thread_id=thread.id)

    # Tool outputs must answer exactly the calls the run is waiting for.
    tool: Any = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    caller = client.beta.assistants.create(model="scripted", tools=[tool])
    model.script(Reply(tool_calls=[ToolCall("lookup", {"q": "x"})]), Reply(text="done"))
    waiting = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=caller.id)
    assert waiting.status == "requires_action" and waiting.required_action is not None, waiting
    right = waiting.required_action.submit_tool_outputs.tool_calls[0].id
    for outputs in (
        [{"tool_call_id": "call_wrong", "output": "1"}],
        [{"tool_call_id": right, "output": "1"}, {"tool_call_id": right, "output": "2"}],
        [],
    ):
        with refused(
            openai.BadRequestError, 400, re.compile(r"Expected tool outputs for .+"), param="tool_outputs"
        ):
            client.beta.threads.runs.submit_tool_outputs(
                waiting.id, thread_id=thread.id, tool_outputs=outputs
            )  # type: ignore[arg-type]
    # The refused submissions changed nothing: the right one is still accepted.
    finished = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=waiting.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": right, "output": "1"}]
    )
    assert finished.status == "completed", finished

    # --- the API key --------------------------------------------------------------------------------
    guarded = make_server(api_key="secret")
    with openai.OpenAI(base_url=guarded.url, api_key="wrong", max_retries=0) as intruder:
        with refused(openai.AuthenticationError, 401, "Incorrect API key provided.", code="invalid_api_key"):
            intruder.beta.assistants.list()
        with refused(openai.AuthenticationError, 401, "Incorrect API key provided.", code="invalid_api_key"):
            intruder.models.list()
    missing = httpx.get(f"{guarded.url}/assistants", headers=BETA)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    with openai.OpenAI(base_url=guarded.url, api_key="secret", max_retries=0) as owner:
        assert owner.beta.assistants.list().data == []
