"""Assistant declarations: a YAML file of assistants that are created or updated with the ids it gives.

Applied at start-up (``THREADLINE_ASSISTANTS_FILE``) and by ``threadline assistants apply FILE``, which
these tests run as a real subprocess. What got stored is read back through the SDK from a real server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from tests.support import ThreadlineServer, wait_for

# Shaped like the lesson's assistant: non-ASCII text and a nested JSON schema that must survive exactly.
TEMPLATE = """\
# Two assistants: one fully described, one with only what is required.
- id: {first}
  name: 订单价格计算器
  description: 计算购物车总价
  model: gpt-4-1106-preview
  instructions: {instructions}
  metadata: {{team: shop}}
  temperature: 0.2
  tools:
    - type: function
      function:
        name: calculate_order_total
        description: 根据多个商品类型和数量计算订单总价
        parameters:
          type: object
          properties:
            items:
              type: array
              items:
                type: object
                properties:
                  item_type: {{type: string, description: "商品类型,例如:书籍,文具,电子产品"}}
                  quantity: {{type: integer, description: 商品数量}}
                required: [item_type, quantity]
          required: [items]
- id: {second}
  model: scripted
"""


def new_id() -> str:
    return "asst_" + uuid.uuid4().hex[:24]


def write_declarations(
    path: Path, first: str, second: str, instructions: str = "可以帮助客户计算当前购物车的商品总价"
) -> list[dict[str, Any]]:
    text = TEMPLATE.format(first=first, second=second, instructions=instructions)
    path.write_text(text, encoding="utf-8")
    entries: list[dict[str, Any]] = yaml.safe_load(text)
    return entries


def threadline_command() -> list[str]:
    script = Path(sys.executable).with_name("threadline")
    return [str(script)] if script.exists() else [sys.executable, "-m", "threadline.cli"]


def cli_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADLINE_")}
    return {**env, "THREADLINE_DATABASE_URL": database_url, **extra}


def apply_file(path: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*threadline_command(), "assistants", "apply", str(path)],
        env=cli_env(database_url),
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )


def applied_ok(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert done.returncode == 0, (
        f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout.splitlines()


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'threadline.db'}"


@pytest.fixture
def sdk_for() -> Iterator[Callable[[ThreadlineServer], openai.OpenAI]]:
    clients: list[openai.OpenAI] = []

    def make(server: ThreadlineServer) -> openai.OpenAI:
        clients.append(openai.OpenAI(base_url=server.url, api_key="test-key", max_retries=0))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def raw_assistant(client: openai.OpenAI, assistant_id: str) -> dict[str, Any]:
    response = client.beta.assistants.with_raw_response.retrieve(assistant_id)
    body: dict[str, Any] = response.http_response.json()
    return body


def all_assistants(client: openai.OpenAI) -> list[str]:
    return [a.id for a in client.beta.assistants.list(limit=100, order="asc")]


def assert_matches_declaration(stored: dict[str, Any], declared: dict[str, Any]) -> None:
    assert stored["id"] == declared["id"] and stored["object"] == "assistant"
    for key in ("name", "description", "model", "instructions"):
        assert stored[key] == declared.get(key), key
    assert stored["temperature"] == declared.get("temperature", 1.0)  # OpenAI's default when not given
    assert stored["metadata"] == declared.get("metadata", {})
    assert len(stored["tools"]) == len(declared.get("tools", []))
    for got, want in zip(stored["tools"], declared.get("tools", []), strict=True):
        assert got["type"] == want["type"]
        for key in ("name", "description", "parameters"):
            assert got["function"][key] == want["function"][key], key


def test_startup_declares_assistants_exactly(
    make_server: Callable[..., ThreadlineServer],
    sdk_for: Callable[[ThreadlineServer], openai.OpenAI],
    tmp_path: Path,
) -> None:
    declared = write_declarations(tmp_path / "assistants.yaml", new_id(), new_id())
    client = sdk_for(make_server(assistants_file=str(tmp_path / "assistants.yaml"), run_worker=False))
    for entry in declared:
        assert_matches_declaration(raw_assistant(client, entry["id"]), entry)
    minimal = raw_assistant(client, declared[1]["id"])
    assert minimal["tools"] == [] and minimal["name"] is None and minimal["instructions"] is None
    listed = all_assistants(client)
    assert sorted(listed) == sorted(entry["id"] for entry in declared)


def test_applying_again_changes_nothing(
    make_server: Callable[..., ThreadlineServer],
    sdk_for: Callable[[ThreadlineServer], openai.OpenAI],
    tmp_path: Path,
) -> None:
    path = tmp_path / "assistants.yaml"
    declared = write_declarations(path, new_id(), new_id())
    server = make_server(assistants_file=str(path), run_worker=False)
    client = sdk_for(server)
    before = [raw_assistant(client, entry["id"]) for entry in declared]
    # created_at has one-second resolution: let the clock move on, so a re-create would show.
    wait_for(lambda: int(time.time()) > max(b["created_at"] for b in before), timeout=3, what="a new second")

    lines = applied_ok(apply_file(path, server.settings.effective_database_url))
    assert lines == [
        f"{declared[0]['id']}\tgpt-4-1106-preview\t订单价格计算器",
        f"{declared[1]['id']}\tscripted\t",
    ]
    assert [raw_assistant(client, entry["id"]) for entry in declared] == before
    assert sorted(all_assistants(client)) == sorted(entry["id"] for entry in declared)


def test_cli_apply_creates_then_updates(
    make_server: Callable[..., ThreadlineServer],
    sdk_for: Callable[[ThreadlineServer], openai.OpenAI],
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path)
    path = tmp_path / "assistants.yaml"
    first, second = new_id(), new_id()
    declared = write_declarations(path, first, second)
    assert len(applied_ok(apply_file(path, url))) == 2
    client = sdk_for(make_server(database_url=url, run_worker=False))
    created = raw_assistant(client, first)
    assert_matches_declaration(created, declared[0])
    wait_for(lambda: int(time.time()) > created["created_at"], timeout=3, what="a new second")

    changed = write_declarations(path, first, second, instructions="只回答与订单总价有关的问题")
    applied_ok(apply_file(path, url))
    updated = raw_assistant(client, first)
    assert updated["instructions"] == "只回答与订单总价有关的问题"
    assert_matches_declaration(updated, changed[0])
    assert updated["created_at"] == created["created_at"]
    assert sorted(all_assistants(client)) == sorted([first, second])


def test_concurrent_applies_on_a_new_database(
    make_server: Callable[..., ThreadlineServer],
    sdk_for: Callable[[ThreadlineServer], openai.OpenAI],
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path / "db")
    path = tmp_path / "one.yaml"
    only = new_id()
    path.write_text(f"- id: {only}\n  model: scripted\n  name: only one\n", encoding="utf-8")
    processes = [
        subprocess.Popen(
            [*threadline_command(), "assistants", "apply", str(path)],
            env=cli_env(url),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=60)
            results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for done in results:
        assert applied_ok(done) == [f"{only}\tscripted\tonly one"]
    client = sdk_for(make_server(database_url=url, run_worker=False))
    assert all_assistants(client) == [only]


BROKEN = {
    "syntax": "- id: asst_broken\n  name: [unclosed\n  model: scripted\n",
    "no model": "- id: asst_broken\n  name: no model\n",
    "bad id": "- id: assistant-1\n  model: scripted\n",
    "unknown field": "- id: asst_broken\n  model: scripted\n  instruction: typo\n",
    "not a list": "id: asst_broken\nmodel: scripted\n",
    "duplicate id": "- id: asst_twice\n  model: scripted\n- id: asst_twice\n  model: scripted\n",
}


@pytest.mark.parametrize("problem", list(BROKEN))
def test_broken_file_gives_one_line_error(problem: str, tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN[problem], encoding="utf-8")
    done = apply_file(path, sqlite_url(tmp_path))
    assert done.returncode != 0
    assert done.stdout == ""
    message = done.stderr.strip()
    assert "\n" not in message and "Traceback" not in message, done.stderr
    assert message.startswith(f"threadline: {path}: "), message
    if problem == "syntax":
        assert "line 3" in message or "line 2" in message, message
    if problem == "no model":
        assert "model" in message and "asst_broken" in message, message
    # A broken file is rejected before anything is written, even the schema.
    assert not (tmp_path / "threadline.db").exists()


def test_missing_file_gives_one_line_error(tmp_path: Path) -> None:
    done = apply_file(tmp_path / "absent.yaml", sqlite_url(tmp_path))
    assert done.returncode != 0
    message = done.stderr.strip()
    assert "\n" not in message and message.startswith("threadline: "), done.stderr
    assert "absent.yaml" in message and "No such file" in message, message


def test_serve_refuses_a_broken_assistants_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN["syntax"], encoding="utf-8")
    # Fails before binding the port; if it started serving instead, the timeout fails the test.
    done = subprocess.run(
        [*threadline_command(), "serve", "--port", "0"],
        env=cli_env(sqlite_url(tmp_path), THREADLINE_ASSISTANTS_FILE=str(path)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    message = done.stderr.strip()
    assert "\n" not in message and message.startswith(f"threadline: {path}: not valid YAML"), done.stderr
