"""Test helpers: a real Threadline (uvicorn) served from a background thread, and waiting on conditions."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI

from threadline.app import create_app
from threadline.config import Settings
from threadline.store.database import migrate

T = TypeVar("T")

# A text run's stream (notes §6.2), with each run of deltas collapsed to one name.
TEXT_RUN = [
    "thread.run.created",
    "thread.run.queued",
    "thread.run.in_progress",
    "thread.run.step.created",
    "thread.run.step.in_progress",
    "thread.message.created",
    "thread.message.in_progress",
    "thread.message.delta",
    "thread.message.completed",
    "thread.run.step.completed",
    "thread.run.completed",
]

# The lesson's function, as its assistant declares it.
ORDER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "calculate_order_total",
        "description": "根据多个商品类型和数量计算订单总价",
        "parameters": {
            "type": "object",
            "properties": {
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "item_type": {
                                "type": "string",
                                "description": "商品类型,例如:书籍,文具,电子产品",
                            },
                            "quantity": {"type": "integer", "description": "商品数量"},
                        },
                        "required": ["item_type", "quantity"],
                    },
                }
            },
            "required": ["items"],
        },
    },
}

SEED = Path(__file__).resolve().parents[1].parent / "shared" / "seed"


def wait_for(
    check: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Call ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(interval)


class ThreadlineServer:
    """``create_app(settings)`` under a real uvicorn, on a free port, in a background thread."""

    def __init__(self, settings: Settings, **app_options: Any) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port: int = sock.getsockname()[1]
        self.settings = settings.replace(port=self.port)
        migrate(self.settings.effective_database_url)
        self.app: FastAPI = create_app(self.settings, **app_options)
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, log_level="warning", timeout_graceful_shutdown=5
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
        self._thread.start()
        wait_for(lambda: self.server.started, timeout=20, what="threadline to start")

    def _serve(self, sock: socket.socket) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[sock]))
        finally:
            sock.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=20)


POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_available() -> bool:
    return asyncio.run(_pg_ping())


async def _pg_ping() -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


def create_postgres_database() -> str:
    """A fresh, empty database for one test server; returns its SQLAlchemy URL."""
    import uuid

    name = f"threadline_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


def drop_postgres_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _pg_admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


NODE_DIR = Path(__file__).resolve().parent / "node"


def install_node_sdk() -> Path:
    """``tests/node`` with its dependencies installed; skips only outside CI when Node is missing."""
    import pytest

    if shutil.which("node") is None or shutil.which("npm") is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail("node and npm are required under CI: the Node SDK test must run there")
        pytest.skip("node/npm not installed: the Node SDK test needs them")
    installed = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_DIR,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, f"npm install failed:\n{installed.stdout}\n{installed.stderr}"
    return NODE_DIR


def run_node(node_dir: Path, script: str, base_url: str, timeout: float = 60, **env: str) -> Any:
    """``node script`` in ``node_dir`` against ``base_url`` (as ``OPENAI_BASE_URL``, with ``env``
    besides); it must exit 0, and what it printed is read as JSON."""
    done = subprocess.run(
        ["node", script],
        cwd=node_dir,
        env={**os.environ, "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "test-key", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@contextmanager
def agents_sdk_on(url: str) -> Iterator[asyncio.AbstractEventLoop]:
    """The Agents SDK set up as its documentation shows for another base URL: its default client an
    ``AsyncOpenAI`` on ``url``, the Responses API, no tracing. ``Runner.run_sync`` runs on the
    thread's default loop and the client's connections belong to it, so each user gets its own."""
    import agents
    import openai

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    client = openai.AsyncOpenAI(base_url=url, api_key="test-key", max_retries=0)
    agents.set_default_openai_client(client, use_for_tracing=False)
    agents.set_default_openai_api("responses")
    agents.set_tracing_disabled(True)
    try:
        yield loop
    finally:
        loop.run_until_complete(client.close())
        loop.close()
        asyncio.set_event_loop(None)
