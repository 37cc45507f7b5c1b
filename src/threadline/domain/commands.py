"""Commands: what a create or modify request asks of the services, as typed values.

The API builds them from its wire schemas (each request schema's ``command()``) and the services
take nothing else, so the services and the routes agree on names the type checker sees instead of
the keys of a dict. Tool definitions, tool resources, response formats and message parts keep the
wire's JSON shape: that is how assistants, threads and runs store them.

An update says which fields the client sent: a field left as :data:`KEEP` keeps its value, any
other value (``None`` included) replaces it.

``NewResponse`` is the one command a service changes (its input, once item references are
resolved); the others are frozen.

Each Assistants command also names the files it refers to (``file_refs``), with the request parameter each is
at, so an unknown file is refused with OpenAI's error naming where it was given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from threadline.domain.content import ImageFile, Part
from threadline.domain.entities import JSON
from threadline.domain.files import FileRef
from threadline.domain.response_items import Input
from threadline.domain.updates import KEEP, Keep

Resources = dict[str, Any]
"""``tool_resources`` as stored: ``{"code_interpreter": {"file_ids": [...]}, "file_search": {...}}``."""


def _changes(update: object) -> dict[str, Any]:
    """The fields of an update the client sent, by name (for :func:`dataclasses.replace`)."""
    assert dataclasses.is_dataclass(update)
    sent = {f.name: getattr(update, f.name) for f in dataclasses.fields(update)}
    return {name: value for name, value in sent.items() if value is not KEEP}


def resource_refs(resources: Resources | None, at: str = "") -> list[FileRef]:
    """The files ``tool_resources`` name: code interpreter files, and the files of the vector
    stores ``file_search`` makes. (Vector store ids are checked by the vector store service.)"""
    refs: list[FileRef] = []
    code = (resources or {}).get("code_interpreter") or {}
    for i, file_id in enumerate(code.get("file_ids") or []):
        refs.append(FileRef(file_id, f"{at}tool_resources.code_interpreter.file_ids[{i}]"))
    search = (resources or {}).get("file_search") or {}
    for j, store in enumerate(search.get("vector_stores") or []):
        for i, file_id in enumerate(store.get("file_ids") or []):
            refs.append(FileRef(file_id, f"{at}tool_resources.file_search.vector_stores[{j}].file_ids[{i}]"))
    return refs


def content_refs(content: str | Sequence[dict[str, Any] | Part], at: str = "") -> list[FileRef]:
    """The files a message's ``image_file`` parts show (request parts, or parsed ones)."""
    if isinstance(content, str):
        return []
    refs: list[FileRef] = []
    for i, part in enumerate(content):
        if isinstance(part, ImageFile):
            refs.append(FileRef(part.file_id, f"{at}content[{i}].image_file.file_id"))
        elif isinstance(part, dict) and part.get("type") == "image_file":
            refs.append(FileRef(part["image_file"]["file_id"], f"{at}content[{i}].image_file.file_id"))
    return refs


@dataclass(frozen=True, slots=True)
class NewAssistant:
    model: str
    name: str | None = None
    description: str | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_resources: Resources | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    temperature: float | None = None
    top_p: float | None = None
    response_format: JSON = "auto"
    reasoning_effort: str | None = None

    def file_refs(self) -> list[FileRef]:
        return resource_refs(self.tool_resources)


@dataclass(frozen=True, slots=True)
class AssistantUpdate:
    model: str | Keep = KEEP
    name: str | Keep | None = KEEP
    description: str | Keep | None = KEEP
    instructions: str | Keep | None = KEEP
    tools: list[dict[str, Any]] | Keep = KEEP
    tool_resources: Resources | Keep | None = KEEP
    metadata: dict[str, str] | Keep = KEEP
    temperature: float | Keep | None = KEEP
    top_p: float | Keep | None = KEEP
    response_format: JSON = KEEP
    reasoning_effort: str | Keep | None = KEEP

    def changes(self) -> dict[str, Any]:
        return _changes(self)

    def file_refs(self) -> list[FileRef]:
        return [] if self.tool_resources is KEEP else resource_refs(self.tool_resources)


@dataclass(frozen=True, slots=True)
class NewMessage:
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]
    """A string, or request parts: ``text`` (``{"type": "text", "text": ...}``), ``image_file``, ``image_url``."""
    attachments: list[dict[str, Any]] | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def file_refs(self, at: str = "") -> list[FileRef]:
        refs = [
            FileRef(a["file_id"], f"{at}attachments[{i}].file_id")
            for i, a in enumerate(self.attachments or [])
        ]
        return refs + content_refs(self.content, at)


def _messages_refs(messages: list[NewMessage], at: str) -> list[FileRef]:
    return [ref for i, message in enumerate(messages) for ref in message.file_refs(f"{at}[{i}].")]


@dataclass(frozen=True, slots=True)
class NewThread:
    messages: list[NewMessage] = field(default_factory=list)
    tool_resources: Resources | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def file_refs(self, at: str = "") -> list[FileRef]:
        return resource_refs(self.tool_resources, at) + _messages_refs(self.messages, f"{at}messages")


@dataclass(frozen=True, slots=True)
class ThreadUpdate:
    metadata: dict[str, str] | Keep = KEEP
    tool_resources: Resources | Keep | None = KEEP

    def changes(self) -> dict[str, Any]:
        return _changes(self)

    def file_refs(self) -> list[FileRef]:
        return [] if self.tool_resources is KEEP else resource_refs(self.tool_resources)


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run to queue. Fields left ``None`` take the assistant's value (or the API's default)."""

    assistant_id: str
    model: str | None = None
    instructions: str | None = None
    additional_instructions: str | None = None
    additional_messages: list[NewMessage] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    temperature: float | None = None
    top_p: float | None = None
    max_prompt_tokens: int | None = None
    max_completion_tokens: int | None = None
    truncation_strategy: dict[str, Any] | None = None
    tool_choice: JSON = None
    parallel_tool_calls: bool | None = None
    response_format: JSON = None
    reasoning_effort: str | None = None

    def file_refs(self) -> list[FileRef]:
        return _messages_refs(self.additional_messages, "additional_messages")


@dataclass(frozen=True, slots=True)
class NewThreadAndRun:
    """``POST /threads/runs``: a thread made and run in one go."""

    run: NewRun
    thread: NewThread = field(default_factory=NewThread)
    tool_resources: Resources | None = None
    """The thread's tool resources given beside it; when given, they take the place of ``thread``'s."""

    def file_refs(self) -> list[FileRef]:
        return resource_refs(self.tool_resources) + self.run.file_refs() + self.thread.file_refs("thread.")


@dataclass(frozen=True, slots=True)
class FunctionOutput:
    """The output a client submits for one of a run's function calls."""

    tool_call_id: str | None
    output: str | None


@dataclass(slots=True)
class NewResponse:
    """A create-response request, parsed. ``tools`` are in the run engine's form (functions nested
    under ``function``); ``settings`` are the fields echoed back that the engine does not use, by
    their :class:`~threadline.domain.entities.ResponseSettings` names."""

    model: str
    input: list[Input]
    instructions: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_resources: dict[str, Any] = field(default_factory=dict)
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    response_format: Any = "auto"
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    truncation: Literal["auto", "disabled"] = "disabled"
    previous_response_id: str | None = None
    conversation: str | None = None
    reasoning_effort: str | None = None
    background: bool = False
    store: bool = True
    settings: dict[str, Any] = field(default_factory=dict)
