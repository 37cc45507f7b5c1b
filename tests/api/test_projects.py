"""Projects and API keys: every endpoint sees only its key's project; keys are revoked at once.

An isolation matrix over every Assistants endpoint: project B's key against project A's ids answers
404 (the same as an id that does not exist), and B's lists never show A's objects.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.api.test_run_lifecycle import ADD
from tests.integration.test_model_host import free_port
from tests.support import ThreadlineServer
from threadline.testing import Reply, ScriptedModel, ToolCall

ADMIN = "admin-secret"


def admin(server: ThreadlineServer, method: str, path: str, **body: Any) -> httpx.Response:
    return httpx.request(
        method,
        f"{server.url}/organization/projects{path}",
        headers={"Authorization": f"Bearer {ADMIN}"},
        json=body or None,
    )


def new_project(server: ThreadlineServer, name: str) -> tuple[str, str]:
    project = admin(server, "POST", "", name=name)
    assert project.status_code == 200, project.text
    key = admin(server, "POST", f"/{project.json()['id']}/api_keys", name="tests")
    assert key.status_code == 200 and key.json()["value"].startswith("tl-")
    return project.json()["id"], key.json()["value"]


def sdk(server: ThreadlineServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=key, max_retries=0)


def test_project_b_cannot_see_or_touch_project_a(
    make_server: Callable[..., ThreadlineServer], model: ScriptedModel
) -> None:
    server = make_server(admin_key=ADMIN)
    _, key_a = new_project(server, "A")
    _, key_b = new_project(server, "B")
    a, b = sdk(server, key_a), sdk(server, key_b)

    assistant = a.beta.assistants.create(model="gpt-4o", tools=[ADD])
    thread = a.beta.threads.create(messages=[{"role": "user", "content": "add"}])
    model.script(Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 2})]))
    run = a.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "requires_action" and run.required_action is not None
    message = a.beta.threads.messages.list(thread_id=thread.id).data[0]
    step = a.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id).data[0]
    mine = b.beta.assistants.create(model="gpt-4o")
    my_thread = b.beta.threads.create()
    file = a.files.create(file=("notes.txt", b"A's secret notes"), purpose="assistants")
    call = run.required_action.submit_tool_outputs.tool_calls[0]

    t, r = thread.id, run.id
    attempts: list[tuple[str, Callable[[], Any]]] = [
        ("retrieve assistant", lambda: b.beta.assistants.retrieve(assistant.id)),
        ("modify assistant", lambda: b.beta.assistants.update(assistant.id, name="x")),
        ("delete assistant", lambda: b.beta.assistants.delete(assistant.id)),
        ("retrieve thread", lambda: b.beta.threads.retrieve(t)),
        ("modify thread", lambda: b.beta.threads.update(t, metadata={"x": "y"})),
        ("delete thread", lambda: b.beta.threads.delete(t)),
        ("create message", lambda: b.beta.threads.messages.create(thread_id=t, role="user", content="hi")),
        ("list messages", lambda: b.beta.threads.messages.list(thread_id=t)),
        ("retrieve message", lambda: b.beta.threads.messages.retrieve(message.id, thread_id=t)),
        ("modify message", lambda: b.beta.threads.messages.update(message.id, thread_id=t, metadata={})),
        ("delete message", lambda: b.beta.threads.messages.delete(message.id, thread_id=t)),
        ("run on A's thread", lambda: b.beta.threads.runs.create(thread_id=t, assistant_id=mine.id)),
        (
            "run A's assistant",
            lambda: b.beta.threads.runs.create(thread_id=my_thread.id, assistant_id=assistant.id),
        ),
        ("create and run", lambda: b.beta.threads.create_and_run(assistant_id=assistant.id)),
        ("list runs", lambda: b.beta.threads.runs.list(thread_id=t)),
        ("retrieve run", lambda: b.beta.threads.runs.retrieve(r, thread_id=t)),
        ("modify run", lambda: b.beta.threads.runs.update(r, thread_id=t, metadata={})),
        ("cancel run", lambda: b.beta.threads.runs.cancel(r, thread_id=t)),
        (
            "submit tool outputs",
            lambda: b.beta.threads.runs.submit_tool_outputs(
                r, thread_id=t, tool_outputs=[{"tool_call_id": call.id, "output": "3"}]
            ),
        ),
        ("list steps", lambda: b.beta.threads.runs.steps.list(r, thread_id=t)),
        ("retrieve step", lambda: b.beta.threads.runs.steps.retrieve(step.id, thread_id=t, run_id=r)),
        ("retrieve file", lambda: b.files.retrieve(file.id)),
        ("download file", lambda: b.files.content(file.id)),
        ("delete file", lambda: b.files.delete(file.id)),
    ]
    for what, attempt in attempts:
        with pytest.raises(openai.NotFoundError):
            attempt()
            pytest.fail(f"project B could {what} of project A")
    transitions = httpx.get(
        f"{server.url}/threads/{t}/runs/{r}/transitions",
        headers={"Authorization": f"Bearer {key_b}", "OpenAI-Beta": "assistants=v2"},
    )
    assert transitions.status_code == 404

    # A's file cannot be attached in B either: it does not exist there.
    with pytest.raises(openai.BadRequestError, match=f"No file found with id '{file.id}'"):
        b.beta.threads.messages.create(
            thread_id=my_thread.id,
            role="user",
            content="read this",
            attachments=[{"file_id": file.id, "tools": [{"type": "code_interpreter"}]}],
        )

    # B's lists hold only B's objects; A's objects are untouched.
    assert [x.id for x in b.beta.assistants.list()] == [mine.id]
    assert b.files.list().data == []
    assert a.files.content(file.id).read() == b"A's secret notes"
    threads = httpx.get(
        f"{server.url}/threads", headers={"Authorization": f"Bearer {key_b}", "OpenAI-Beta": "assistants=v2"}
    ).json()["data"]
    assert [x["id"] for x in threads] == [my_thread.id]
    assert a.beta.threads.runs.retrieve(r, thread_id=t).status == "requires_action"
    assert a.beta.assistants.retrieve(assistant.id).name is None
    assert len(a.beta.threads.messages.list(thread_id=t).data) == 1


def test_revoked_keys_are_refused_at_once_by_every_api_process(
    make_server: Callable[..., ThreadlineServer],
) -> None:
    first = make_server(admin_key=ADMIN)
    second = make_server(admin_key=ADMIN, database_url=first.settings.database_url, run_worker=False)
    project_id, key = new_project(first, "C")
    for server in (first, second):
        assert sdk(server, key).beta.assistants.list().data == []
    listed = admin(first, "GET", f"/{project_id}/api_keys").json()["data"]
    assert listed[0]["redacted_value"] == key[:10] + "…" and "value" not in listed[0]
    assert admin(first, "DELETE", f"/{project_id}/api_keys/{listed[0]['id']}").status_code == 200
    for server in (first, second):
        with pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
            sdk(server, key).beta.assistants.list()
    # Once a key exists the server is keyed: an arbitrary token opens nothing.
    with pytest.raises(openai.AuthenticationError):
        sdk(first, "anything").beta.assistants.list()


def test_the_admin_api_needs_the_admin_key(make_server: Callable[..., ThreadlineServer]) -> None:
    off = make_server()
    assert admin(off, "GET", "").status_code == 401
    on = make_server(admin_key=ADMIN)
    wrong = httpx.get(f"{on.url}/organization/projects", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert admin(on, "POST", "", name="").status_code == 400
    assert admin(on, "GET", "/proj_nope").status_code == 404
    names = [p["name"] for p in admin(on, "GET", "").json()["data"]]
    assert names[0] == "Default"


def test_the_legacy_key_is_the_default_projects(make_server: Callable[..., ThreadlineServer]) -> None:
    server = make_server(api_key="legacy")
    created = sdk(server, "legacy").beta.assistants.create(model="gpt-4o")
    with pytest.raises(openai.AuthenticationError):
        sdk(server, "other").beta.assistants.list()
    assert [x.id for x in sdk(server, "legacy").beta.assistants.list()] == [created.id]


def cli(*args: str, data: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "threadline.cli", *args],
        env={**os.environ, "THREADLINE_DATA_DIR": str(data), "THREADLINE_DATABASE_URL": "", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_manages_projects_and_keys_and_open_mode_stays_on_loopback(tmp_path: Path) -> None:
    refused = cli("serve", "--host", "0.0.0.0", "--port", str(free_port()), data=tmp_path)
    assert refused.returncode != 0 and "refusing to serve on 0.0.0.0 without API keys" in refused.stderr

    created = cli("projects", "create", "Course", "--thread-ttl-days", "7", data=tmp_path)
    assert created.returncode == 0, created.stderr
    project_id = created.stdout.split("\t")[0]
    assert "Course\tthread TTL 7 days" in cli("projects", "list", data=tmp_path).stdout
    made = cli("keys", "create", "--project", project_id, "--name", "ci", data=tmp_path)
    key_id, secret = made.stdout.strip().split("\t")
    assert secret.startswith("tl-") and "not shown again" in made.stderr
    assert secret not in cli("keys", "list", "--project", project_id, data=tmp_path).stdout
    assert cli("keys", "revoke", key_id, data=tmp_path).returncode == 0
    again = cli("keys", "revoke", key_id, data=tmp_path)
    assert again.returncode != 0 and "No active API key" in again.stderr
    assert "Traceback" not in again.stderr
