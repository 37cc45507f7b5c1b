"""The embedded model runs in a supervised host process: its crashes and hangs fail runs, not the server.

A real Threadline on the real llama.cpp build serves SmolLM2; the tests kill its model host (SIGKILL,
SIGSEGV) or freeze it (SIGSTOP) in the middle of a streamed run, and point the server at a truncated
GGUF file. Each time the run ends ``failed`` with a ``last_error`` saying what happened, the server
keeps answering, and the next run on the same model completes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.integration.test_embedded import needs_embedded
from tests.support import ThreadlineServer, wait_for
from threadline.config import Settings
from threadline.domain.ports.models import (
    Finish,
    LocalModel,
    ModelRequest,
    ReplyBudget,
    ReplyLimits,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from threadline.providers.host_process import Batcher, missing_cpu_features
from threadline.providers.llamacpp import LlamaCppProvider, default_threads, usable_cores
from threadline.providers.model_host import describe_exit, unbatch

# At temperature 0 SmolLM2 loops on this prompt: a generation that lasts as long as we let it.
LONG_PROMPT = "你好，我购买了一本书和一个电子产品，请帮我计算一下订单总价"
STALL_SECONDS = 10.0  # long enough that a loaded machine never stalls a healthy generation


@pytest.fixture(scope="module")
def host_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadlineServer]:
    directory = tmp_path_factory.mktemp("model-host")
    from tests.conftest import database_url

    settings = Settings(
        data_dir=directory,
        database_url=database_url(directory),
        model_threads=1,
        model_timeout_seconds=STALL_SECONDS,
    )
    server = ThreadlineServer(settings)
    yield server
    server.stop()


@pytest.fixture
def local(host_server: ThreadlineServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=host_server.url, api_key="none", max_retries=0, timeout=120) as client:
        yield client


def the_model(server: ThreadlineServer) -> LlamaCppProvider:
    [model] = server.app.state.router.local_models()
    assert isinstance(model, LlamaCppProvider)
    return model


def streamed_run_hit_by(
    client: openai.OpenAI, server: ThreadlineServer, act: Any
) -> tuple[list[str], Any, int | None]:
    """Stream a long run; at its first text delta call ``act(pid)``. The events, the run, the pid."""
    model = the_model(server)
    assistant = client.beta.assistants.create(model="smollm2")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": LONG_PROMPT}])
    names: list[str] = []
    pid = None
    with client.beta.threads.runs.create(
        thread_id=thread.id,
        assistant_id=assistant.id,
        stream=True,
        temperature=0,
        max_completion_tokens=3000,
    ) as stream:
        for event in stream:
            names.append(event.event)
            if event.event == "thread.message.delta" and pid is None:
                pid = model.host.pid
                assert pid is not None
                act(pid)
    runs = client.beta.threads.runs.list(thread_id=thread.id).data
    return names, runs[0], pid


def next_run_completes(client: openai.OpenAI) -> None:
    assistant = client.beta.assistants.create(model="smollm2")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Say hello."}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        max_completion_tokens=256,
        temperature=0,
        poll_interval_ms=100,
    )
    assert run.status in ("completed", "incomplete"), run.last_error
    answer = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert answer.role == "assistant" and answer.content[0].text.value  # type: ignore[union-attr]


@needs_embedded
@pytest.mark.parametrize(
    ("sig", "said"),
    [(signal.SIGKILL, "SIGKILL"), (signal.SIGSEGV, "SIGSEGV (segmentation fault)")],
)
def test_a_crash_mid_stream_fails_that_run_only(
    local: openai.OpenAI, host_server: ThreadlineServer, sig: signal.Signals, said: str
) -> None:
    names, run, pid = streamed_run_hit_by(local, host_server, lambda pid: os.kill(pid, sig))

    assert run.status == "failed"
    assert run.last_error is not None and run.last_error.code == "server_error"
    assert "model process" in run.last_error.message and said in run.last_error.message
    # The stream saw text, then the failure, and ended (the SDK stops at `done`).
    assert "thread.message.delta" in names
    assert names[-1] == "thread.run.failed", names[-6:]
    assert "thread.run.completed" not in names

    # The server kept answering; the model restarts for the next run, in a new process.
    assert httpx.get(host_server.url.removesuffix("/v1") + "/healthz").status_code == 200
    next_run_completes(local)
    assert the_model(host_server).host.pid not in (None, pid)


@needs_embedded
def test_a_hung_generation_is_killed_after_the_timeout(
    local: openai.OpenAI, host_server: ThreadlineServer
) -> None:
    names, run, _ = streamed_run_hit_by(local, host_server, lambda pid: os.kill(pid, signal.SIGSTOP))

    assert run.status == "failed"
    assert run.last_error is not None and run.last_error.code == "server_error"
    assert f"produced nothing for {STALL_SECONDS:g} s" in run.last_error.message
    assert names[-1] == "thread.run.failed"
    next_run_completes(local)


@needs_embedded
def test_readyz_reports_the_model_and_the_start_up_check_ran(host_server: ThreadlineServer) -> None:
    base = host_server.url.removesuffix("/v1")
    wait_for(lambda: httpx.get(base + "/readyz").status_code == 200, timeout=60, what="the model to load")
    info = the_model(host_server).host.info
    assert info["n_ctx"] == 8192 and info["probe_seconds"] > 0
    metrics = httpx.get(base + "/metrics").text
    assert 'threadline_embedded_model_up{model="SmolLM2-135M-Instruct.Q4_1.gguf"} 1.0' in metrics
    assert "AVX512 = 1" not in info["system_info"] or os.environ.get("THREADLINE_NATIVE_BUILD")


# -- a model that cannot load ----------------------------------------------------------------------


@pytest.fixture
def truncated_gguf(tmp_path: Path) -> Path:
    from threadline.providers.embedded import EmbeddedModelNotFound, default_model_path

    try:
        source = Path(default_model_path())
    except EmbeddedModelNotFound as exc:
        pytest.skip(str(exc))
    target = tmp_path / "truncated.gguf"
    with source.open("rb") as whole:
        target.write_bytes(whole.read(3 << 20))  # 3 MiB of a 98 MB file: header intact, tensors cut off
    return target


@needs_embedded
def test_a_truncated_gguf_gives_one_clear_line_and_failed_runs(truncated_gguf: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "THREADLINE_MODEL_PATH": str(truncated_gguf),
        "THREADLINE_DATA_DIR": str(tmp_path / "data"),
        "THREADLINE_PORT": str(port),
        "THREADLINE_DATABASE_URL": "",
    }
    env.pop("THREADLINE_UPSTREAM_BASE_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "threadline.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def readyz() -> httpx.Response | None:
            try:
                answer = httpx.get(base + "/readyz", timeout=5)
            except httpx.TransportError:
                return None
            return answer if answer.status_code == 503 and "cannot be served" in answer.text else None

        answer = wait_for(readyz, timeout=60, what="/readyz to report the broken model")
        reason = answer.json()["error"]["message"]
        assert str(truncated_gguf) in reason and "corrupted or incomplete" in reason

        with openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0) as client:
            assistant = client.beta.assistants.create(model="smollm2")
            thread = client.beta.threads.create(messages=[{"role": "user", "content": "Hi"}])
            run = client.beta.threads.runs.create_and_poll(
                thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=100
            )
        assert run.status == "failed" and run.last_error is not None
        assert str(truncated_gguf) in run.last_error.message
        assert server.poll() is None, "the server must keep running"
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if str(truncated_gguf) in line and "ERROR" in line]
    assert lines and "corrupted or incomplete" in lines[0], output


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- units -----------------------------------------------------------------------------------------


def test_exits_are_described_for_people() -> None:
    assert describe_exit(-signal.SIGSEGV) == "killed by signal SIGSEGV (segmentation fault)"
    assert "CPU cannot execute" in describe_exit(-signal.SIGILL)
    assert describe_exit(3) == "exited with code 3"


def test_a_build_that_needs_what_the_cpu_lacks_is_caught_before_loading() -> None:
    info = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | AVX512 = 0 | AMX_INT8 = 1 |"
    assert missing_cpu_features(info, "flags\t\t: fpu sse3 avx avx2 f16c fma") == ["AMX_INT8"]
    assert missing_cpu_features(info, "flags\t\t: fpu sse3 avx avx2 f16c fma amx_int8") == []
    assert missing_cpu_features(info, "Features\t: fp asimd") == []  # arm64: nothing to compare


def test_fast_tokens_are_sent_in_batches_in_order_and_the_first_at_once() -> None:
    sent: list[list[dict[str, Any]]] = []
    clock = [0.0]
    batcher = Batcher(sent.append, 0.05, clock=lambda: clock[0])
    batcher.add(TextDelta("Once"))
    assert sent == [[{"kind": "text", "text": "Once"}]]  # the first piece is not held
    for n, piece in enumerate([" upon", " a", " time"], 1):
        clock[0] = 0.02 * n  # 20 ms apart: held until 50 ms have passed since the last send
        batcher.add(TextDelta(piece))
    assert [[e["text"] for e in batch] for batch in sent] == [["Once"], [" upon", " a", " time"]]
    clock[0] = 0.07
    batcher.add(TextDelta(","))  # held: 10 ms after the last send
    batcher.add(Usage(prompt_tokens=3, completion_tokens=5))  # not a fragment: sent with what is held
    assert sent[-1] == [
        {"kind": "text", "text": ","},
        {"kind": "usage", "prompt_tokens": 3, "completion_tokens": 5, "reasoning_tokens": 0},
    ]
    clock[0] = 0.5
    batcher.add(ToolCallDelta(0, name="f"))  # slower than 50 ms: at once
    clock[0] = 0.51
    batcher.add(ToolCallDelta(0, arguments="{}"))
    assert sent[-1] == [{"kind": "tool_call", "index": 0, "arguments": "", "name": "f"}]
    batcher.flush()
    assert sent[-1] == [{"kind": "tool_call", "index": 0, "arguments": "{}", "name": None}]
    batcher.flush()
    assert len(sent) == 5  # nothing held: nothing sent


def test_a_batch_reaches_the_run_as_one_piece_per_fragment_counted_per_token() -> None:
    batch: list[dict[str, Any]] = [
        {"kind": "text", "text": "a"},
        {"kind": "text", "text": "b"},
        {"kind": "tool_call", "index": 0, "name": "f", "arguments": ""},
        {"kind": "tool_call", "index": 0, "arguments": '{"x"'},
        {"kind": "tool_call", "index": 0, "arguments": ": 1}"},
        {"kind": "tool_call", "index": 1, "name": "g", "arguments": ""},
        {"kind": "finish", "reason": "tool_calls"},
    ]
    unlimited = ReplyBudget(ReplyLimits(), ModelRequest(model="m", messages=[]))
    assert unbatch(batch, unlimited) == (
        [
            TextDelta("ab"),
            ToolCallDelta(0, '{"x": 1}', "f"),
            ToolCallDelta(1, "", "g"),
            Finish("tool_calls"),
        ],
        False,
    )
    # Each token of a batch counts: the third piece is one past max_tokens=2, and cuts the reply there.
    two = ReplyBudget(ReplyLimits(), ModelRequest(model="m", messages=[], max_tokens=2))
    pieces = [{"kind": "text", "text": t} for t in ("a", "b", "c", "d")]
    assert unbatch(pieces, two) == ([TextDelta("ab")], True)


def test_the_default_thread_count_leaves_the_server_a_core() -> None:
    assert [default_threads(cores) for cores in (1, 2, 3, 4, 16, 64)] == [1, 1, 2, 3, 8, 8]
    assert usable_cores(affinity=2, cpu_max="max 100000\n") == 2
    assert usable_cores(affinity=16, cpu_max="250000 100000\n") == 3  # a container's --cpus=2.5
    assert usable_cores(affinity=2, cpu_max="800000 100000") == 2  # the affinity allows fewer
    assert usable_cores(affinity=4, cpu_max="") == 4
    assert usable_cores() == len(os.sched_getaffinity(0)) or Path("/sys/fs/cgroup/cpu.max").exists()


def test_the_embedded_provider_declares_itself_local() -> None:
    assert isinstance(LlamaCppProvider("model.gguf", n_threads=1), LocalModel)


def test_the_default_build_is_portable() -> None:
    root = Path(__file__).resolve().parents[2]
    makefile = (root / "Makefile").read_text(encoding="utf-8")
    dockerfile = (root / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    default = re.search(r"^else\nLLAMA_CMAKE_ARGS \?= (.*)$", makefile, re.M)
    assert default is not None and "-DGGML_NATIVE=OFF" in default.group(1)
    assert "-DGGML_AMX" in default.group(1) and "-march=native" not in makefile
    assert (
        'LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF' in dockerfile and "--no-binary llama-cpp-python" in dockerfile
    )


# -- threadline doctor -----------------------------------------------------------------------------


def doctor(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "threadline.cli", "doctor"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@needs_embedded
def test_doctor_reports_the_build_and_each_model_speed() -> None:
    result = doctor({"THREADLINE_MODEL_THREADS": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"llama-cpp-python \d+\.\d+\.\d+; CPU : .*AVX2 = 1", result.stdout), result.stdout
    rate = re.search(r"([\d.]+) tokens/s", result.stdout)
    assert rate is not None and float(rate.group(1)) > 1, result.stdout


@needs_embedded
def test_doctor_names_a_model_that_cannot_load(truncated_gguf: Path) -> None:
    result = doctor({"THREADLINE_MODEL_PATH": str(truncated_gguf)})
    assert result.returncode == 1
    assert f"cannot serve: The model {truncated_gguf} cannot be served" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
