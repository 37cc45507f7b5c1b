"""The shipped built-in tools in runs: code_interpreter in the sandbox, file_search over vector stores.

The model is the scripted chat model, calling the tools as the functions they are offered as; the
tools are the real ones (bubblewrap kernels, the embedded e5 retrieval stack), and the client is the
official SDK.
"""

from __future__ import annotations

import os
import shutil

import openai
import pytest

from threadline.testing import Reply, ScriptedModel
from threadline.testing import ToolCall as Call

needs_sandbox = pytest.mark.skipif(
    shutil.which("bwrap") is None and not os.environ.get("CI"),
    reason="bubblewrap is not installed (`make test` installs it)",
)

PNG = b"\x89PNG\r\n\x1a\n"


def code_run(
    client: openai.OpenAI, model: ScriptedModel, thread_id: str, assistant_id: str, code: str
) -> str:
    """Run the thread with a model that runs ``code`` then answers; what the tool told the model."""
    model.script(Reply(tool_calls=[Call("code_interpreter", {"code": code})]), Reply(text="done"))
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
    assert run.status == "completed", run.last_error
    told = model.requests[-1]["messages"][-1]
    assert told["role"] == "tool"
    return str(told["content"])


@needs_sandbox
def test_code_runs_in_the_threads_kernel_and_keeps_its_state(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "退休金要存多少？"}])
    assert "42" in code_run(client, model, thread.id, assistant.id, "x = 6 * 7\nprint(x)")
    # A second run on the thread: the variable is still there.
    assert "43" in code_run(client, model, thread.id, assistant.id, "print(x + 1)")

    steps = client.beta.threads.runs.steps.list(
        thread_id=thread.id, run_id=client.beta.threads.runs.list(thread_id=thread.id).data[0].id, order="asc"
    ).data
    (call,) = steps[0].step_details.tool_calls  # type: ignore[union-attr]
    assert call.type == "code_interpreter"
    assert call.code_interpreter.input == "print(x + 1)"  # type: ignore[union-attr]
    assert [o.type for o in call.code_interpreter.outputs] == ["logs"]  # type: ignore[union-attr]
    assert call.code_interpreter.outputs[0].logs.strip() == "43"  # type: ignore[union-attr]


@needs_sandbox
def test_a_chart_with_chinese_labels_comes_back_as_an_image_file(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "画一张图"}])
    code = (
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [2, 4, 8])\nplt.title('每月储蓄')\nplt.xlabel('月份')\nplt.show()"
    )
    told = code_run(client, model, thread.id, assistant.id, code)
    assert "image" in told
    run = client.beta.threads.runs.list(thread_id=thread.id).data[0]
    step = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data[0]
    (call,) = step.step_details.tool_calls  # type: ignore[union-attr]
    images = [o for o in call.code_interpreter.outputs if o.type == "image"]  # type: ignore[union-attr]
    assert len(images) == 1
    file_id = images[0].image.file_id  # type: ignore[union-attr]
    assert client.files.retrieve(file_id).purpose == "assistants_output"
    data = client.files.content(file_id).read()
    assert data.startswith(PNG) and len(data) > 5000


@needs_sandbox
def test_an_attached_csv_is_read_from_mnt_data(client: openai.OpenAI, model: ScriptedModel) -> None:
    csv = client.files.create(file=("savings.csv", b"month,amount\n1,100\n2,250\n"), purpose="assistants")
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(
        messages=[
            {
                "role": "user",
                "content": "Sum the amounts.",
                "attachments": [{"file_id": csv.id, "tools": [{"type": "code_interpreter"}]}],
            }
        ]
    )
    code = "import pandas as pd\nprint(pd.read_csv('/mnt/data/savings.csv')['amount'].sum())"
    assert "350" in code_run(client, model, thread.id, assistant.id, code)


def test_file_search_finds_the_right_file_and_the_model_sees_numbered_results(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    store = client.vector_stores.create(name="handbook")
    client.vector_stores.file_batches.upload_and_poll(
        vector_store_id=store.id,
        files=[
            ("retirement.md", "养老金计划：每月缴纳工资的百分之八，公司再补充百分之四。".encode()),
            ("holidays.md", b"Employees get 25 days of paid holiday a year, plus public holidays."),
        ],
    )
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_store_ids": [store.id]}},
    )
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "每月缴纳多少养老金？"}])
    model.script(
        Reply(tool_calls=[Call("file_search", {"query": "每月缴纳养老金"})]),
        Reply(text="百分之八【0:0†retirement.md】。"),
    )
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error
    told = model.requests[-1]["messages"][-1]
    assert told["role"] == "tool" and told["content"].startswith("【0:0†retirement.md】")
    assert "百分之八" in told["content"]

    step = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data[0]
    (call,) = step.step_details.tool_calls  # type: ignore[union-attr]
    assert call.type == "file_search"
    results = call.file_search.results  # type: ignore[union-attr]
    assert results and results[0].file_name == "retirement.md"

    # The model's citation is a file_citation annotation over the marker, as OpenAI's were.
    answer = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    text = answer.content[0].text  # type: ignore[union-attr]
    (citation,) = text.annotations
    assert citation.type == "file_citation"
    assert citation.text == "【0:0†retirement.md】"
    assert text.value[citation.start_index : citation.end_index] == citation.text
    assert citation.file_citation.file_id == results[0].file_id  # type: ignore[union-attr]


def test_file_search_through_the_responses_api(client: openai.OpenAI, model: ScriptedModel) -> None:
    store = client.vector_stores.create(name="handbook")
    client.vector_stores.file_batches.upload_and_poll(
        vector_store_id=store.id,
        files=[
            ("retirement.md", "养老金计划：每月缴纳工资的百分之八，公司再补充百分之四。".encode()),
            ("holidays.md", b"Employees get 25 days of paid holiday a year, plus public holidays."),
        ],
    )
    model.script(
        Reply(tool_calls=[Call("file_search", {"query": "每月缴纳养老金"})]),
        Reply(text="百分之八【0:0†retirement.md】。"),
    )
    response = client.responses.create(
        model="gpt-4o",
        input="每月缴纳多少养老金？",
        tools=[{"type": "file_search", "vector_store_ids": [store.id]}],
        include=["file_search_call.results"],
    )
    assert response.status == "completed", response.error
    search, answer = response.output
    assert search.type == "file_search_call" and search.status == "completed"
    assert search.queries == ["每月缴纳养老金"]
    assert search.results and search.results[0].filename == "retirement.md"
    assert "百分之八" in (search.results[0].text or "")
    assert answer.type == "message"
    (citation,) = answer.content[0].annotations  # type: ignore[union-attr]
    assert citation.type == "file_citation" and citation.filename == "retirement.md"
    assert citation.file_id == search.results[0].file_id


def test_file_search_names_only_the_projects_stores(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model="gpt-4o", input="x", tools=[{"type": "file_search", "vector_store_ids": ["vs_nope"]}]
        )
    assert "vs_nope" in caught.value.message


@needs_sandbox
def test_code_interpreter_through_the_responses_api(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(tool_calls=[Call("code_interpreter", {"code": "print(6 * 7)"})]), Reply(text="42"))
    with client.responses.stream(
        model="gpt-4o",
        input="6 times 7?",
        tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
    ) as stream:
        kinds = [event.type for event in stream]
        response = stream.get_final_response()
    call, answer = response.output
    assert call.type == "code_interpreter_call" and call.code == "print(6 * 7)"
    assert call.outputs and call.outputs[0].type == "logs" and call.outputs[0].logs.strip() == "42"  # type: ignore[union-attr]
    assert answer.type == "message" and response.output_text == "42"
    assert "response.code_interpreter_call_code.done" in kinds
    assert "response.code_interpreter_call.completed" in kinds
    assert model.requests[-1]["messages"][-1]["role"] == "tool"


def test_citations_are_streamed(client: openai.OpenAI, model: ScriptedModel) -> None:
    store = client.vector_stores.create(name="handbook")
    client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("holidays.md", b"Employees get 25 days of paid holiday a year.")
    )
    search = [Call("file_search", {"query": "paid holiday"})]
    answer = "25 days【0:0†holidays.md】."
    model.script(Reply(tool_calls=search), Reply(text=answer), Reply(tool_calls=search), Reply(text=answer))
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_store_ids": [store.id]}},
    )
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "How many holidays?"}])
    streamed = []
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        for event in stream:
            if event.event == "thread.message.delta":
                for part in event.data.delta.content or []:
                    if part.type == "text" and part.text is not None:
                        streamed += part.text.annotations or []
    (citation,) = streamed
    assert citation.type == "file_citation" and citation.text == "【0:0†holidays.md】"
    assert answer[citation.start_index : citation.end_index] == citation.text  # type: ignore[union-attr]

    with client.responses.stream(
        model="gpt-4o", input="How many?", tools=[{"type": "file_search", "vector_store_ids": [store.id]}]
    ) as responses_stream:
        added = [e for e in responses_stream if e.type == "response.output_text.annotation.added"]
    (annotated,) = added
    assert annotated.annotation.type == "file_citation"  # type: ignore[union-attr]
    assert annotated.annotation.filename == "holidays.md"  # type: ignore[union-attr]
