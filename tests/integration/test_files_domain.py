"""Unit tests of the file rules in ``domain/files.py``: names, types, references, tool resources."""

from __future__ import annotations

from typing import Any

import pytest

from threadline.domain.commands import NewMessage, NewRun, NewThread, NewThreadAndRun
from threadline.domain.entities import Message
from threadline.domain.files import (
    FileRef,
    attached_code_files,
    attached_search_files,
    check_filename,
    content_type_for,
    thread_store_id,
    with_code_files,
    with_search_store,
    without_file,
)
from threadline.errors import InvalidRequestError


@pytest.mark.parametrize("name", ["report.pdf", "данные 2024.csv", ".env", "a..b.txt", "x" * 255])
def test_plain_filenames_are_accepted(name: str) -> None:
    assert check_filename(name) == name


@pytest.mark.parametrize(
    "name", ["", " ", "../x", "a/b", "a\\b", "..", ".", "C:\\x.txt", "a\x00b", "a\nb", "é" * 128]
)
def test_filenames_that_are_not_plain_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_filename(name)
    assert caught.value.param == "file"


@pytest.mark.parametrize(
    ("name", "declared", "expected"),
    [
        ("a.txt", None, "text/plain"),
        ("A.PNG", "application/octet-stream", "image/png"),
        ("data.jsonl", None, "application/jsonl"),
        ("notes.md", None, "text/markdown"),
        ("blob", "application/x-custom; charset=binary", "application/x-custom"),
        ("blob", "application/octet-stream", "application/octet-stream"),
        ("blob", None, "application/octet-stream"),
        ("blob", "text/html\x00<script>", "application/octet-stream"),
        ("blob", "not a type", "application/octet-stream"),
    ],
)
def test_content_types(name: str, declared: str | None, expected: str) -> None:
    assert content_type_for(name, declared) == expected


def test_references_are_found_wherever_a_request_names_files() -> None:
    message = NewMessage(
        "user",
        [{"type": "text", "text": "x"}, {"type": "image_file", "image_file": {"file_id": "file-img"}}],
        attachments=[{"file_id": "file-att", "tools": []}],
    )
    resources: dict[str, Any] = {
        "code_interpreter": {"file_ids": ["file-ci"]},
        "file_search": {"vector_store_ids": ["vs_1"], "vector_stores": [{"file_ids": ["file-vs"]}]},
    }
    thread = NewThread([message], {"code_interpreter": {"file_ids": ["file-t"]}})
    command = NewThreadAndRun(NewRun("asst_1", additional_messages=[message]), thread, resources)
    assert command.file_refs() == [
        FileRef("file-ci", "tool_resources.code_interpreter.file_ids[0]"),
        FileRef("file-vs", "tool_resources.file_search.vector_stores[0].file_ids[0]"),
        FileRef("file-att", "additional_messages[0].attachments[0].file_id"),
        FileRef("file-img", "additional_messages[0].content[1].image_file.file_id"),
        FileRef("file-t", "thread.tool_resources.code_interpreter.file_ids[0]"),
        FileRef("file-att", "thread.messages[0].attachments[0].file_id"),
        FileRef("file-img", "thread.messages[0].content[1].image_file.file_id"),
    ]
    assert NewMessage("user", "plain text").file_refs() == []


def _message(*attachments: tuple[str, list[str]]) -> Message:
    return Message(
        id="msg_1",
        thread_id="thread_1",
        created_at=0,
        role="user",
        content=[],
        attachments=[{"file_id": f, "tools": [{"type": t} for t in tools]} for f, tools in attachments],
    )


def test_code_interpreter_attachments_join_tool_resources_once() -> None:
    messages = [
        _message(("file-a", ["code_interpreter"]), ("file-b", ["file_search"])),
        _message(("file-c", ["file_search", "code_interpreter"]), ("file-a", ["code_interpreter"])),
    ]
    assert attached_code_files(messages) == ["file-a", "file-c"]
    resources = {"code_interpreter": {"file_ids": ["file-c"]}, "file_search": {"vector_store_ids": ["vs_1"]}}
    assert with_code_files(resources, ["file-a", "file-c"]) == {
        "code_interpreter": {"file_ids": ["file-c", "file-a"]},
        "file_search": {"vector_store_ids": ["vs_1"]},
    }
    assert resources["code_interpreter"]["file_ids"] == ["file-c"]  # the input is left alone
    assert with_code_files(resources, ["file-c"]) is None
    assert with_code_files(None, ["file-a"]) == {"code_interpreter": {"file_ids": ["file-a"]}}


def test_file_search_attachments_name_the_threads_one_store() -> None:
    messages = [
        _message(("file-a", ["code_interpreter"]), ("file-b", ["file_search"])),
        _message(("file-c", ["file_search", "code_interpreter"]), ("file-b", ["file_search"])),
    ]
    assert attached_search_files(messages) == ["file-b", "file-c"]
    assert attached_search_files([_message(("file-a", ["code_interpreter"]))]) == []
    assert thread_store_id(None) is None
    assert thread_store_id({"file_search": {"vector_store_ids": []}}) is None
    resources = {
        "code_interpreter": {"file_ids": ["file-a"]},
        "file_search": {"vector_store_ids": ["vs_old"]},
    }
    assert thread_store_id(resources) == "vs_old"
    assert with_search_store(resources, "vs_new") == {
        "code_interpreter": {"file_ids": ["file-a"]},
        "file_search": {"vector_store_ids": ["vs_new"]},
    }
    assert resources["file_search"] == {"vector_store_ids": ["vs_old"]}  # the input is left alone
    assert with_search_store(None, "vs_new") == {"file_search": {"vector_store_ids": ["vs_new"]}}


def test_a_deleted_file_leaves_tool_resources() -> None:
    resources = {
        "code_interpreter": {"file_ids": ["file-a", "file-b"]},
        "file_search": {"vector_stores": [{"file_ids": ["file-b"], "metadata": {}}]},
    }
    assert without_file(resources, "file-b") == {
        "code_interpreter": {"file_ids": ["file-a"]},
        "file_search": {"vector_stores": [{"file_ids": [], "metadata": {}}]},
    }
    assert without_file(resources, "file-z") is None
    assert without_file(None, "file-a") is None
    # An id that only looks like another one is not touched.
    assert without_file({"code_interpreter": {"file_ids": ["file-ab"]}}, "file-a") is None
