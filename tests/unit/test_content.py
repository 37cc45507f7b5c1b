"""Message content and a response's settings as typed values: every stored shape reads back to the
same JSON (rows written before the values were typed included), and messages, deltas and runs cross
a process bus unchanged."""

from __future__ import annotations

import json
from typing import Any

import pytest

from threadline.domain.content import (
    FileCitation,
    FilePath,
    ImageFile,
    ImageUrl,
    InputFile,
    ItemFields,
    Refusal,
    Text,
    UrlCitation,
)
from threadline.domain.entities import Message, ResponseSettings, Run
from threadline.domain.events import MessageDelta, ObjectEvent
from threadline.domain.records import content_from, content_record, response_from, response_record
from threadline.events.codec import decode, dumps, encode

STORED: list[dict[str, Any]] = [
    {"type": "text", "text": {"value": "plain", "annotations": []}},
    {
        "type": "text",
        "text": {
            "value": "See【0:0†a.txt】 and sandbox:/mnt/data/out.csv",
            "annotations": [
                {
                    "type": "file_citation",
                    "text": "【0:0†a.txt】",
                    "start_index": 3,
                    "end_index": 14,
                    "file_citation": {"file_id": "file-a"},
                },
                {
                    "type": "file_path",
                    "text": "sandbox:/mnt/data/out.csv",
                    "start_index": 19,
                    "end_index": 44,
                    "file_path": {"file_id": "file-out"},
                },
            ],
        },
    },
    {"type": "refusal", "refusal": "No."},
    {"type": "image_file", "image_file": {"file_id": "file-chart"}},
    {"type": "image_file", "image_file": {"file_id": "file-photo", "detail": "low"}},
    {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "auto"}},
    {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}},
    {"type": "input_file", "input_file": {"file_id": "file-doc", "filename": "a.txt", "text": "hello"}},
    {"type": "input_file", "input_file": {"file_id": "file-img", "filename": "a.png", "image": True}},
    {
        "type": "input_file",
        "input_file": {"file_id": None, "filename": "b.png", "image_url": "data:image/png;base64,AA"},
    },
    {"call_id": "call_1", "name": "get_weather", "arguments": "{}"},
]


@pytest.mark.parametrize("stored", STORED, ids=lambda s: str(s.get("type", "item")))
def test_every_stored_part_reads_back_as_it_was_written(stored: dict[str, Any]) -> None:
    assert content_record(content_from([stored])) == [stored]
    assert list(content_record(content_from([stored]))[0]) == list(stored)  # key order too


def test_parts_read_as_their_typed_values() -> None:
    text, refusal, chart, url, doc, item = content_from(
        [STORED[1], STORED[2], STORED[3], STORED[5], STORED[7], STORED[-1]]
    )
    assert text == Text(
        "See【0:0†a.txt】 and sandbox:/mnt/data/out.csv",
        (
            FileCitation("【0:0†a.txt】", 3, 14, "file-a"),
            FilePath("sandbox:/mnt/data/out.csv", 19, 44, "file-out"),
        ),
    )
    assert chart == ImageFile("file-chart") and url == ImageUrl("https://example.com/a.png", "auto")
    assert doc == InputFile("file-doc", "a.txt", "hello")
    assert item == ItemFields({"call_id": "call_1", "name": "get_weather", "arguments": "{}"})
    assert refusal == Refusal("No.")


def test_a_url_citation_is_stored_and_read_back() -> None:
    link = "https://example.com/w"
    cited = Text(f"See {link}.", (UrlCitation(link, 4, 4 + len(link), link, "Weather"),))
    assert content_from(content_record([cited])) == [cited]


def test_messages_and_deltas_cross_a_process_bus_unchanged() -> None:
    message = Message("msg_1", "thread_1", 1, "assistant", content_from(STORED[:4]))
    delta = MessageDelta(
        "msg_1", 0, "", annotations=(UrlCitation("example.com", 0, 11, "https://example.com", "Example"),)
    )
    for event in (ObjectEvent("thread.message.completed", message), delta):
        assert decode(json.loads(dumps(encode(event)))) == event


SETTINGS: dict[str, Any] = {
    "tools": [{"type": "function", "name": "f", "parameters": {}}],
    "tool_choice": "auto",
    "text": {"format": {"type": "text"}},
    "include": ["file_search_call.results"],
    "truncation": "disabled",
    "reasoning": None,
    "user": None,
    "max_tool_calls": None,
    "top_logprobs": 0,
    "safety_identifier": None,
    "prompt_cache_key": None,
    "prompt_cache_retention": None,
    "prompt_cache_options": None,
    "instructions": "Be brief.",
    "previous_response_id": "resp_0",
    "conversation": None,
    "background": True,
    "store": False,
    "tool_resources": {},
    "input_ids": ["msg_1"],
}


def test_a_responses_settings_read_back_as_they_were_written() -> None:
    settings = response_from(SETTINGS)
    assert settings is not None and settings.store is False and settings.input_ids == ["msg_1"]
    assert response_record(settings) == SETTINGS and list(response_record(settings) or {}) == list(SETTINGS)


def test_an_older_rows_missing_settings_take_their_defaults() -> None:
    settings = response_from({"background": True, "include": None, "input_ids": ["msg_1"]})
    assert settings == ResponseSettings(background=True, input_ids=["msg_1"])
    assert settings.store is True and settings.include == [] and settings.tool_choice == "auto"
    assert response_from(None) is None


def test_a_runs_settings_cross_a_process_bus_unchanged() -> None:
    run = Run("resp_1", "thread_1", "", 1, "m", "", response=response_from(SETTINGS))
    event = ObjectEvent("thread.run.created", run)
    assert decode(json.loads(dumps(encode(event)))) == event
