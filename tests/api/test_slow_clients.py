"""Clients that hold the server's connections: a body that never arrives is cut off with a 408 and
its connection closed, and one project's uploads in flight are capped with a 429."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable

import httpx
import openai
import pytest

from tests.integration.test_recovery import upload_head
from tests.support import ThreadlineServer, wait_for

pytestmark = pytest.mark.timeout(60)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The response on ``sock``, read until the server closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def test_a_body_that_never_arrives_is_answered_408_and_its_connection_closed(
    make_server: Callable[..., ThreadlineServer],
) -> None:
    server = make_server(body_idle_timeout_seconds=0.5, upload_concurrency=0)
    uploads = [upload_head(server.port, 1024)[0] for _ in range(20)]  # headers, then nothing
    json_head = (
        b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"model": '
    )
    other = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    other.sendall(json_head)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        for sock in [*uploads, other]:
            stack.callback(sock.close)
        for sock in [*uploads, other]:
            # recv returns b"" once the server closes: a held connection would time out here.
            status, headers, body = read_answer(sock)
            assert status == 408
            assert headers["connection"] == "close"
            error = json.loads(body)["error"]
            assert error["type"] == "invalid_request_error"
            assert error["code"] == "request_timeout"
            assert "not received in time" in error["message"]
    assert time.monotonic() - started < 8
    # The server is not worse for it.
    assert httpx.get(f"{server.url}/files").status_code == 200


def test_a_body_that_trickles_is_cut_off_by_the_total_limit(
    make_server: Callable[..., ThreadlineServer],
) -> None:
    server = make_server(body_idle_timeout_seconds=5, body_timeout_seconds=1)
    sock, opening = upload_head(server.port, 1000)
    with sock:
        sock.sendall(opening)
        deadline = time.monotonic() + 10
        status = 0
        try:
            while time.monotonic() < deadline:
                sock.sendall(b"x")  # a byte every 0.2 s: never idle for long
                time.sleep(0.2)
        except OSError:
            pass  # closed by the server
        status, _headers, body = read_answer(sock)
    assert status == 408
    assert json.loads(body)["error"]["code"] == "request_timeout"


def test_uploads_in_flight_are_capped_per_project(make_server: Callable[..., ThreadlineServer]) -> None:
    server = make_server(upload_concurrency=2)
    held = [upload_head(server.port, 1 << 20) for _ in range(2)]
    with contextlib.ExitStack() as stack:
        for sock, opening in held:
            stack.callback(sock.close)
            sock.sendall(opening)
        client = stack.enter_context(openai.OpenAI(base_url=server.url, api_key="test-key", max_retries=0))
        check_cap(server, held, client)


def check_cap(
    server: ThreadlineServer, held: list[tuple[socket.socket, bytes]], client: openai.OpenAI
) -> None:

    def refused() -> httpx.Response | None:
        answer = httpx.post(
            f"{server.url}/files", data={"purpose": "assistants"}, files={"file": ("a.txt", b"hi")}
        )
        return answer if answer.status_code == 429 else None

    # The held uploads reach the route a moment after their headers: a third sent before the second
    # arrived would take its slot, so wait until the server counts both.
    wait_for(
        lambda: (
            "threadline_uploads_in_progress 2.0"
            in httpx.get(server.url.removesuffix("/v1") + "/metrics").text
        ),
        timeout=10,
        what="both held uploads to be in progress",
    )
    answer = refused()
    assert answer is not None, "a third upload was not refused"
    error = answer.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert "at most 2" in error["message"]
    assert answer.headers["retry-after"] == "1"
    with pytest.raises(openai.RateLimitError):
        client.files.create(file=("b.txt", b"hi"), purpose="assistants")
    # One finishes (its client gives up): the next upload is taken.
    held[0][0].close()
    wait_for(
        lambda: (
            httpx.post(
                f"{server.url}/files", data={"purpose": "assistants"}, files={"file": ("c.txt", b"hi")}
            ).status_code
            == 200
        ),
        timeout=10,
        what="an upload slot to be free again",
    )
