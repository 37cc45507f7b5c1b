"""Image parts of messages reach the model: ``image_url`` as is, ``image_file`` described, never dropped."""

from __future__ import annotations

import openai

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
    assert content[2]["type"] == "text" and image.id in content[2]["text"]


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
