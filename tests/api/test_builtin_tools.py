"""The shipped built-in tools in runs: code_interpreter in the sandbox, file_search over vector stores.

The model is the scripted chat model, calling the tools as the functions they are offered as; the
tools are the real ones (bubblewrap kernels, the embedded e5 retrieval stack), and the client is the
official SDK.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
from openai import AssistantEventHandler
from openai.types.beta import AssistantStreamEvent
from openai.types.beta.threads import ImageFile
from openai.types.beta.threads.runs import ToolCall, ToolCallDelta

from tests.api.test_streaming import collapse, node_sdk  # noqa: F401  (the fixture)
from tests.support import TEXT_RUN, ThreadlineServer, run_node
from threadline.testing import Reply, ScriptedModel
from threadline.testing import ToolCall as Call
from threadline.tools.code_interpreter import RESTARTED

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
def test_files_the_code_writes_come_back_in_the_answer_as_openai_s_did(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Tabulate and chart it."}])
    code = (
        "import matplotlib.pyplot as plt, pandas as pd\n"
        "table = pd.DataFrame({'month': [1, 2], 'amount': [100, 250]})\n"
        "table.to_csv('/mnt/data/储蓄.csv', index=False)\n"
        "open('/mnt/data/notes.txt', 'w').write('kept')\n"
        "plt.plot(table['month'], table['amount'])\nplt.show()"
    )
    answer = (
        "[Download the table](sandbox:/mnt/data/储蓄.csv); the notes are in /mnt/data/notes.txt. "
        "/mnt/data/other.csv and sandbox:/mnt/data/notes.txt.bak were not written."
    )
    model.script(Reply(tool_calls=[Call("code_interpreter", {"code": code})]), Reply(text=answer))
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        stream.until_done()
        (streamed,) = stream.get_final_messages()
    told = model.requests[-1]["messages"][-1]["content"]
    assert "link it for the user as sandbox:/mnt/data/储蓄.csv" in told

    message = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert message.model_dump() == streamed.model_dump()
    text, image = message.content
    assert text.type == "text" and text.text.value == answer
    links = text.text.annotations
    assert [(a.type, a.text) for a in links] == [
        ("file_path", "sandbox:/mnt/data/储蓄.csv"),
        ("file_path", "/mnt/data/notes.txt"),
    ]
    for link in links:
        assert answer[link.start_index : link.end_index] == link.text
    table, notes = (client.files.content(a.file_path.file_id).read() for a in links)  # type: ignore[union-attr]
    assert table == b"month,amount\n1,100\n2,250\n" and notes == b"kept"
    assert client.files.retrieve(links[0].file_path.file_id).filename == "储蓄.csv"  # type: ignore[union-attr]

    # The chart is an image_file part of the answer: the step's image output, served by the Files API.
    step = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=message.run_id or "").data[-1]
    (call,) = step.step_details.tool_calls  # type: ignore[union-attr]
    (chart,) = [o for o in call.code_interpreter.outputs if o.type == "image"]  # type: ignore[union-attr]
    assert image.type == "image_file" and image.image_file.file_id == chart.image.file_id  # type: ignore[union-attr]
    assert client.files.content(image.image_file.file_id).read().startswith(PNG)  # type: ignore[union-attr]

    # On the next run the model sees its answer as text, not as an image someone attached.
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="Thanks")
    model.script(Reply(text="You're welcome"))
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error
    assert {"role": "assistant", "content": answer} in model.requests[-1]["messages"]


@needs_sandbox
def test_a_thread_whose_kernel_is_gone_is_told_it_started_afresh(
    make_server: Callable[..., ThreadlineServer], model: ScriptedModel
) -> None:
    first = make_server()
    with openai.OpenAI(base_url=first.url, api_key="test-key", max_retries=0) as sdk:
        assistant = sdk.beta.assistants.create(model="gpt-4o", tools=[{"type": "code_interpreter"}])
        thread = sdk.beta.threads.create(messages=[{"role": "user", "content": "Keep x."}])
        told = code_run(sdk, model, thread.id, assistant.id, "x = 41\nprint(x)")
        assert "41" in told and RESTARTED not in told  # a thread's first code: nothing was lost
    first.stop()  # its kernels stop with it

    # A new server on the same database: the thread ran code before, so its fresh kernel is news.
    # (The thread's kernel holder is gone: after the affinity moment the new worker takes the run.)
    second = make_server(database_url=first.settings.database_url)
    with openai.OpenAI(base_url=second.url, api_key="test-key", max_retries=0) as sdk:
        told = code_run(sdk, model, thread.id, assistant.id, "print('x' in globals())")
    assert told.startswith(RESTARTED) and "False" in told


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
    code = "open('/mnt/data/answer.txt', 'w').write('42')\nprint(6 * 7)"
    answer = "42 (sandbox:/mnt/data/answer.txt)"
    model.script(Reply(tool_calls=[Call("code_interpreter", {"code": code})]), Reply(text=answer))
    with client.responses.stream(
        model="gpt-4o",
        input="6 times 7?",
        tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
    ) as stream:
        events = list(stream)
        response = stream.get_final_response()
    kinds = [event.type for event in events]
    call, message = response.output
    assert call.type == "code_interpreter_call" and call.code == code
    assert call.outputs and call.outputs[0].type == "logs" and call.outputs[0].logs.strip() == "42"  # type: ignore[union-attr]
    assert message.type == "message" and response.output_text == answer
    (text,) = message.content
    (link,) = text.annotations  # type: ignore[union-attr]
    assert link.type == "file_path" and link.index == len(answer) - 1
    assert client.files.content(link.file_id).read() == b"42"
    assert "response.code_interpreter_call_code.done" in kinds
    # The code streams in pieces, as OpenAI's did, before the whole of it.
    pieces = [e.delta for e in events if e.type == "response.code_interpreter_call_code.delta"]
    assert len(pieces) >= 2 and "".join(pieces) == code
    assert kinds.index("response.code_interpreter_call_code.done") > kinds.index(
        "response.code_interpreter_call_code.delta"
    )
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


@needs_sandbox
def test_a_chart_with_no_words_after_it_still_ends_the_run(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "just the chart"}])
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2], [3, 4])\nplt.show()"
    model.script(Reply(tool_calls=[Call("code_interpreter", {"code": code})]), Reply(text=""))
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error
    answer = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert [part.type for part in answer.content] == ["text", "image_file"]


# --- the SDKs' stream handlers following a chart being drawn ---------------------------------------

CHART = (
    "import matplotlib.pyplot as plt\n"
    "months = [1, 2, 3, 4]\n"
    "plt.plot(months, [100, 250, 420, 610], marker='o')\n"
    "plt.title('Savings')\n"
    "plt.show()"
)
CHART_RUN = [
    *TEXT_RUN[:3],
    "thread.run.step.created",
    "thread.run.step.in_progress",
    "thread.run.step.delta",
    "thread.run.step.completed",
    *TEXT_RUN[3:8],
    "thread.message.delta:image_file",
    *TEXT_RUN[8:],
]
"""A code_interpreter run as the reference notes order it (§6.2 5.), the chart's part streamed in a
message delta of its own after the text's."""


class ChartRecorder(AssistantEventHandler):
    """What the documented handler's tool-call and image callbacks see, in stream order."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.created: list[ToolCall] = []
        self.inputs: list[str] = []
        self.output_deltas: list[ToolCallDelta] = []
        self.images: list[str] = []

    def on_event(self, event: AssistantStreamEvent) -> None:
        image = event.event == "thread.message.delta" and any(
            part.type == "image_file"
            for part in event.data.delta.content or []  # type: ignore[union-attr]
        )
        self.names.append(f"{event.event}:image_file" if image else event.event)

    def on_tool_call_created(self, tool_call: ToolCall) -> None:
        self.created.append(tool_call.model_copy(deep=True))

    def on_tool_call_delta(self, delta: ToolCallDelta, snapshot: ToolCall) -> None:
        assert delta.type == "code_interpreter" and delta.code_interpreter is not None
        if delta.code_interpreter.input is not None:
            self.inputs.append(delta.code_interpreter.input)
        if delta.code_interpreter.outputs:
            self.output_deltas.append(delta.model_copy(deep=True))

    def on_image_file_done(self, image_file: ImageFile) -> None:
        self.images.append(image_file.file_id)
        self.names.append("on_image_file_done")


def chart_thread(client: openai.OpenAI, model: ScriptedModel, answer: str) -> tuple[str, str]:
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Chart my savings."}])
    model.script(Reply(tool_calls=[Call("code_interpreter", {"code": CHART})]), Reply(text=answer))
    return assistant.id, thread.id


def chart_of(client: openai.OpenAI, thread_id: str) -> str:
    """The id of the chart the thread's last run drew, from its stored step; checked to be a PNG."""
    run = client.beta.threads.runs.list(thread_id=thread_id).data[0]
    step = client.beta.threads.runs.steps.list(thread_id=thread_id, run_id=run.id, order="asc").data[0]
    (call,) = step.step_details.tool_calls  # type: ignore[union-attr]
    (image,) = [o for o in call.code_interpreter.outputs if o.type == "image"]  # type: ignore[union-attr]
    file_id = image.image.file_id  # type: ignore[union-attr]
    assert client.files.content(file_id).read().startswith(PNG)
    return file_id


@needs_sandbox
def test_the_python_handler_sees_the_code_in_pieces_and_the_chart(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    assistant_id, thread_id = chart_thread(client, model, "Here is your chart.")
    recorder = ChartRecorder()
    with client.beta.threads.runs.stream(
        thread_id=thread_id, assistant_id=assistant_id, event_handler=recorder
    ) as stream:
        stream.until_done()
        (message,) = stream.get_final_messages()
    assert stream.get_final_run().status == "completed"
    chart = chart_of(client, thread_id)

    # Created with its id and type only; the code follows in pieces, in order, then the chart.
    (created,) = recorder.created
    assert created.type == "code_interpreter" and created.id.startswith("call_")
    assert created.code_interpreter.model_dump() == {"input": "", "outputs": []}  # type: ignore[union-attr]
    assert len(recorder.inputs) >= 2 and "".join(recorder.inputs) == CHART
    outputs = [o for d in recorder.output_deltas for o in d.code_interpreter.outputs or []]  # type: ignore[union-attr]
    assert [o.image.file_id for o in outputs if o.type == "image"] == [chart]  # type: ignore[union-attr]

    # The chart's image_file part was streamed before the message completed; the handler said so.
    assert recorder.images == [chart]
    assert collapse([n for n in recorder.names if n != "on_image_file_done"]) == CHART_RUN, recorder.names
    assert recorder.names.index("on_image_file_done") == recorder.names.index("thread.message.completed") + 1
    assert [part.type for part in message.content] == ["text", "image_file"]
    stored = client.beta.threads.messages.retrieve(message.id, thread_id=thread_id)
    assert stored.content == message.content


@needs_sandbox
def test_a_chart_with_no_words_still_streams_its_part_at_its_index(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    assistant_id, thread_id = chart_thread(client, model, "")
    recorder = ChartRecorder()
    with client.beta.threads.runs.stream(
        thread_id=thread_id, assistant_id=assistant_id, event_handler=recorder
    ) as stream:
        stream.until_done()
        (message,) = stream.get_final_messages()
    assert recorder.images == [chart_of(client, thread_id)]
    # The empty text part comes first, as in the stored message, so the image is at index 1 for both.
    stored = client.beta.threads.messages.retrieve(message.id, thread_id=thread_id)
    assert [part.type for part in stored.content] == ["text", "image_file"]
    assert stored.content == message.content


@needs_sandbox
@pytest.mark.timeout(120)
def test_the_node_handler_sees_the_code_in_pieces_and_the_chart(
    node_sdk: Path,  # noqa: F811
    server: ThreadlineServer,
    client: openai.OpenAI,
    model: ScriptedModel,
) -> None:
    model.script(Reply(tool_calls=[Call("code_interpreter", {"code": CHART})]), Reply(text="Your chart."))
    seen = run_node(node_sdk, "chart_run.mjs", server.url, timeout=90)
    assert seen["status"] == "completed"
    chart = chart_of(client, seen["thread_id"])

    (created,) = seen["created"]
    assert created["type"] == "code_interpreter" and created["id"].startswith("call_")
    assert created["code_interpreter"] == {"input": "", "outputs": []}
    inputs = [d["code_interpreter"]["input"] for d in seen["deltas"] if "input" in d["code_interpreter"]]
    assert len(inputs) >= 2 and "".join(inputs) == CHART
    outputs = [o for d in seen["deltas"] for o in d["code_interpreter"].get("outputs", [])]
    assert [o["image"]["file_id"] for o in outputs if o["type"] == "image"] == [chart]

    assert seen["images"] == [chart]
    events = seen["events"]
    assert collapse([e for e in events if e != "imageFileDone"]) == CHART_RUN, events
    assert events.index("imageFileDone") == events.index("thread.message.completed") + 1
    assert [part["type"] for part in seen["content"]] == ["text", "image_file"]
