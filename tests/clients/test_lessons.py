"""The seed lesson's two programs, run unchanged as subprocesses against a real Threadline.

Each program runs byte for byte as written, with only ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` in
its environment, once with the venv's ``openai`` and once with an ``openai`` 1.x installed apart
(``make test`` installs it; see the Makefile). The server declares the lesson's assistant from the
seed's ``assistants.yaml``; the model is the scripted model, answering like a real one would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from tests.support import SEED, ThreadlineServer
from threadline.testing import Reply, ScriptedModel, ToolCall

LESSON_ASSISTANT = "asst_aT4hurwd35eSave7qrt2t6eJ"
SIMPLE_RUN = SEED / "lesson_02_simple_run.py"
FUNCTION_CALL = SEED / "lesson_02_function_call.py"
ASSISTANTS_FILE = SEED / "assistants.yaml"

# Where `make test` installs the second SDK generation: beside the venv's own packages.
SDK_1X = Path(sys.prefix) / "sdk-1x"

GREETING = "你好!我是订单价格计算器,可以帮你计算购物车里商品的总价。"
ORDER = {"items": [{"item_type": "书籍", "quantity": 1}, {"item_type": "电子产品", "quantity": 1}]}

# Prints the SDK version that really got imported, then runs the lesson file as `python FILE` would.
HARNESS = (
    "import runpy, sys, openai; print('SDK', openai.__version__, flush=True); "
    "runpy.run_path(sys.argv[1], run_name='__main__')"
)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def lesson_responder(body: dict[str, Any]) -> Reply:
    """A model that behaves like the lesson's: calls the order-total function when asked for a total,
    reports the total the function returned, and otherwise introduces itself."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    offered = {
        tool["function"]["name"]
        for tool in body.get("tools") or []
        if tool.get("type") == "function" and isinstance(tool.get("function"), dict)
    }
    if last.get("role") == "tool":
        total = json.loads(_text(last.get("content")))["total"]
        return Reply(text=f"订单总价为{total}元")
    if (
        last.get("role") == "user"
        and "calculate_order_total" in offered
        and "总价" in _text(last.get("content"))
    ):
        return Reply(tool_calls=[ToolCall("calculate_order_total", ORDER)])
    return Reply(text=GREETING)


@dataclass(frozen=True, slots=True)
class Sdk:
    name: str
    path: Path | None
    """Put first on PYTHONPATH; ``None`` runs with the venv's own ``openai``."""

    def expected(self, version: str) -> bool:
        if self.path is None:
            return version == openai.__version__
        return version.split(".")[0] == "1"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(params=["current", "1.x"])
def sdk(request: pytest.FixtureRequest) -> Sdk:
    if request.param == "current":
        return Sdk(f"openai {openai.__version__}", None)
    if not (SDK_1X / "openai" / "__init__.py").is_file():
        message = f"openai 1.x is not installed in {SDK_1X}: `make test` installs it"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return Sdk("openai 1.x", SDK_1X)


@pytest.fixture
def lesson_server(
    make_server: Callable[..., ThreadlineServer], model: ScriptedModel
) -> Iterator[ThreadlineServer]:
    if not SIMPLE_RUN.is_file() or not FUNCTION_CALL.is_file() or not ASSISTANTS_FILE.is_file():
        pytest.skip(f"the seed lesson is not beside the repository (looked in {SEED})")
    previous = model.responder
    model.responder = lesson_responder
    try:
        yield make_server(assistants_file=str(ASSISTANTS_FILE))
    finally:
        model.responder = previous


@pytest.fixture
def lesson_client(lesson_server: ThreadlineServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=lesson_server.url, api_key="test-key", max_retries=0) as sdk:
        yield sdk


def run_program(program: Path, server: ThreadlineServer, sdk: Sdk, cwd: Path, timeout: float = 60) -> str:
    """Run ``program`` unchanged; returns its stdout after checking the exit code and the SDK version."""
    env = {"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": "sk-lesson"}
    if sdk.path is not None:
        env["PYTHONPATH"] = str(sdk.path)
    # cwd is an empty directory, so load_dotenv() in the lesson finds no stray .env there.
    done = subprocess.run(
        [sys.executable, "-c", HARNESS, str(program)], env=env, cwd=cwd, capture_output=True, timeout=timeout
    )
    out = done.stdout.decode("utf-8", errors="replace")
    err = done.stderr.decode("utf-8", errors="replace")
    assert done.returncode == 0, (
        f"{program.name} exited {done.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"
    )
    first, _, rest = out.partition("\n")
    assert first.startswith("SDK "), out
    version = first.removeprefix("SDK ").strip()
    assert sdk.expected(version), f"{sdk.name} was meant to run, but openai {version} did"
    return rest


def declared_assistant() -> dict[str, Any]:
    entries = yaml.safe_load(ASSISTANTS_FILE.read_text(encoding="utf-8"))
    (entry,) = [e for e in entries if e["id"] == LESSON_ASSISTANT]
    return dict(entry)


def test_simple_run_program(
    lesson_server: ThreadlineServer,
    lesson_client: openai.OpenAI,
    model: ScriptedModel,
    sdk: Sdk,
    tmp_path: Path,
) -> None:
    out = run_program(SIMPLE_RUN, lesson_server, sdk, tmp_path)

    # The retrieved assistant is the declared one.
    declared = declared_assistant()
    assert f"Assistant(id='{LESSON_ASSISTANT}'" in out, out
    assert f"name='{declared['name']}'" in out, out
    thread_id = re.search(r"Thread\(id='(thread_\w+)'", out)
    message_id = re.search(r"Message\(id='(msg_\w+)'", out)
    run_id = re.search(r"读取Run的状态 Run\(id='(run_\w+)'", out)
    assert thread_id and message_id and run_id, out

    # The last poll saw the run completed, and the final answer is the model's text.
    polls = out.split("Run的轮询信息:")
    assert len(polls) >= 2, out
    assert f"Run(id='{run_id[1]}'" in polls[-1] and "status='completed'" in polls[-1], polls[-1]
    head, marker, answers = out.partition("下面打印最终的Assistant回应:")
    assert marker, out
    assert f"value='{GREETING}'" in answers, answers
    assert "全部的message" in head

    # Server side: the thread holds exactly the program's message and the assistant's answer.
    messages = lesson_client.beta.threads.messages.list(thread_id=thread_id[1], order="asc").data
    assert [(m.id, m.role) for m in messages][:1] == [(message_id[1], "user")]
    assert [(m.role, m.content[0].text.value) for m in messages if m.content[0].type == "text"] == [
        ("user", "你好,请问你能做什么。"),
        ("assistant", GREETING),
    ]
    assert messages[1].run_id == run_id[1] and messages[1].assistant_id == LESSON_ASSISTANT
    run = lesson_client.beta.threads.runs.retrieve(thread_id=thread_id[1], run_id=run_id[1])
    assert run.status == "completed" and run.assistant_id == LESSON_ASSISTANT
    assert run.model == declared["model"] and run.instructions == declared["instructions"]

    # The model was asked with the declared instructions and the declared function.
    (request,) = model.requests
    assert request["messages"][0] == {"role": "system", "content": declared["instructions"]}
    assert [t["function"]["name"] for t in request["tools"]] == ["calculate_order_total"]


def test_function_call_program(
    lesson_server: ThreadlineServer,
    lesson_client: openai.OpenAI,
    model: ScriptedModel,
    sdk: Sdk,
    tmp_path: Path,
) -> None:
    out = run_program(FUNCTION_CALL, lesson_server, sdk, tmp_path)
    lines = out.splitlines()

    assert "Run的状态: requires_action" in lines, out
    calls = [line for line in lines if line.startswith("调用本地函数 ")]
    assert calls == [f"调用本地函数 calculate_order_total({ORDER}) -> 250"], out
    assert "最终状态: completed" in lines, out
    question = "你好，我购买了一本书和一个电子产品，请帮我计算一下订单总价"
    assert lines[-2:] == [f"user : {question}", "assistant : 订单总价为250元"], out

    # Server side: the program never prints its thread id, but it made the only thread there is.
    threads = lesson_client.get(
        "/threads", cast_to=object, options={"headers": {"OpenAI-Beta": "assistants=v2"}}
    )
    assert isinstance(threads, dict), threads
    (thread,) = threads["data"]
    messages = lesson_client.beta.threads.messages.list(thread_id=thread["id"], order="asc").data
    assert [(m.role, m.content[0].text.value) for m in messages if m.content[0].type == "text"] == [
        ("user", question),
        ("assistant", "订单总价为250元"),
    ]
    (run,) = lesson_client.beta.threads.runs.list(thread_id=thread["id"]).data
    assert run.status == "completed" and run.assistant_id == LESSON_ASSISTANT
    steps = lesson_client.beta.threads.runs.steps.list(thread_id=thread["id"], run_id=run.id, order="asc")
    assert [s.type for s in steps.data] == ["tool_calls", "message_creation"]
    details = steps.data[0].step_details
    assert details.type == "tool_calls"
    (call,) = details.tool_calls
    assert call.type == "function" and call.function.name == "calculate_order_total"
    assert json.loads(call.function.arguments) == ORDER
    assert call.function.output is not None and json.loads(call.function.output) == {"total": 250}

    # The model got the function's output back as a tool message answering its own call.
    first, second = model.requests
    assert first["messages"][-1]["role"] == "user"
    assert second["messages"][-1] == {
        "role": "tool",
        "tool_call_id": call.id,
        "content": json.dumps({"total": 250}),
    }
