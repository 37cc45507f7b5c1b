"""Crash recovery with real processes: a server is SIGKILLed mid-work and another one started on the
same database (a SQLite file, or a PostgreSQL database) must keep what the first one promised.

- A background response's resumable stream, taken over by the second server, is the same sequence a
  client would have read had nothing happened: every event the first server acknowledged, in order,
  then the rest, with its ``*.done`` events and ``response.completed``, numbered without a gap.
- An upload killed mid-body leaves no ``.partial`` file behind once a server starts again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import database_url
from tests.support import wait_for
from threadline.testing import Reply, ScriptedModel

pytestmark = pytest.mark.timeout(120)

WORDS = 200
TEXT = "".join(f"w{n} " for n in range(WORDS))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """``threadline serve`` (API and worker) as a child process."""

    def __init__(self, directory: Path, database: str, model: ScriptedModel, name: str, **settings: Any):
        self.port = _free_port()
        self.log = directory / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("THREADLINE_")}
        env.update(
            PYTHONUNBUFFERED="1",
            THREADLINE_DATABASE_URL=database,
            THREADLINE_DATA_DIR=str(directory / "data"),
            THREADLINE_UPSTREAM_BASE_URL=model.base_url,
            THREADLINE_LOG_LEVEL="info",
            THREADLINE_WORKER_LEASE_SECONDS="1.5",
            THREADLINE_WORKER_POLL_SECONDS="0.2",
            THREADLINE_SWEEP_INTERVAL_SECONDS="0.2",
        )
        env.update({f"THREADLINE_{key.upper()}": str(value) for key, value in settings.items()})
        args = ["serve", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "threadline.cli", *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.url = f"http://127.0.0.1:{self.port}"

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"{name} exited:\n{self.log.read_text(errors='replace')}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            return False

        wait_for(ready, timeout=60, interval=0.05, what=f"{name} to be ready")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=10) == -signal.SIGKILL

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line.removeprefix("data: "))


def read_stream(base: str, response_id: str, after: int | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"stream": "true"}
    if after is not None:
        params["starting_after"] = after
    with httpx.stream("GET", f"{base}/v1/responses/{response_id}", params=params, timeout=60) as answer:
        assert answer.status_code == 200, answer.read()
        return list(sse_events(answer))


def kill_mid_stream(server: ServerProcess, deltas: int) -> tuple[str, list[dict[str, Any]]]:
    """Start a background response on ``server``, read its live stream until ``deltas`` text deltas
    have come, then SIGKILL the server: the response's id and the events read."""
    created = httpx.post(
        f"{server.url}/v1/responses", json={"model": "scripted", "input": "count", "background": True}
    )
    assert created.status_code == 200, created.text
    response_id: str = created.json()["id"]
    seen: list[dict[str, Any]] = []
    with httpx.stream(
        "GET", f"{server.url}/v1/responses/{response_id}", params={"stream": "true"}, timeout=60
    ) as live:
        for event in sse_events(live):
            seen.append(event)
            if sum(e["type"] == "response.output_text.delta" for e in seen) == deltas:
                break
    server.kill()
    return response_id, seen


def test_a_taken_over_background_stream_is_the_one_no_crash_would_have_given(
    tmp_path: Path, model: ScriptedModel, servers: list[ServerProcess]
) -> None:
    database = database_url(tmp_path)
    # The first answer is slow enough to be killed in the middle; the redo answers the same, quickly.
    model.script(Reply(text=TEXT, delay=0.03), Reply(text=TEXT, delay=0.002))
    first = ServerProcess(tmp_path, database, model, "first")
    servers.append(first)
    # Read the live stream until 70 deltas have arrived, then kill the server mid-answer.
    response_id, seen_before = kill_mid_stream(first, deltas=70)

    second = ServerProcess(tmp_path, database, model, "second")
    servers.append(second)
    events = read_stream(second.url, response_id)
    log = second.log.read_text(errors="replace")

    assert [e["sequence_number"] for e in events] == list(range(len(events))), log
    assert events[: len(seen_before)] == seen_before, (
        "what the first server acknowledged is replayed as it was"
    )
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["response.created", "response.queued", "response.in_progress"]
    assert kinds.count("response.in_progress") == 1
    assert kinds.count("response.output_item.added") == 1
    assert kinds.count("response.content_part.added") == 1
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == TEXT
    assert len(deltas) == WORDS
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ], (kinds[-8:], log)
    assert events[-4]["text"] == TEXT
    item_ids = {e["item_id"] for e in events if "item_id" in e}
    assert item_ids == {events[-2]["item"]["id"]}
    final = events[-1]["response"]
    assert final["status"] == "completed"
    assert [item["id"] for item in final["output"]] == [events[-2]["item"]["id"]]
    assert final["output"][0]["content"][0]["text"] == TEXT

    # Picked up after any event, it is the same sequence's tail.
    middle = len(seen_before) + 5
    assert read_stream(second.url, response_id, after=middle) == events[middle + 1 :]
    assert read_stream(second.url, response_id, after=3) == events[4:]


# --- uploads cut short ---------------------------------------------------------------------------

BOUNDARY = "threadline-test-boundary"


def upload_head(port: int, size: int) -> tuple[socket.socket, bytes]:
    """A connection that has sent an upload's headers and its first part; returns it and the
    file part's opening (the client then sends up to ``size`` bytes of file)."""
    opening = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    closing = f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (
        f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer test-key\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(opening) + size + len(closing)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head)
    return sock, opening


def partials(directory: Path) -> list[Path]:
    return list(directory.glob("**/*.partial"))


def test_an_upload_cut_short_by_a_killed_server_is_removed_at_the_next_start(
    tmp_path: Path, model: ScriptedModel, servers: list[ServerProcess]
) -> None:
    database = database_url(tmp_path)
    first = ServerProcess(tmp_path, database, model, "first")
    servers.append(first)
    sock, opening = upload_head(first.port, 80 * 1024 * 1024)
    with sock:
        sock.sendall(opening + b"x" * (8 * 1024 * 1024))
        files = tmp_path / "data" / "files"
        left = wait_for(
            lambda: [p for p in partials(files) if p.stat().st_size >= 4 * 1024 * 1024],
            timeout=30,
            what="the upload to be written",
        )
        first.kill()
    assert left[0].exists()

    second = ServerProcess(tmp_path, database, model, "second")
    servers.append(second)
    assert partials(files) == []
    # The server still takes uploads.
    answer = httpx.post(
        f"{second.url}/v1/files", data={"purpose": "assistants"}, files={"file": ("a.txt", b"hello")}
    )
    assert answer.status_code == 200, answer.text


def test_an_upload_whose_client_goes_away_leaves_nothing(
    tmp_path: Path, model: ScriptedModel, servers: list[ServerProcess]
) -> None:
    server = ServerProcess(tmp_path, database_url(tmp_path), model, "server")
    servers.append(server)
    files = tmp_path / "data" / "files"
    sock, opening = upload_head(server.port, 40 * 1024 * 1024)
    with sock:
        sock.sendall(opening + b"x" * (4 * 1024 * 1024))
        wait_for(lambda: partials(files), timeout=30, what="the upload to begin")
    wait_for(lambda: not partials(files), timeout=10, what="the partial upload to be removed")
    listed = httpx.get(f"{server.url}/v1/files").json()
    assert listed["data"] == []


def test_start_up_leaves_alone_the_upload_another_process_is_writing(tmp_path: Path) -> None:
    import asyncio

    from threadline.store.blobs import LocalBlobStore

    async def scenario() -> None:
        store = LocalBlobStore(tmp_path / "files")
        release = asyncio.Event()

        async def chunks() -> Any:
            yield b"y" * (2 * 1024 * 1024)  # more than a buffer: written to the partial file
            await release.wait()
            yield b"z"

        writing = asyncio.create_task(store.put("file-abc123", chunks()))
        await asyncio.to_thread(
            wait_for, lambda: [p for p in partials(tmp_path) if p.stat().st_size], 10, 0.02, "a write"
        )
        assert await store.remove_abandoned() == 0
        release.set()
        assert await writing == 2 * 1024 * 1024 + 1
        assert await store.exists("file-abc123")
        assert partials(tmp_path) == []

    asyncio.run(scenario())
