"""Image parts of messages reach the model: ``image_url`` as is and uploaded images as data URLs for a
model that sees; described in words for one that does not; never dropped."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import openai

from tests.support import ThreadlineServer
from threadline.providers.local_tools import plain_messages
from threadline.testing import Reply, ScriptedModel

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def test_image_parts_reach_an_upstream_model(client: openai.OpenAI, model: ScriptedModel) -> None:
    image = client.files.create(file=("chart.png", PNG), purpose="vision")
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What do these show?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
                    {"type": "image_file", "image_file": {"file_id": image.id}},
                ],
            }
        ]
    )
    model.script(Reply(text="Two charts."))
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"
    content = model.requests[0]["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "What do these show?"}
    assert content[1] == {
        "type": "image_url",
        "image_url": {"url": "https://example.com/a.png", "detail": "low"},
    }
    # The uploaded image goes as a data URL of its bytes.
    assert content[2] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode(), "detail": "auto"},
    }


def test_a_file_that_is_not_an_image_is_described_not_sent(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    fake = client.files.create(file=("chart.png", b"just some text, named like a picture"), purpose="vision")
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": [{"type": "image_file", "image_file": {"file_id": fake.id}}]}]
    )
    model.script(Reply(text="I see no picture."))
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"
    sent = model.requests[0]["messages"][-1]["content"]
    assert fake.id in sent and "image" in sent


def test_a_route_without_vision_is_told_in_words(
    make_server: Callable[..., ThreadlineServer], model: ScriptedModel, tmp_path: Path
) -> None:
    models_file = tmp_path / "models.yaml"
    models_file.write_text(
        f"models:\n  - name: '*'\n    provider: openai\n    base_url: {model.base_url}\n    vision: false\n",
        encoding="utf-8",
    )
    server = make_server(models_file=str(models_file), upstream_base_url="")
    with openai.OpenAI(base_url=server.url, api_key="x", max_retries=0) as client:
        image = client.files.create(file=("chart.png", PNG), purpose="vision")
        model.script(Reply(text="Told."))
        response = client.responses.create(
            model="text-only",
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Look:"},
                        {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "auto"},
                        {"type": "input_image", "file_id": image.id, "detail": "auto"},
                    ],
                }
            ],
        )
        assert response.status == "completed"
    sent = model.requests[0]["messages"][-1]["content"]
    assert isinstance(sent, str) and sent.startswith("Look:")
    assert "cannot see" in sent and image.id in sent and "data:" not in sent


def test_a_local_model_is_told_of_an_image_it_cannot_see() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe it."},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        }
    ]
    [rendered] = plain_messages(messages)
    assert rendered["content"].startswith("Describe it.\n")
    assert "image" in rendered["content"] and "cannot see" in rendered["content"]


def test_an_image_url_that_is_not_an_address_is_refused(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create()
    for url in ("", "cat.png", "ftp://example.com/cat.png", "data:"):
        try:
            client.beta.threads.messages.create(
                thread_id=thread.id,
                role="user",
                content=[{"type": "image_url", "image_url": {"url": url}}],
            )
        except openai.BadRequestError as refused:
            assert "image_url" in str(refused.body), refused.body
        else:
            raise AssertionError(f"{url!r} was accepted")
    assert client.beta.threads.messages.list(thread_id=thread.id).data == []
