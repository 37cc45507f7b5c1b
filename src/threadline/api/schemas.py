"""Wire schemas for requests, named after OpenAI's (``CreateRunRequest`` ...), validated strictly.

Unknown fields are refused as the spec's ``additionalProperties: false`` says; every violation
becomes a 400 in OpenAI's error envelope (see ``api/errors.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from threadline.domain.commands import (
    AssistantUpdate,
    FunctionOutput,
    NewAssistant,
    NewMessage,
    NewRun,
    NewThread,
    NewThreadAndRun,
    ThreadUpdate,
)
from threadline.domain.updates import KEEP

MAX_METADATA_PAIRS = 16
MAX_INT32 = 2**31 - 1
"""The largest value an integer column holds on every database we run on."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def sent(self, name: str, unset: Any = None) -> Any:
        """Field ``name`` as the client sent it, as plain data (of nested objects, only the fields
        sent); ``unset`` if the client did not send it."""
        if name not in self.model_fields_set:
            return unset
        dumped = self.model_dump(include={name}, exclude_unset=True, mode="json", by_alias=True)
        return next(iter(dumped.values()))


def _check_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return value
    if len(value) > MAX_METADATA_PAIRS:
        raise ValueError(f"metadata may hold at most {MAX_METADATA_PAIRS} key-value pairs")
    for key, item in value.items():
        if len(key) > 64:
            raise ValueError(f"metadata keys may be at most 64 characters long: {key[:70]!r}")
        if len(item) > 512:
            raise ValueError(f"metadata values may be at most 512 characters long (key {key!r})")
    return value


class WithMetadata(Strict):
    metadata: dict[str, str] | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return _check_metadata(value)

    def new_metadata(self) -> dict[str, str] | None:
        """For modify requests: the metadata to set (``null`` clears it), or ``None`` if not sent."""
        if "metadata" not in self.model_fields_set:
            return None
        return self.metadata or {}


FunctionName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]


class FunctionObject(Strict):
    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class CodeInterpreterTool(Strict):
    type: Literal["code_interpreter"]


class RankingOptions(Strict):
    ranker: Literal["auto", "default_2024_08_21"] | None = None
    score_threshold: float = Field(ge=0, le=1)


class FileSearchOptions(Strict):
    max_num_results: int | None = Field(default=None, ge=1, le=50)
    ranking_options: RankingOptions | None = None


class FileSearchTool(Strict):
    type: Literal["file_search"]
    file_search: FileSearchOptions | None = None


class FunctionTool(Strict):
    type: Literal["function"]
    function: FunctionObject


Tool = Annotated[CodeInterpreterTool | FileSearchTool | FunctionTool, Field(discriminator="type")]


class FileIds(Strict):
    file_ids: list[str] = Field(default_factory=list, max_length=20)


class AutoChunkingStrategy(Strict):
    type: Literal["auto"]


class StaticChunking(Strict):
    max_chunk_size_tokens: int = Field(ge=100, le=4096)
    chunk_overlap_tokens: int = Field(ge=0)

    @model_validator(mode="after")
    def _overlap_at_most_half(self) -> StaticChunking:
        if self.chunk_overlap_tokens * 2 > self.max_chunk_size_tokens:
            raise ValueError("chunk_overlap_tokens must not exceed half of max_chunk_size_tokens")
        return self


class StaticChunkingStrategy(Strict):
    type: Literal["static"]
    static: StaticChunking


ChunkingStrategy = Annotated[AutoChunkingStrategy | StaticChunkingStrategy, Field(discriminator="type")]


class VectorStoreHelper(WithMetadata):
    file_ids: list[str] | None = None
    chunking_strategy: ChunkingStrategy | None = None


class FileSearchResources(Strict):
    vector_store_ids: list[str] | None = Field(default=None, max_length=1)


class NewFileSearchResources(FileSearchResources):
    """On create, vector stores are named or made inline (``vector_stores``): one or the other."""

    vector_stores: list[VectorStoreHelper] | None = Field(default=None, max_length=1)

    @model_validator(mode="after")
    def _one_of(self) -> NewFileSearchResources:
        if (self.vector_store_ids is None) == (self.vector_stores is None):
            raise ValueError("file_search takes either vector_store_ids or vector_stores")
        return self


class ToolResources(Strict):
    code_interpreter: FileIds | None = None
    file_search: FileSearchResources | None = None


class NewToolResources(ToolResources):
    file_search: NewFileSearchResources | None = None


class TextFormat(Strict):
    type: Literal["text"]


class JsonObjectFormat(Strict):
    type: Literal["json_object"]


class JsonSchemaSpec(Strict):
    name: FunctionName
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class JsonSchemaFormat(Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = (
    Literal["auto"] | Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]
)

ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


class AssistantFields(WithMetadata):
    name: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=512)
    instructions: str | None = Field(default=None, max_length=256_000)
    reasoning_effort: ReasoningEffort | None = None
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_resources: ToolResources | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    response_format: ResponseFormat | None = None


class CreateAssistantRequest(AssistantFields):
    model: str = Field(min_length=1, max_length=256)
    tool_resources: NewToolResources | None = None

    def command(self) -> NewAssistant:
        return NewAssistant(
            model=self.model,
            name=self.name,
            description=self.description,
            instructions=self.instructions,
            tools=self.sent("tools") or [],
            tool_resources=self.sent("tool_resources"),
            metadata=self.metadata or {},
            temperature=self.temperature,
            top_p=self.top_p,
            response_format=_or(self.sent("response_format"), "auto"),
            reasoning_effort=self.reasoning_effort,
        )


class ModifyAssistantRequest(AssistantFields):
    model: str | None = Field(default=None, min_length=1, max_length=256)

    def command(self) -> AssistantUpdate:
        """Only what the client sent changes; a ``null`` model is ignored, other ``null`` lists and
        mappings are emptied."""
        return AssistantUpdate(
            model=_or(self.sent("model", KEEP), KEEP),
            name=self.sent("name", KEEP),
            description=self.sent("description", KEEP),
            instructions=self.sent("instructions", KEEP),
            tools=_or(self.sent("tools", KEEP), []),
            tool_resources=self.sent("tool_resources", KEEP),
            metadata=_or(self.sent("metadata", KEEP), {}),
            temperature=self.sent("temperature", KEEP),
            top_p=self.sent("top_p", KEEP),
            response_format=_or(self.sent("response_format", KEEP), "auto"),
            reasoning_effort=self.sent("reasoning_effort", KEEP),
        )


def _or(value: Any, default: Any) -> Any:
    """``value``, or ``default`` in place of a ``null``."""
    return default if value is None else value


class ImageFile(Strict):
    file_id: str
    detail: Literal["auto", "low", "high"] | None = None


class ImageFilePart(Strict):
    type: Literal["image_file"]
    image_file: ImageFile


class ImageUrl(Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        # The spec's ``format: uri``, narrowed to what a model can be shown: a web address or inline data.
        parts = urlsplit(value)
        if not (parts.scheme in ("http", "https") and parts.netloc) and not (
            parts.scheme == "data" and parts.path
        ):
            raise ValueError("expected an http(s) URL or a data: URL of the image")
        return value


class ImageUrlPart(Strict):
    type: Literal["image_url"]
    image_url: ImageUrl


MAX_MESSAGE_TEXT = 256_000
"""Characters in one message's text, as OpenAI allowed."""


class TextPart(Strict):
    type: Literal["text"]
    text: str = Field(max_length=MAX_MESSAGE_TEXT)


ContentPart = Annotated[ImageFilePart | ImageUrlPart | TextPart, Field(discriminator="type")]


class AttachmentTool(Strict):
    type: Literal["code_interpreter", "file_search"]


class Attachment(Strict):
    file_id: str
    tools: list[AttachmentTool]


class CreateMessageRequest(WithMetadata):
    role: Literal["user", "assistant"]
    content: (
        Annotated[str, Field(max_length=MAX_MESSAGE_TEXT)] | Annotated[list[ContentPart], Field(min_length=1)]
    )
    attachments: list[Attachment] | None = None

    def command(self) -> NewMessage:
        return NewMessage(
            role=self.role,
            content=self.sent("content"),
            attachments=self.sent("attachments"),
            metadata=self.metadata or {},
        )


class ModifyMessageRequest(WithMetadata):
    pass


class CreateThreadRequest(WithMetadata):
    messages: list[CreateMessageRequest] | None = None
    tool_resources: NewToolResources | None = None

    def command(self) -> NewThread:
        return NewThread(
            messages=[message.command() for message in self.messages or []],
            tool_resources=self.sent("tool_resources"),
            metadata=self.metadata or {},
        )


class ModifyThreadRequest(WithMetadata):
    tool_resources: ToolResources | None = None

    def command(self) -> ThreadUpdate:
        return ThreadUpdate(
            metadata=_or(self.sent("metadata", KEEP), {}), tool_resources=self.sent("tool_resources", KEEP)
        )


class TruncationObject(Strict):
    type: Literal["auto", "last_messages"]
    last_messages: int | None = Field(default=None, ge=1)


class NamedFunction(Strict):
    name: str


class NamedToolChoice(Strict):
    type: Literal["function", "code_interpreter", "file_search"]
    function: NamedFunction | None = None

    @model_validator(mode="after")
    def _function_named(self) -> NamedToolChoice:
        if self.type == "function" and self.function is None:
            raise ValueError("tool_choice of type 'function' must name the function")
        return self


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class RunFields(WithMetadata):
    assistant_id: str = Field(min_length=1)
    model: str | None = Field(default=None, max_length=256)
    reasoning_effort: ReasoningEffort | None = None
    instructions: str | None = Field(default=None, max_length=256_000)
    tools: list[Tool] | None = Field(default=None, max_length=20)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: bool | None = None
    max_prompt_tokens: int | None = Field(default=None, ge=256, le=MAX_INT32)
    max_completion_tokens: int | None = Field(default=None, ge=256, le=MAX_INT32)
    truncation_strategy: TruncationObject | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None

    def _run(self) -> NewRun:
        return NewRun(
            assistant_id=self.assistant_id,
            model=self.model,
            instructions=self.instructions,
            tools=self.sent("tools"),
            metadata=self.metadata or {},
            temperature=self.temperature,
            top_p=self.top_p,
            max_prompt_tokens=self.max_prompt_tokens,
            max_completion_tokens=self.max_completion_tokens,
            truncation_strategy=self.sent("truncation_strategy"),
            tool_choice=self.sent("tool_choice"),
            parallel_tool_calls=self.parallel_tool_calls,
            response_format=self.sent("response_format"),
            reasoning_effort=self.reasoning_effort,
        )


class CreateRunRequest(RunFields):
    additional_instructions: str | None = Field(default=None, max_length=256_000)
    additional_messages: list[CreateMessageRequest] | None = None

    def command(self) -> NewRun:
        return dataclasses.replace(
            self._run(),
            additional_instructions=self.additional_instructions,
            additional_messages=[message.command() for message in self.additional_messages or []],
        )


class CreateThreadAndRunRequest(RunFields):
    thread: CreateThreadRequest | None = None
    tool_resources: ToolResources | None = None

    def command(self) -> NewThreadAndRun:
        return NewThreadAndRun(
            run=self._run(),
            thread=self.thread.command() if self.thread is not None else NewThread(),
            tool_resources=self.sent("tool_resources"),
        )


class ModifyRunRequest(WithMetadata):
    pass


class ToolOutput(Strict):
    tool_call_id: str | None = None
    output: str | None = None


class SubmitToolOutputsRunRequest(Strict):
    tool_outputs: list[ToolOutput]
    stream: bool | None = None

    def outputs(self) -> list[FunctionOutput]:
        return [FunctionOutput(o.tool_call_id, o.output) for o in self.tool_outputs]
