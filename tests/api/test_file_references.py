"""Attachments, ``image_file`` parts and tool resources name files that exist; deleting a file
takes it out of the tool resources that name it."""

from __future__ import annotations

from typing import Any

import openai
import pytest

MISSING = "file-doesnotexist000000000000"


def _upload(client: openai.OpenAI, name: str = "data.csv") -> str:
    return client.files.create(file=(name, b"a,b\n1,2\n"), purpose="assistants").id


def _refused(call: Any, param: str, message: str | None = None) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    assert caught.value.body == {
        "message": message or f"No file found with id '{MISSING}'.",
        "type": "invalid_request_error",
        "param": param,
        "code": None,
    }


def test_attachments_with_unknown_files_are_refused(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create()
    known = _upload(client)
    attachments: Any = [
        {"file_id": known, "tools": [{"type": "file_search"}]},
        {"file_id": MISSING, "tools": [{"type": "code_interpreter"}]},
    ]
    _refused(
        lambda: client.beta.threads.messages.create(
            thread_id=thread.id, role="user", content="Look.", attachments=attachments
        ),
        "attachments[1].file_id",
    )
    _refused(
        lambda: client.beta.threads.create(
            messages=[{"role": "user", "content": "Look.", "attachments": attachments}]
        ),
        "messages[0].attachments[1].file_id",
    )
    assistant = client.beta.assistants.create(model="gpt-4o")
    _refused(
        lambda: client.beta.threads.runs.create(
            thread_id=thread.id,
            assistant_id=assistant.id,
            additional_messages=[{"role": "user", "content": "Look.", "attachments": attachments}],
        ),
        "additional_messages[0].attachments[1].file_id",
    )
    _refused(
        lambda: client.beta.threads.create_and_run(
            assistant_id=assistant.id,
            thread={"messages": [{"role": "user", "content": "Look.", "attachments": attachments}]},
        ),
        "thread.messages[0].attachments[1].file_id",
    )
    # Nothing was written by any of them.
    assert client.beta.threads.messages.list(thread_id=thread.id).data == []
    assert client.beta.threads.runs.list(thread_id=thread.id).data == []


def test_ids_that_are_not_file_ids_get_openais_text(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create()
    _refused(
        lambda: client.beta.threads.messages.create(
            thread_id=thread.id,
            role="user",
            content="Look.",
            attachments=[{"file_id": "31abac64", "tools": [{"type": "file_search"}]}],
        ),
        "attachments[0].file_id",
        "Invalid 'attachments[0].file_id': '31abac64'. Expected an ID that begins with 'file'.",
    )


def test_image_file_parts_must_name_existing_files(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create()
    _refused(
        lambda: client.beta.threads.messages.create(
            thread_id=thread.id,
            role="user",
            content=[
                {"type": "text", "text": "What is in it?"},
                {"type": "image_file", "image_file": {"file_id": MISSING}},
            ],
        ),
        "content[1].image_file.file_id",
    )
    image = client.files.create(file=("chart.png", b"\x89PNG\r\n\x1a\n"), purpose="vision").id
    message = client.beta.threads.messages.create(
        thread_id=thread.id,
        role="user",
        content=[{"type": "image_file", "image_file": {"file_id": image}}],
    )
    assert message.content[0].type == "image_file" and message.content[0].image_file.file_id == image


def test_tool_resources_must_name_existing_files(client: openai.OpenAI) -> None:
    resources: Any = {"code_interpreter": {"file_ids": [MISSING]}}
    param = "tool_resources.code_interpreter.file_ids[0]"
    _refused(lambda: client.beta.assistants.create(model="gpt-4o", tool_resources=resources), param)
    assistant = client.beta.assistants.create(model="gpt-4o")
    _refused(lambda: client.beta.assistants.update(assistant.id, tool_resources=resources), param)
    _refused(lambda: client.beta.threads.create(tool_resources=resources), param)
    thread = client.beta.threads.create()
    _refused(lambda: client.beta.threads.update(thread.id, tool_resources=resources), param)
    _refused(
        lambda: client.beta.threads.create(
            tool_resources={"file_search": {"vector_stores": [{"file_ids": [MISSING]}]}}
        ),
        "tool_resources.file_search.vector_stores[0].file_ids[0]",
    )
    assert client.beta.assistants.retrieve(assistant.id).tool_resources.code_interpreter is None


def test_attached_files_join_the_threads_code_interpreter_resources(client: openai.OpenAI) -> None:
    first, second, searched = _upload(client), _upload(client), _upload(client, "manual.md")
    thread = client.beta.threads.create(
        messages=[
            {
                "role": "user",
                "content": "Here is the data.",
                "attachments": [{"file_id": first, "tools": [{"type": "code_interpreter"}]}],
            }
        ]
    )
    assert thread.tool_resources.code_interpreter.file_ids == [first]
    message = client.beta.threads.messages.create(
        thread_id=thread.id,
        role="user",
        content="And more.",
        attachments=[
            {"file_id": second, "tools": [{"type": "code_interpreter"}, {"type": "file_search"}]},
            {"file_id": first, "tools": [{"type": "code_interpreter"}]},
            {"file_id": searched, "tools": [{"type": "file_search"}]},
        ],
    )
    # Attachments stay recorded on the message; those for file_search go into the thread's store.
    assert [a.file_id for a in message.attachments] == [second, first, searched]
    assert message.attachments[2].tools[0].type == "file_search"
    resources = client.beta.threads.retrieve(thread.id).tool_resources
    assert resources.code_interpreter.file_ids == [first, second]
    [store_id] = resources.file_search.vector_store_ids
    in_store = client.vector_stores.files.list(store_id).data
    assert sorted(f.id for f in in_store) == sorted([second, searched])


def test_deleting_a_file_takes_it_out_of_tool_resources(client: openai.OpenAI) -> None:
    kept, doomed = _upload(client), _upload(client)
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        tools=[{"type": "code_interpreter"}],
        tool_resources={"code_interpreter": {"file_ids": [kept, doomed]}},
    )
    other = client.beta.assistants.create(
        model="gpt-4o", tool_resources={"code_interpreter": {"file_ids": [kept]}}
    )
    thread = client.beta.threads.create(tool_resources={"code_interpreter": {"file_ids": [doomed, kept]}})

    client.files.delete(doomed)

    assert client.beta.assistants.retrieve(assistant.id).tool_resources.code_interpreter.file_ids == [kept]
    assert client.beta.assistants.retrieve(other.id).tool_resources.code_interpreter.file_ids == [kept]
    assert client.beta.threads.retrieve(thread.id).tool_resources.code_interpreter.file_ids == [kept]
    _refused(
        lambda: client.beta.assistants.update(
            assistant.id, tool_resources={"code_interpreter": {"file_ids": [doomed]}}
        ),
        "tool_resources.code_interpreter.file_ids[0]",
        f"No file found with id '{doomed}'.",
    )
