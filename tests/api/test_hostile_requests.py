"""Hostile input never hurts: nothing is stored that cannot be read back.

A lone surrogate or a NUL anywhere in a request (JSON body, query parameter, path id, upload field)
and bodies or schemas nested too deeply are refused with a 400 naming the parameter; the refused
request leaves no row, the project's lists still answer, and the connection stays open. Rows an
older version stored with such strings still list. The nastiest values that are *accepted* (every
Unicode plane, RTL and zero-width marks, emoji sequences, combining marks, maximum lengths and
depths) come back unchanged from every create, list, retrieve and stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import insert

from tests.conftest import server_settings
from tests.support import ThreadlineServer
from threadline.api.routing import MAX_BODY_DEPTH, MAX_SCHEMA_DEPTH
from threadline.store import tables
from threadline.store.database import Database
from threadline.testing import Reply, ScriptedModel

HEADERS = {"OpenAI-Beta": "assistants=v2", "Authorization": "Bearer x"}
ADMIN = {"Authorization": "Bearer admin-key"}
JSON = {"Content-Type": "application/json"}

# One code point from each of the 17 planes, RTL and direction overrides, zero-width (non-)joiners,
# an emoji ZWJ family and a flag sequence, combining marks, a BOM, noncharacters and C0 controls.
NASTY_SEED = (
    "aé"
    + "".join(chr(plane * 0x10000 + 0x4E2D) for plane in range(17))
    + "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627\u200f\u202e\u2066\u2069"
    + "\u200b\u200c\u200d\u2060\ufeff"
    + "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466\U0001f3f3\ufe0f\u200d\U0001f308"
    + "\U0001f1fa\U0001f1f3Z\u0351\u0322\u0334\u0308e\u0301"
    + "\ufffe\uffff\U0001fffe"
)
NASTY_WITH_CONTROLS = NASTY_SEED + "\x01\x1f\x7f\t\n\r"


def nasty(length: int, seed: str = NASTY_SEED) -> str:
    """Exactly ``length`` code points of nasty text."""
    return (seed * (length // len(seed) + 1))[:length]


def full_metadata(tag: str = "") -> dict[str, str]:
    """16 pairs, the most allowed: 64-character keys and 512-character values."""
    return {
        (f"{tag}{i:02d}" + nasty(64))[:64]: nasty(512, NASTY_WITH_CONTROLS[i:] + NASTY_WITH_CONTROLS[:i])
        for i in range(16)
    }


def schema(depth: int) -> dict[str, Any]:
    """A JSON schema ``depth`` levels of JSON deep (objects nested by ``properties``)."""
    value: dict[str, Any] = {"type": "string", "description": nasty(40)}
    level = 1
    if depth % 2 == 0:
        value["enum"] = [nasty(20)]
        level = 2
    while level < depth:
        value = {"type": "object", "properties": {nasty(8): value}}
        level += 2
    return value


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def encoded(body: Any) -> bytes:
    """JSON as Python writes it by default: a lone surrogate travels as ``"\\udfff"``."""
    return json.dumps(body).encode()


class Client:
    """One keep-alive connection to the server, and the stream it runs on: it must never change."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.http = httpx.Client(base_url=url, headers=headers, timeout=60)
        self.stream: object | None = None

    def request(self, method: str, path: str, body: Any = None, **options: Any) -> httpx.Response:
        if body is not None:
            options["headers"] = {**JSON, **options.get("headers", {})}
        content = body if body is None or isinstance(body, bytes) else encoded(body)
        response = self.http.request(method, path, content=content, **options)
        self.same_connection(response)
        return response

    def same_connection(self, response: httpx.Response) -> None:
        stream = response.extensions["network_stream"]
        if self.stream is None:
            self.stream = stream
        assert stream is self.stream, "the server closed the connection"

    def ok(self, method: str, path: str, body: Any = None, **options: Any) -> dict[str, Any]:
        response = self.request(method, path, body, **options)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def events(self, path: str, body: Any) -> list[tuple[str, Any]]:
        """A streamed create's events, as (name, data)."""
        found: list[tuple[str, Any]] = []
        with self.http.stream("POST", path, content=encoded(body), headers=JSON) as response:
            assert response.status_code == 200, response.read()
            self.same_connection(response)
            name = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and line != "data: [DONE]":
                    data = json.loads(line[6:])
                    found.append((name or data.get("type", ""), data))
        return found

    def close(self) -> None:
        self.http.close()


@pytest.fixture(scope="module")
def hostile_server(
    model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThreadlineServer]:
    settings = server_settings(model, tmp_path_factory).replace(admin_key="admin-key")
    server = ThreadlineServer(settings)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(hostile_server: ThreadlineServer) -> Iterator[Client]:
    client = Client(hostile_server.url, HEADERS)
    yield client
    client.close()


@pytest.fixture(scope="module")
def targets(api: Client) -> dict[str, str]:
    """Real objects for hostile requests to aim at."""
    assistant = api.ok("POST", "/assistants", {"model": "scripted"})["id"]
    thread = api.ok("POST", "/threads", {"messages": [{"role": "user", "content": "hi"}]})["id"]
    conversation = api.ok("POST", "/conversations", {})["id"]
    return {"assistant": assistant, "thread": thread, "conversation": conversation}


LISTS = ["/assistants", "/threads", "/vector_stores", "/files"]


def snapshot(api: Client, targets: dict[str, str]) -> dict[str, Any]:
    """Every list the project has, each answering 200 (and the objects the hostile requests aimed at)."""
    seen: dict[str, Any] = {path: api.ok("GET", path, params={"limit": 100})["data"] for path in LISTS}
    seen["messages"] = api.ok("GET", f"/threads/{targets['thread']}/messages")["data"]
    seen["items"] = api.ok("GET", f"/conversations/{targets['conversation']}/items")["data"]
    seen["assistant"] = api.ok("GET", f"/assistants/{targets['assistant']}")
    seen["conversation"] = api.ok("GET", f"/conversations/{targets['conversation']}")
    return seen


LONE = "ok \udfff"
NUL = "ok \x00"


def deep_list(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


# (method, path, body, the parameter the refusal must name)
HOSTILE: dict[str, tuple[str, str, Any, str | None]] = {
    "assistant-metadata": (
        "POST",
        "/assistants",
        {"model": "scripted", "metadata": {"key": LONE}},
        "metadata.key",
    ),
    "assistant-metadata-key": (
        "POST",
        "/assistants",
        {"model": "scripted", "metadata": {LONE: "v"}},
        "metadata",
    ),
    "assistant-name-nul": ("POST", "/assistants", {"model": "scripted", "name": NUL}, "name"),
    "assistant-function-description": (
        "POST",
        "/assistants",
        {
            "model": "scripted",
            "tools": [{"type": "function", "function": {"name": "f", "description": LONE}}],
        },
        "tools[0].function.description",
    ),
    "assistant-schema-too-deep": (
        "POST",
        "/assistants",
        {
            "model": "scripted",
            "tools": [{"type": "function", "function": {"name": "f", "parameters": schema(200)}}],
        },
        "tools[0].function.parameters",
    ),
    "assistant-schema-one-too-deep": (
        "POST",
        "/assistants",
        {
            "model": "scripted",
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": schema(MAX_SCHEMA_DEPTH + 1)}}
            ],
        },
        "tools[0].function.parameters",
    ),
    "assistant-response-format-too-deep": (
        "POST",
        "/assistants",
        {
            "model": "scripted",
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema(60)}},
        },
        "response_format.json_schema.schema",
    ),
    "modify-assistant-metadata": (
        "POST",
        "/assistants/{assistant}",
        {"metadata": {"key": LONE}},
        "metadata.key",
    ),
    "modify-assistant-instructions-nul": (
        "POST",
        "/assistants/{assistant}",
        {"instructions": NUL},
        "instructions",
    ),
    "thread-metadata": ("POST", "/threads", {"metadata": {"key": LONE}}, "metadata.key"),
    "thread-message": (
        "POST",
        "/threads",
        {"messages": [{"role": "user", "content": LONE}]},
        "messages[0].content",
    ),
    "message-part": (
        "POST",
        "/threads/{thread}/messages",
        {"role": "user", "content": [{"type": "text", "text": "fine"}, {"type": "text", "text": LONE}]},
        "content[1].text",
    ),
    "message-metadata-nul": (
        "POST",
        "/threads/{thread}/messages",
        {"role": "user", "content": "x", "metadata": {"k": NUL}},
        "metadata.k",
    ),
    "run-instructions": (
        "POST",
        "/threads/{thread}/runs",
        {"assistant_id": "{assistant}", "additional_instructions": LONE},
        "additional_instructions",
    ),
    "thread-and-run": (
        "POST",
        "/threads/runs",
        {"assistant_id": "{assistant}", "thread": {"messages": [{"role": "user", "content": NUL}]}},
        "thread.messages[0].content",
    ),
    "vector-store-name-nul": ("POST", "/vector_stores", {"name": NUL}, "name"),
    "vector-store-metadata": (
        "POST",
        "/vector_stores",
        {"name": "v", "metadata": {"key": LONE}},
        "metadata.key",
    ),
    "response-input": (
        "POST",
        "/responses",
        {
            "model": "scripted",
            "conversation": "{conversation}",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "fine"}]},
                {"role": "user", "content": [{"type": "input_text", "text": LONE}]},
            ],
        },
        "input[1].content[0].text",
    ),
    "response-function-description": (
        "POST",
        "/responses",
        {
            "model": "scripted",
            "input": "hi",
            "tools": [{"type": "function", "name": "f", "description": LONE}],
        },
        "tools[0].description",
    ),
    "response-text-schema-too-deep": (
        "POST",
        "/responses",
        {
            "model": "scripted",
            "input": "hi",
            "text": {"format": {"type": "json_schema", "name": "s", "schema": schema(200)}},
        },
        "text.format.schema",
    ),
    "conversation-metadata": ("POST", "/conversations", {"metadata": {"key": LONE}}, "metadata.key"),
    "conversation-item": (
        "POST",
        "/conversations/{conversation}/items",
        {"items": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": NUL}]}]},
        "items[0].content[0].text",
    ),
    "body-too-deep": (
        "POST",
        "/assistants",
        {"model": "scripted", "metadata": deep_list(MAX_BODY_DEPTH)},
        "metadata",
    ),
    "body-far-too-deep": ("POST", "/threads", b"[" * 100_000 + b"]" * 100_000, None),
    "query-nul": ("GET", "/assistants?after=asst%00x", None, "after"),
    "path-nul": ("GET", "/assistants/asst_%00x", None, "assistant_id"),
    "project-name": ("POST", "/organization/projects", {"name": LONE}, "name"),
}


def _aim(value: Any, targets: dict[str, str]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in targets:
        return targets[value[1:-1]]
    if isinstance(value, dict):
        return {k: _aim(v, targets) for k, v in value.items()}
    if isinstance(value, list):
        return [_aim(v, targets) for v in value]
    return value


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_request_is_refused_naming_the_parameter(
    case: str, api: Client, targets: dict[str, str], hostile_server: ThreadlineServer
) -> None:
    method, path, body, param = HOSTILE[case]
    before = snapshot(api, targets)
    if path.startswith("/organization"):
        response = api.http.request(method, path, content=encoded(body), headers={**ADMIN, **JSON})
        api.same_connection(response)
    else:
        response = api.request(method, path.format(**targets), _aim(body, targets))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error", error
    if param is not None and param.startswith("metadata") and "deep" in case:
        assert error["param"].startswith(param), error
    else:
        assert error["param"] == param, error
    assert "\ufffd" not in error["message"] and error["message"], error
    # Nothing was written, and every list still answers on the same connection.
    assert snapshot(api, targets) == before


@pytest.mark.parametrize(
    ("purpose", "filename", "param"),
    [("assistants", "a\x00.txt", "file"), ("assist\x00ants", "a.txt", "purpose")],
    ids=["filename", "purpose"],
)
def test_nul_in_an_upload_field_is_refused(
    purpose: str, filename: str, param: str, api: Client, targets: dict[str, str]
) -> None:
    before = snapshot(api, targets)
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: text/plain\r\n\r\nhello\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    response = api.http.post(
        "/files", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    api.same_connection(response)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert snapshot(api, targets) == before


def test_a_schema_at_the_depth_limit_is_accepted(api: Client) -> None:
    parameters = schema(MAX_SCHEMA_DEPTH)
    assert depth_of(parameters) == MAX_SCHEMA_DEPTH
    tool = {"type": "function", "function": {"name": "f", "parameters": parameters}}
    created = api.ok("POST", "/assistants", {"model": "scripted", "tools": [tool]})
    assert created["tools"][0]["function"]["parameters"] == parameters


def test_a_conversation_refused_hostile_input_goes_on(
    api: Client, targets: dict[str, str], model: ScriptedModel
) -> None:
    """A lone surrogate in a response's input used to fail that response and every later one of
    its conversation; now it is refused, and the next response in the conversation completes."""
    conversation = api.ok("POST", "/conversations", {})["id"]
    hostile = {
        "model": "scripted",
        "conversation": conversation,
        "input": [{"role": "user", "content": LONE}],
    }
    refused = api.request("POST", "/responses", hostile)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "input[0].content"
    model.script(Reply(text="still here"))
    answer = api.ok(
        "POST", "/responses", {"model": "scripted", "conversation": conversation, "input": "hello"}
    )
    assert answer["status"] == "completed" and answer["output"][0]["content"][0]["text"] == "still here"
    items = api.ok("GET", f"/conversations/{conversation}/items", params={"order": "asc"})["data"]
    assert [item["role"] for item in items] == ["user", "assistant"]


def test_an_unexpected_error_answers_500_and_keeps_the_connection(
    api: Client, hostile_server: ThreadlineServer
) -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    hostile_server.app.add_api_route("/v1/broken-for-test", broken)
    for _ in range(2):
        response = api.request("GET", "/broken-for-test")
        assert response.status_code == 500
        assert response.json()["error"]["type"] == "server_error"
    api.ok("GET", "/assistants")


def test_rows_an_older_version_stored_still_list(api: Client, hostile_server: ThreadlineServer) -> None:
    """Before the edge refused them, lone surrogates reached JSON columns; such a row must not break
    the project's lists (it renders with U+FFFD in place of each lone surrogate)."""
    row = {
        "id": "asst_poisoned_by_an_older_version",
        "created_at": 1,
        "model": "scripted",
        "tools": [{"type": "function", "function": {"name": "f", "description": "d \udfff"}}],
        "meta": {"key": "v \udfff"},
        "project_id": "proj_default",
    }

    async def plant() -> None:
        db = Database(hostile_server.settings.effective_database_url)
        try:
            await db.write(lambda conn: conn.execute(insert(tables.assistants).values(**row)))
        finally:
            await db.dispose()

    asyncio.run(plant())
    listed = api.ok("GET", "/assistants", params={"limit": 100})["data"]
    poisoned = next(a for a in listed if a["id"] == row["id"])
    assert poisoned["metadata"] == {"key": "v \ufffd"}
    assert poisoned["tools"][0]["function"]["description"] == "d \ufffd"
    assert api.ok("GET", f"/assistants/{row['id']}")["metadata"] == {"key": "v \ufffd"}


# --- the nastiest accepted values come back unchanged ------------------------------------------------


def _text_of(message: dict[str, Any]) -> str:
    return "".join(part["text"]["value"] for part in message["content"] if part["type"] == "text")


def test_nastiest_accepted_values_round_trip(api: Client, model: ScriptedModel) -> None:
    reply = nasty(3000)

    # Assistant: every text at its longest, full metadata, schemas at the deepest allowed.
    tool = {
        "type": "function",
        "function": {
            "name": "nasty_tool",
            "description": nasty(1024),
            "parameters": schema(MAX_SCHEMA_DEPTH),
        },
    }
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "nasty", "description": nasty(300), "schema": schema(MAX_SCHEMA_DEPTH)},
    }
    fields = {
        "name": nasty(256),
        "description": nasty(512),
        "instructions": nasty(256_000),
        "metadata": full_metadata("a"),
        "tools": [tool],
    }
    assistant = api.ok(
        "POST", "/assistants", {"model": "scripted", **fields, "response_format": response_format}
    )
    for copy in (
        assistant,
        api.ok("GET", f"/assistants/{assistant['id']}"),
        next(
            a
            for a in api.ok("GET", "/assistants", params={"limit": 100})["data"]
            if a["id"] == assistant["id"]
        ),
    ):
        assert {k: copy[k] for k in fields} == fields
        assert copy["response_format"] == response_format

    # Thread with a message, then a message of text parts; a run whose answer is nasty too.
    metadata = full_metadata("t")
    content = nasty(20_000, NASTY_WITH_CONTROLS)
    thread = api.ok(
        "POST", "/threads", {"metadata": metadata, "messages": [{"role": "user", "content": content}]}
    )
    assert api.ok("GET", f"/threads/{thread['id']}")["metadata"] == metadata
    assert any(
        t["id"] == thread["id"] and t["metadata"] == metadata for t in api.ok("GET", "/threads")["data"]
    )
    parts = [{"type": "text", "text": nasty(500)}, {"type": "text", "text": nasty(700, NASTY_WITH_CONTROLS)}]
    message = api.ok(
        "POST",
        f"/threads/{thread['id']}/messages",
        {"role": "user", "content": parts, "metadata": full_metadata("m")},
    )
    assert [p["text"]["value"] for p in message["content"]] == [p["text"] for p in parts]
    # The run is on a thread of its own: the scripted model's context window is small.
    asked = nasty(300, NASTY_WITH_CONTROLS)
    ran = api.ok("POST", "/threads", {"messages": [{"role": "user", "content": asked}]})
    model.script(Reply(text=reply, chunks=7))
    events = api.events(
        f"/threads/{ran['id']}/runs",
        {
            "assistant_id": assistant["id"],
            "instructions": nasty(500),
            "additional_instructions": nasty(100),
            "metadata": full_metadata("r"),
            "stream": True,
        },
    )
    streamed = "".join(
        part["text"]["value"]
        for name, data in events
        if name == "thread.message.delta"
        for part in data["delta"]["content"]
        if part["type"] == "text"
    )
    assert streamed == reply, [(n, d.get("status"), d.get("last_error")) for n, d in events]
    run = next(data for name, data in events if name == "thread.run.completed")
    assert run["metadata"] == full_metadata("r")
    messages = api.ok("GET", f"/threads/{thread['id']}/messages", params={"order": "asc"})["data"]
    assert [_text_of(m) for m in messages] == [content, nasty(500) + nasty(700, NASTY_WITH_CONTROLS)]
    messages = api.ok("GET", f"/threads/{ran['id']}/messages", params={"order": "asc"})["data"]
    assert [_text_of(m) for m in messages] == [asked, reply]
    assert (
        api.ok("GET", f"/threads/{ran['id']}/runs/{run['id']}")["instructions"]
        == f"{nasty(500)}\n\n{nasty(100)}".strip()
    )

    # Vector store.
    store = api.ok("POST", "/vector_stores", {"name": nasty(256), "metadata": full_metadata("v")})
    assert api.ok("GET", f"/vector_stores/{store['id']}")["name"] == nasty(256)
    listed = api.ok("GET", "/vector_stores")["data"]
    assert any(s["id"] == store["id"] and s["metadata"] == full_metadata("v") for s in listed)

    # File: a nasty (but plain) filename and nasty content.
    filename = "\u202e" + nasty(60) + ".txt"
    data = nasty(5000, NASTY_WITH_CONTROLS).encode()
    upload = api.http.post(
        "/files",
        files={"file": (filename, data, "text/plain")},
        data={"purpose": "assistants"},
    )
    api.same_connection(upload)
    assert upload.status_code == 200, upload.text
    file = upload.json()
    assert file["filename"] == filename
    assert api.ok("GET", f"/files/{file['id']}")["filename"] == filename
    assert any(f["filename"] == filename for f in api.ok("GET", "/files")["data"])
    downloaded = api.request("GET", f"/files/{file['id']}/content")
    assert downloaded.content == data

    # Conversation and its items; a streamed response in it.
    items = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": nasty(1000)}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": nasty(300)}]},
    ]
    conversation = api.ok("POST", "/conversations", {"metadata": full_metadata("c"), "items": items})
    assert api.ok("GET", f"/conversations/{conversation['id']}")["metadata"] == full_metadata("c")
    model.script(Reply(text=reply, chunks=5))
    events = api.events(
        "/responses",
        {
            "model": "scripted",
            "conversation": conversation["id"],
            "instructions": nasty(1000),
            "metadata": full_metadata("p"),
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": nasty(500, NASTY_WITH_CONTROLS)}]}
            ],
            "tools": [
                {
                    "type": "function",
                    "name": "nasty_tool",
                    "description": nasty(900),
                    "parameters": schema(20),
                }
            ],
            "text": {"format": {"type": "json_schema", "name": "s", "schema": schema(MAX_SCHEMA_DEPTH)}},
            "stream": True,
        },
    )
    final = [
        d
        for n, d in events
        if n.startswith("response.") and n.endswith(("completed", "failed", "incomplete"))
    ]
    assert "".join(d["delta"] for n, d in events if n == "response.output_text.delta") == reply, [
        (d["response"]["status"], d["response"].get("error")) for d in final
    ]
    response = next(d["response"] for n, d in events if n == "response.completed")
    again = api.ok("GET", f"/responses/{response['id']}")
    assert again["metadata"] == full_metadata("p") and again["instructions"] == nasty(1000)
    assert again["output"][0]["content"][0]["text"] == reply
    assert again["tools"][0]["description"] == nasty(900)
    inputs = api.ok("GET", f"/responses/{response['id']}/input_items")["data"]
    assert inputs[0]["content"][0]["text"] == nasty(500, NASTY_WITH_CONTROLS)
    texts = [
        item["content"][0]["text"]
        for item in api.ok("GET", f"/conversations/{conversation['id']}/items", params={"order": "asc"})[
            "data"
        ]
    ]
    assert texts == [nasty(1000), nasty(300), nasty(500, NASTY_WITH_CONTROLS), reply]
    first = api.ok("GET", f"/conversations/{conversation['id']}/items", params={"order": "asc", "limit": 1})
    item = api.ok("GET", f"/conversations/{conversation['id']}/items/{first['data'][0]['id']}")
    assert item["content"][0]["text"] == nasty(1000)

    # A project and its key, named at the longest.
    admin = Client(api.http.base_url.__str__().rstrip("/"), ADMIN)
    try:
        project = admin.ok("POST", "/organization/projects", {"name": nasty(256)})
        assert admin.ok("GET", f"/organization/projects/{project['id']}")["name"] == nasty(256)
        assert any(p["name"] == nasty(256) for p in admin.ok("GET", "/organization/projects")["data"])
        key = admin.ok("POST", f"/organization/projects/{project['id']}/api_keys", {"name": nasty(256)})
        assert key["name"] == nasty(256)
        assert [
            k["name"] for k in admin.ok("GET", f"/organization/projects/{project['id']}/api_keys")["data"]
        ] == [nasty(256)]
    finally:
        admin.close()


def test_every_router_checks_its_input() -> None:
    # A router made without CheckedRoute would take lone surrogates and NUL to the database.
    import importlib
    import pkgutil

    from fastapi import APIRouter

    import threadline.api
    from threadline.api.routing import CheckedRoute

    routers = [
        (f"{module.name}.{name}", value)
        for module in pkgutil.iter_modules(threadline.api.__path__, "threadline.api.")
        for name, value in vars(importlib.import_module(module.name)).items()
        if isinstance(value, APIRouter)
    ]
    assert len(routers) >= 15
    assert [name for name, router in routers if router.route_class is not CheckedRoute] == []
