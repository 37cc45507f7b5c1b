"""The Files API through the official SDK, on the local blob store and on S3 (moto's real server).

Every refused upload is checked to leave nothing behind: no row in the list, no blob in the store.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support import ThreadlineServer, wait_for

BUCKET = "threadline-files"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A real S3-protocol server (moto's) on a free port, with credentials set for boto3."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    saved = {
        k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Stored:
    """What a server's blob store holds, looked at from outside the server."""

    def __init__(self, server: ThreadlineServer, s3: Any | None) -> None:
        self.server = server
        self.s3 = s3

    def keys(self) -> list[str]:
        if self.s3 is not None:
            listed = self.s3.list_objects_v2(Bucket=BUCKET)
            keys = [item["Key"] for item in listed.get("Contents", [])]
            uploads = self.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
            return keys + [f"(unfinished upload) {u['Key']}" for u in uploads]
        root = self.server.settings.effective_file_dir
        return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture(params=["local", "s3"])
def files_server(
    request: pytest.FixtureRequest, make_server: Callable[..., ThreadlineServer]
) -> Callable[..., tuple[ThreadlineServer, Stored]]:
    """A server factory on the parametrised blob store, each with an empty store of its own."""

    def make(**overrides: Any) -> tuple[ThreadlineServer, Stored]:
        if request.param == "local":
            server = make_server(run_worker=False, **overrides)
            return server, Stored(server, None)
        import boto3

        endpoint = request.getfixturevalue("s3_endpoint")
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket=BUCKET)
        for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=item["Key"])
        server = make_server(
            run_worker=False, file_store="s3", s3_bucket=BUCKET, s3_endpoint_url=endpoint, **overrides
        )
        return server, Stored(server, s3)

    return make


_clients: list[openai.OpenAI] = []


def sdk(server: ThreadlineServer) -> openai.OpenAI:
    client = openai.OpenAI(base_url=server.url, api_key="test-key", max_retries=0, timeout=120)
    _clients.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def test_upload_retrieve_list_download_delete(
    files_server: Callable[..., tuple[ThreadlineServer, Stored]],
) -> None:
    server, stored = files_server()
    client = sdk(server)
    data = "第一行\nsecond line\n".encode()
    created = client.files.create(file=("notes.txt", data), purpose="assistants")
    assert created.id.startswith("file-")
    assert (created.object, created.bytes, created.filename, created.purpose) == (
        "file",
        len(data),
        "notes.txt",
        "assistants",
    )
    assert created.status == "processed" and created.expires_at is None
    assert stored.keys() == [f"{'files/' if stored.s3 else ''}{created.id}"]

    assert client.files.retrieve(created.id) == created
    assert [f.id for f in client.files.list()] == [created.id]

    content = client.files.content(created.id)
    assert content.content == data
    assert content.response.headers["content-type"].startswith("text/plain")
    assert content.response.headers["content-length"] == str(len(data))

    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "file", True)
    assert stored.keys() == []
    for call in (client.files.retrieve, client.files.content, client.files.delete):
        with pytest.raises(openai.NotFoundError) as caught:
            call(created.id)
        assert caught.value.body == {
            "message": f"No such File object: {created.id}",
            "type": "invalid_request_error",
            "param": "id",
            "code": None,
        }


def test_list_filters_by_purpose_and_pages(make_server: Callable[..., ThreadlineServer]) -> None:
    client = sdk(make_server(run_worker=False))
    texts = [client.files.create(file=(f"doc{i}.md", b"# doc"), purpose="assistants").id for i in range(5)]
    batch = client.files.create(file=("requests.jsonl", b'{"custom_id": "1"}\n'), purpose="batch").id
    image = client.files.create(file=("chart.png", b"\x89PNG\r\n\x1a\n"), purpose="vision")

    assert [f.id for f in client.files.list(purpose="batch")] == [batch]
    assert [f.id for f in client.files.list(purpose="user_data")] == []
    everything = client.files.list()
    assert [f.id for f in everything.data] == [image.id, batch, *reversed(texts)]  # newest first

    first = client.files.list(purpose="assistants", limit=2, order="asc")
    assert [f.id for f in first.data] == texts[:2] and first.has_more
    second = client.files.list(purpose="assistants", limit=2, order="asc", after=first.data[-1].id)
    assert [f.id for f in second.data] == texts[2:4]
    # The SDK's auto-pagination follows the cursors to the end, without overlap.
    assert [f.id for f in client.files.list(purpose="assistants", limit=2, order="asc")] == texts
    assert client.files.content(image.id).response.headers["content-type"] == "image/png"


def test_a_large_upload_round_trips(files_server: Callable[..., tuple[ThreadlineServer, Stored]]) -> None:
    server, stored = files_server()
    client = sdk(server)
    data = os.urandom(20 * MiB)  # more than two S3 parts
    created = client.files.create(file=("data.bin", data), purpose="user_data")
    assert created.bytes == len(data)
    downloaded = client.files.content(created.id)
    assert downloaded.response.headers["content-type"] == "application/octet-stream"
    assert hashlib.sha256(downloaded.content).hexdigest() == hashlib.sha256(data).hexdigest()
    assert len(stored.keys()) == 1


@pytest.mark.parametrize("size", [3 * MiB, MiB + 1], ids=["declared-too-large", "one-byte-over"])
def test_an_upload_over_the_limit_gets_413_and_leaves_nothing(
    files_server: Callable[..., tuple[ThreadlineServer, Stored]], size: int
) -> None:
    server, stored = files_server(file_max_bytes=MiB)
    client = sdk(server)
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("big.bin", b"x" * size), purpose="assistants")
    assert caught.value.status_code == 413
    assert caught.value.body == {
        "message": "The file is larger than the 1 MiB allowed.",
        "type": "invalid_request_error",
        "param": "file" if size == MiB + 1 else None,
        "code": None,
    }
    assert client.files.list().data == []
    assert stored.keys() == []
    # Exactly at the limit is fine.
    assert client.files.create(file=("fits.bin", b"x" * MiB), purpose="assistants").bytes == MiB


def test_an_upload_cut_off_by_the_client_leaves_nothing(
    files_server: Callable[..., tuple[ThreadlineServer, Stored]],
) -> None:
    server, stored = files_server()
    head, content_type = _multipart([("purpose", None, b"assistants")])
    boundary = content_type.split("=", 1)[1]
    start = head.rsplit(f"--{boundary}--".encode(), 1)[0]
    start += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'.encode()
    )
    sent = 10 * MiB  # past the first S3 part, so a multipart upload is under way there
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(start) + 20 * MiB}\r\n\r\n".encode()
            + start
        )
        for _ in range(sent // MiB):
            sock.sendall(b"x" * MiB)
        wait_for(stored.keys, timeout=30, what="the upload to reach the store")
    wait_for(lambda: not stored.keys(), timeout=30, what="the cut-off upload to be cleaned away")
    assert sdk(server).files.list().data == []


def _multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart body written by hand, for uploads no SDK would send."""
    boundary = "threadline-test-boundary"
    body = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + ("" if filename is None else f'; filename="{filename}"')
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


BAD_UPLOADS = {
    "bad purpose": ([("purpose", None, b"memes"), ("file", "a.txt", b"hi")], "purpose", "Invalid value for 'purpose'"),
    "no purpose": ([("file", "a.txt", b"hi")], "purpose", "Missing required parameter: 'purpose'."),
    "no file": ([("purpose", None, b"assistants")], "file", "Missing required parameter: 'file'."),
    "file not a file": ([("purpose", None, b"assistants"), ("file", None, b"hi")], "file", "must be a file"),
    "empty filename": ([("purpose", None, b"assistants"), ("file", "", b"hi")], "file", "must have a filename"),
    "blank filename": ([("purpose", None, b"assistants"), ("file", "  ", b"hi")], "file", "must have a filename"),
    "path traversal": ([("purpose", None, b"assistants"), ("file", "../../etc/passwd", b"hi")], "file", "without a directory"),
    "directory": ([("purpose", None, b"assistants"), ("file", "notes/a.txt", b"hi")], "file", "without a directory"),
    "dot dot": ([("purpose", None, b"assistants"), ("file", "..", b"hi")], "file", "without a directory"),
    "control character": ([("purpose", None, b"assistants"), ("file", "a\tb.txt", b"hi")], "file", "control characters"),
    "empty file": ([("purpose", None, b"assistants"), ("file", "a.txt", b"")], "file", "The uploaded file is empty."),
    "batch needs jsonl": ([("purpose", None, b"batch"), ("file", "a.csv", b"a,b")], "file", "expected a .jsonl file"),
    "vision needs an image": ([("purpose", None, b"vision"), ("file", "a.txt", b"hi")], "file", "expected an image"),
    "two files": ([("purpose", None, b"assistants"), ("file", "a.txt", b"a"), ("file", "b.txt", b"b")], "file", "one file"),
    "unknown field": ([("purpose", None, b"assistants"), ("file", "a.txt", b"a"), ("colour", None, b"red")], "colour", "Unrecognized request argument supplied: colour"),
    "purpose after a bad file": ([("file", "a.txt", b"hi"), ("purpose", None, b"nope")], "purpose", "Invalid value for 'purpose'"),
    "bad expiry": ([("purpose", None, b"assistants"), ("file", "a.txt", b"hi"), ("expires_after[anchor]", None, b"created_at"), ("expires_after[seconds]", None, b"60")], "expires_after.seconds", "from 3600 to 2592000"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_UPLOADS, ids=list(BAD_UPLOADS))
def test_bad_uploads_get_400_and_leave_nothing(
    files_server: Callable[..., tuple[ThreadlineServer, Stored]], case: str
) -> None:
    server, stored = files_server()
    parts, param, text = BAD_UPLOADS[case]
    body, content_type = _multipart(parts)
    response = httpx.post(f"{server.url}/files", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert text in error["message"]
    assert sdk(server).files.list().data == []
    assert stored.keys() == []


def test_uploads_that_are_not_multipart_are_refused(make_server: Callable[..., ThreadlineServer]) -> None:
    server = make_server(run_worker=False)
    response = httpx.post(f"{server.url}/files", json={"purpose": "assistants"})
    assert response.status_code == 400
    assert "multipart/form-data" in response.json()["error"]["message"]
    cut = httpx.post(
        f"{server.url}/files",
        content=b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants',
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert cut.status_code == 400 and "closing boundary" in cut.json()["error"]["message"]


def test_sdk_upload_from_a_path_with_expiry(
    make_server: Callable[..., ThreadlineServer], tmp_path: Path
) -> None:
    client = sdk(make_server(run_worker=False))
    path = tmp_path / "train.jsonl"
    path.write_text('{"messages": []}\n')
    created = client.files.create(
        file=path, purpose="fine-tune", expires_after={"anchor": "created_at", "seconds": 3600}
    )
    assert created.filename == "train.jsonl" and created.purpose == "fine-tune"
    assert created.expires_at == created.created_at + 3600
    assert client.files.content(created.id).response.headers["content-type"] == "application/jsonl"


def test_expiry_may_come_as_one_json_part(make_server: Callable[..., ThreadlineServer]) -> None:
    server = make_server(run_worker=False)
    parts = [("purpose", None, b"user_data"), ("file", "a.txt", b"hi")]
    body, content_type = _multipart(
        [*parts, ("expires_after", None, b'{"anchor": "created_at", "seconds": 7200}')]
    )
    created = httpx.post(f"{server.url}/files", content=body, headers={"Content-Type": content_type}).json()
    assert created["expires_at"] == created["created_at"] + 7200
    body, content_type = _multipart([*parts, ("expires_after", None, b"[1]")])
    refused = httpx.post(f"{server.url}/files", content=body, headers={"Content-Type": content_type})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "expires_after"


def test_ids_and_cursors_that_cannot_exist(make_server: Callable[..., ThreadlineServer]) -> None:
    """Not even PostgreSQL, which refuses text holding NUL, turns these into a 500."""
    server = make_server(run_worker=False)
    assert httpx.get(f"{server.url}/files?after=%00").status_code == 400
    assert httpx.get(f"{server.url}/files?purpose=%00").status_code == 400
    assert httpx.get(f"{server.url}/files?purpose=memes").json()["data"] == []
    for method in ("GET", "DELETE"):
        for path in ("/files/file-%00", "/files/file-%00/content", "/files/%E2%98%83"):
            if method == "GET" or not path.endswith("content"):
                response = httpx.request(method, f"{server.url}{path}")
                # A NUL is refused in a path id as in any other parameter; a snowman is just unknown.
                status = 400 if "%00" in path else 404
                assert response.status_code == status, (method, path, response.text)
                if status == 400:
                    assert response.json()["error"]["param"] == "file_id"
    thread = httpx.post(f"{server.url}/threads", json={}, headers={"OpenAI-Beta": "assistants=v2"}).json()
    message = {"role": "user", "content": "x", "attachments": [{"file_id": "file-\x00", "tools": []}]}
    refused = httpx.post(
        f"{server.url}/threads/{thread['id']}/messages",
        json=message,
        headers={"OpenAI-Beta": "assistants=v2"},
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "attachments[0].file_id"


def test_files_need_the_api_key_but_not_the_beta_header(make_server: Callable[..., ThreadlineServer]) -> None:
    server = make_server(run_worker=False, api_key="sesame")
    body, content_type = _multipart([("purpose", None, b"assistants"), ("file", "a.txt", b"hi")])
    refused = httpx.post(f"{server.url}/files", content=body, headers={"Content-Type": content_type})
    assert refused.status_code == 401
    with openai.OpenAI(base_url=server.url, api_key="sesame", max_retries=0) as client:
        assert client.files.create(file=("a.txt", b"hi"), purpose="assistants").bytes == 2
