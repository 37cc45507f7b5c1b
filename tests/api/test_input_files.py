"""``input_file`` parts: a PDF, a DOCX or a text file given to a response by ``file_id`` or as
``file_data`` reaches the model as its text (through file search's parser, in a bounded child
process), is listed back as the part the client sent (never the text), and is refused with a 400
naming the part when it is another project's, too long, damaged or given by URL.

The scripted model records what it was sent, so each test checks what the model saw.
"""

from __future__ import annotations

import base64
import io
import zipfile
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.api.test_projects import ADMIN, new_project, sdk
from tests.support import ThreadlineServer
from threadline.testing import Reply, ScriptedModel
from threadline.testing.web import FakeWeb


def pdf(text: str) -> bytes:
    """A one-page PDF showing ``text``, written by hand (offsets computed, so readers accept it)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 4 0 R >> >>"
        b" /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def docx(*paragraphs: str) -> bytes:
    body = "".join(f"<w:p><w:r><w:t>{p}</w:t></w:r></w:p>" for p in paragraphs)
    document = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
        f"<w:body>{body}</w:body></w:document>"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", document)
    return buffer.getvalue()


DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
FILES = {
    "pdf": ("report.pdf", "application/pdf", pdf("Revenue grew by seventeen percent"), "seventeen percent"),
    "docx": (
        "minutes.docx",
        DOCX_TYPE,
        docx("Minutes of the board", "The vote passed 5 to 2"),
        "passed 5 to 2",
    ),
    "text": (
        "notes.md",
        "text/markdown",
        b"# Notes\n\nThe launch moves to **March**.",
        "to **March**",
    ),
}


def data_url(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def user_text(model: ScriptedModel) -> str:
    content = model.requests[-1]["messages"][-1]["content"]
    assert isinstance(content, str), content
    return content


@pytest.mark.parametrize("kind", sorted(FILES))
def test_a_file_by_id_and_by_data_reaches_the_model_as_text_and_is_listed_as_given(
    client: openai.OpenAI, model: ScriptedModel, kind: str
) -> None:
    filename, media_type, data, phrase = FILES[kind]
    uploaded = client.files.create(file=(filename, data), purpose="user_data")
    conversation = client.conversations.create()
    given: list[Any] = [
        {"type": "input_file", "file_id": uploaded.id},
        {"type": "input_file", "filename": filename, "file_data": data_url(media_type, data)},
    ]
    for part in given:
        model.script(Reply(text="Read it."))
        response = client.responses.create(
            model="gpt-4o",
            conversation=conversation.id,
            input=[{"role": "user", "content": [{"type": "input_text", "text": "Summarise:"}, part]}],
        )
        assert response.status == "completed", response.error
        # The model sees the file's text, marked with its name, after the user's words.
        seen = user_text(model)
        assert seen.startswith(f'Summarise:\n<file name="{filename}">\n')
        assert phrase in seen and seen.endswith("\n</file>\n")
        assert base64.b64encode(data).decode()[:40] not in seen
    # Listed back as the parts the client sent: the id and the name, never the extracted text.
    items = client.conversations.items.list(conversation.id, order="asc").data
    users = [item.model_dump() for item in items if getattr(item, "role", None) == "user"]
    listed = [user["content"][1] for user in users]
    assert [(p["type"], p["file_id"], p["filename"]) for p in listed] == [
        ("input_file", uploaded.id, filename),
        ("input_file", None, filename),
    ]
    assert phrase not in str(users)
    inputs = client.responses.input_items.list(response.id).data
    assert inputs[0].model_dump()["content"][1]["filename"] == filename
    # The next turn of the conversation shows both files again, without a new upload or parse.
    model.script(Reply(text="Both."))
    client.responses.create(model="gpt-4o", conversation=conversation.id, input="And now?")
    earlier = [m["content"] for m in model.requests[-1]["messages"] if m["role"] == "user"][:2]
    assert all(phrase in text for text in earlier)


def test_conversation_items_take_input_files(client: openai.OpenAI, model: ScriptedModel) -> None:
    filename, _, data, phrase = FILES["docx"]
    uploaded = client.files.create(file=(filename, data), purpose="user_data")
    conversation = client.conversations.create(
        items=[{"role": "user", "content": [{"type": "input_file", "file_id": uploaded.id}]}]
    )
    added = client.conversations.items.create(
        conversation.id,
        items=[
            {
                "role": "user",
                "content": [{"type": "input_file", "file_id": uploaded.id, "filename": "b.docx"}],
            }
        ],
    )
    assert added.data[0].model_dump()["content"][0]["filename"] == "b.docx"
    model.script(Reply(text="Seen."))
    client.responses.create(model="gpt-4o", conversation=conversation.id, input="What was decided?")
    users = [m["content"] for m in model.requests[-1]["messages"] if m["role"] == "user"]
    assert users[0].startswith(f'<file name="{filename}">') and phrase in users[0]
    assert users[1].startswith('<file name="b.docx">') and phrase in users[1]


def test_input_file_text_is_counted_against_the_context_budget(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    _, media_type, data, _ = FILES["text"]
    part: Any = {"type": "input_file", "filename": "notes.md", "file_data": data_url(media_type, data)}
    bare = client.responses.input_tokens.count(model="gpt-4o", input=[{"role": "user", "content": "Hi"}])
    with_file = client.responses.input_tokens.count(
        model="gpt-4o", input=[{"role": "user", "content": [{"type": "input_text", "text": "Hi"}, part]}]
    )
    assert with_file.input_tokens > bare.input_tokens + 10
    assert not model.requests


def test_a_file_over_the_context_window_fails_the_response_unsent(
    make_server: Callable[..., ThreadlineServer], model: ScriptedModel
) -> None:
    server = make_server(default_context_window=1024)
    text = " ".join(f"line {i} of the long appendix." for i in range(800)).encode()
    part: Any = {"type": "input_file", "filename": "appendix.txt", "file_data": data_url("text/plain", text)}
    with openai.OpenAI(base_url=server.url, api_key="x", max_retries=0) as client:
        response = client.responses.create(model="gpt-4o", input=[{"role": "user", "content": [part]}])
        assert response.status == "failed" and response.error is not None
        assert response.error.code == "invalid_prompt"
        assert model.requests == []
        # The same file, short enough, is sent.
        model.script(Reply(text="ok"))
        part["file_data"] = data_url("text/plain", text[:400])
        fits = client.responses.create(model="gpt-4o", input=[{"role": "user", "content": [part]}])
        assert fits.status == "completed" and "line 1 of" in user_text(model)


def test_refusals_name_the_part(make_server: Callable[..., ThreadlineServer], model: ScriptedModel) -> None:
    server = make_server(admin_key=ADMIN, input_file_max_characters=300, file_max_bytes=1000)
    ours, theirs = (sdk(server, new_project(server, name)[1]) for name in ("ours", "theirs"))
    with ours, theirs:
        foreign = theirs.files.create(file=("notes.md", b"their secret notes"), purpose="user_data")

        def refused(part: dict[str, Any]) -> dict[str, Any]:
            body = {
                "model": "gpt-4o",
                "input": [
                    {"role": "user", "content": "first"},
                    {"role": "user", "content": [{"type": "input_text", "text": "Read"}, part]},
                ],
            }
            reply = httpx.post(
                f"{server.url}/responses", json=body, headers={"Authorization": f"Bearer {ours.api_key}"}
            )
            assert reply.status_code == 400, reply.text
            error: dict[str, Any] = reply.json()["error"]
            return error

        error = refused({"type": "input_file", "file_id": foreign.id})
        assert error["param"] == "input[1].content[1].file_id" and foreign.id in error["message"]
        error = refused({"type": "input_file", "file_id": "file-nope"})
        assert error["param"] == "input[1].content[1].file_id"
        long_text = data_url("text/plain", b"word " * 100)
        error = refused({"type": "input_file", "filename": "long.txt", "file_data": long_text})
        assert error["param"] == "input[1].content[1]" and error["code"] == "invalid_file"
        assert (
            "300 characters" in error["message"]
            and "THREADLINE_INPUT_FILE_MAX_CHARACTERS" in error["message"]
        )
        error = refused({"type": "input_file", "filename": "big.txt", "file_data": data_url("", b"x" * 2000)})
        assert (
            error["param"] == "input[1].content[1].file_data"
            and "THREADLINE_FILE_MAX_BYTES" in error["message"]
        )
        damaged = data_url(
            "application/pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R >>\nendobj\n%%EOF"
        )
        error = refused({"type": "input_file", "filename": "broken.pdf", "file_data": damaged})
        assert error["param"] == "input[1].content[1]" and error["code"] == "invalid_file"
        assert "broken.pdf" in error["message"]
        # File search's limits hold too: JSON nested past THREADLINE_FILE_MAX_JSON_DEPTH.
        deep = data_url("application/json", b"[" * 120 + b"]" * 120)
        error = refused({"type": "input_file", "filename": "deep.json", "file_data": deep})
        assert error["code"] == "invalid_file" and "THREADLINE_FILE_MAX_JSON_DEPTH" in error["message"]
        # A URL is fetched through the remote guard: the cloud metadata address is refused unasked.
        error = refused({"type": "input_file", "file_url": "http://169.254.169.254/latest/meta-data/"})
        assert error["param"] == "input[1].content[1].file_url" and error["code"] == "url_not_allowed"
        assert "cloud metadata" in error["message"]
        error = refused(
            {"type": "input_file", "filename": "x.txt", "file_data": "data:text/plain;base64,@@@"}
        )
        assert error["param"] == "input[1].content[1].file_data"
        error = refused({"type": "input_file", "filename": "tool.exe", "file_data": data_url("", b"MZ\x90")})
        assert error["code"] == "unsupported_file"
        # Nothing was sent to the model, and nothing was stored: the conversation list is untouched.
        assert not model.requests


def test_an_image_file_goes_to_the_model_as_an_image(client: openai.OpenAI, model: ScriptedModel) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    uploaded = client.files.create(file=("chart.png", png), purpose="vision")
    model.script(Reply(text="A chart."))
    response = client.responses.create(
        model="gpt-4o",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_file", "file_id": uploaded.id},
                    {"type": "input_file", "filename": "inline.png", "file_data": data_url("image/png", png)},
                ],
            }
        ],
    )
    assert response.status == "completed", response.error
    url = data_url("image/png", png)
    assert model.requests[-1]["messages"][-1]["content"] == [
        {"type": "image_url", "image_url": {"url": url, "detail": "auto"}},
        {"type": "image_url", "image_url": {"url": url, "detail": "auto"}},
    ]
    listed = client.responses.input_items.list(response.id).data[0].model_dump()["content"]
    assert [(p["type"], p["file_id"], p["filename"]) for p in listed] == [
        ("input_file", uploaded.id, "chart.png"),
        ("input_file", None, "inline.png"),
    ]


def test_chat_completions_file_parts_are_read_the_same_way(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    filename, media_type, data, phrase = FILES["pdf"]
    uploaded = client.files.create(file=(filename, data), purpose="user_data")
    for file in (
        {"file_id": uploaded.id},
        {"filename": "inline.pdf", "file_data": data_url(media_type, data)},
    ):
        model.script(Reply(text="Read."))
        completion = client.chat.completions.create(
            model="gpt-4o",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Summarise:"}, {"type": "file", "file": file}],
                }  # type: ignore[list-item, misc]
            ],
        )
        assert completion.choices[0].message.content == "Read."
        sent = model.requests[-1]["messages"][-1]["content"]
        assert sent[0] == {"type": "text", "text": "Summarise:"}
        name = file.get("filename", filename)
        assert sent[1]["type"] == "text" and sent[1]["text"].startswith(f'<file name="{name}">\n')
        assert phrase in sent[1]["text"]
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-nope"}}]}],
        )
    assert refused.value.body["param"] == "messages[0].content[0].file.file_id"  # type: ignore[index]


def test_a_file_by_url_is_fetched_through_the_guard_and_bounded(
    make_server: Callable[..., ThreadlineServer], model: ScriptedModel
) -> None:
    server = make_server(remote_allow="127.0.0.1/32", remote_max_bytes=4096)
    with FakeWeb() as web, openai.OpenAI(base_url=server.url, api_key="k", max_retries=0) as client:
        model.script(Reply(text="Read it."))
        part = {"type": "input_file", "file_url": web.page_url("bell-rock")}
        response = client.responses.create(
            model="gpt-4o",
            input=[{"role": "user", "content": [{"type": "input_text", "text": "Sum up:"}, part]}],
        )
        assert response.status == "completed", response.error
        seen = user_text(model)
        # The page's text (not its markup or scripts) under the name its URL ends in.
        assert seen.startswith('Sum up:\n<file name="bell-rock">\n') and "first lit in 1811" in seen
        assert "<p>" not in seen and "tracking" not in seen
        listed = client.responses.input_items.list(response.id).data[0].model_dump()["content"][1]
        assert (listed["file_url"], listed["filename"], listed["file_id"]) == (
            part["file_url"],
            "bell-rock",
            None,
        )
        # Bounded as the guard bounds every fetch: past THREADLINE_REMOTE_MAX_BYTES it is a 400.
        with pytest.raises(openai.BadRequestError) as caught:
            too_large = {"type": "input_file", "file_url": web.url("/bytes?n=5000")}
            client.responses.create(model="gpt-4o", input=[{"role": "user", "content": [too_large]}])
        error = caught.value.body
        assert isinstance(error, dict)
        assert (error["param"], error["code"]) == ("input[0].content[0].file_url", "response_too_large")
