"""Request schemas of the Responses and Conversations APIs, and the domain commands they make.

The request's top level is a strict Pydantic model; ``input`` items (``response_parsing.py``) and
``tools``, ``tool_choice`` and ``text.format`` (``response_tool_parsing.py``) are parsed by hand so
each mistake gets an error that names the exact parameter (``input[2].content[0].type``), as
OpenAI's do.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import Field, field_validator

from threadline.api.response_parsing import parse_input, parse_items
from threadline.api.response_tool_parsing import (
    allowed_tools,
    parse_text_format,
    parse_tool_choice,
    parse_tools,
    shown_tool,
)
from threadline.api.schemas import MAX_INT32, ReasoningEffort, Strict, WithMetadata, _check_metadata
from threadline.domain.commands import NewResponse
from threadline.domain.response_items import ItemReference, NewItem
from threadline.errors import InvalidRequestError

INCLUDES = (
    "file_search_call.results",
    "code_interpreter_call.outputs",
    "message.output_text.logprobs",
    "reasoning.encrypted_content",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "web_search_call.action.sources",
    "web_search_call.results",
)
REASONING_EFFORTS = get_args(ReasoningEffort)


def check_includes(values: list[str], param: str = "include") -> list[str]:
    for value in values:
        if value not in INCLUDES:
            raise InvalidRequestError(
                f"Invalid value for '{param}': {value[:100]!r}. Supported values are: "
                + ", ".join(f"'{v}'" for v in INCLUDES)
                + ".",
                param=param,
            )
    return values


class ConversationRef(Strict):
    id: str = Field(max_length=128)


class PromptCacheOptions(Strict):
    ttl: Literal["30m"] = "30m"
    mode: Literal["implicit", "explicit"] = "implicit"


class CreateResponseRequest(WithMetadata):
    model: str = Field(min_length=1, max_length=256)
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = Field(default=None, max_length=256_000)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    max_output_tokens: int | None = Field(default=None, ge=16, le=MAX_INT32)
    max_tool_calls: int | None = Field(default=None, ge=1, le=MAX_INT32)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    store: bool | None = None
    previous_response_id: str | None = Field(default=None, max_length=128)
    conversation: str | ConversationRef | None = None
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    background: bool | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    """Echoed as sent; its ``effort`` goes to the model as ``reasoning_effort``."""
    user: str | None = Field(default=None, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=256)
    prompt_cache_key: str | None = Field(default=None, max_length=256)
    # Caching hints: accepted and echoed; a server without a prompt cache has nothing to keep.
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: PromptCacheOptions | None = None
    service_tier: str | None = None

    @field_validator("reasoning")
    @classmethod
    def _reasoning(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        effort = value.get("effort")
        if effort is not None and effort not in REASONING_EFFORTS:
            raise ValueError(f"unknown reasoning.effort {str(effort)[:80]!r}")
        if value.get("summary") not in (None, "auto", "concise", "detailed"):
            raise ValueError(f"unknown reasoning.summary {str(value.get('summary'))[:80]!r}")
        return value

    @field_validator("include")
    @classmethod
    def _include(cls, value: list[str] | None) -> list[str] | None:
        for item in value or []:
            if item not in INCLUDES:
                raise ValueError(f"unknown include value {item[:80]!r}")
        return value

    def command(self) -> NewResponse:
        if self.background and self.store is False:
            raise InvalidRequestError("Background mode requires store=true.", param="background")
        tools, resources = parse_tools(self.tools or [])
        choice = parse_tool_choice(self.tool_choice)
        if isinstance(self.tool_choice, dict) and self.tool_choice.get("type") == "allowed_tools":
            tools, choice = allowed_tools(self.tool_choice, tools)
        conversation = (
            self.conversation.id if isinstance(self.conversation, ConversationRef) else self.conversation
        )
        text = self.text or {"format": {"type": "text"}}
        return NewResponse(
            model=self.model,
            input=parse_input(self.input),
            instructions=self.instructions,
            tools=tools,
            tool_resources=resources,
            tool_choice=choice,
            parallel_tool_calls=True if self.parallel_tool_calls is None else self.parallel_tool_calls,
            response_format=parse_text_format(text),
            max_output_tokens=self.max_output_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            metadata=self.metadata or {},
            truncation=self.truncation or "disabled",
            previous_response_id=self.previous_response_id,
            conversation=conversation,
            reasoning_effort=(self.reasoning or {}).get("effort"),
            background=bool(self.background),
            store=self.store is not False,
            settings={
                "tools": [shown_tool(tool) for tool in self.tools or []],
                "tool_choice": self.tool_choice or "auto",
                "text": text,
                "include": self.include or [],
                "truncation": self.truncation or "disabled",
                "reasoning": self.reasoning,
                "user": self.user,
                "max_tool_calls": self.max_tool_calls,
                "top_logprobs": self.top_logprobs or 0,
                "safety_identifier": self.safety_identifier,
                "prompt_cache_key": self.prompt_cache_key,
                "prompt_cache_retention": self.prompt_cache_retention,
                "prompt_cache_options": (
                    self.prompt_cache_options.model_dump() if self.prompt_cache_options is not None else None
                ),
                "instructions": self.instructions,
            },
        )


class CountTokensRequest(Strict):
    """``POST /v1/responses/input_tokens``: what a response with these fields would send the model."""

    model: str | None = Field(default=None, max_length=256)
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = Field(default=None, max_length=256_000)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    previous_response_id: str | None = Field(default=None, max_length=128)
    conversation: str | ConversationRef | None = None
    personality: str | None = Field(default=None, max_length=64)

    def command(self) -> NewResponse:
        if not self.model:
            raise InvalidRequestError("Missing required parameter: 'model'.", param="model")
        fields = self.model_dump(exclude={"personality", "conversation"})
        return CreateResponseRequest.model_construct(**fields, conversation=self.conversation).command()


class CompactRequest(Strict):
    """``POST /v1/responses/compact``: the conversation to compact, as a response would continue it."""

    model: str | None = Field(max_length=256)
    input: str | list[dict[str, Any]] | None = None
    previous_response_id: str | None = Field(default=None, max_length=128)
    instructions: str | None = Field(default=None, max_length=256_000)
    """Accepted; the summary is of the conversation, which instructions are not part of."""
    prompt_cache_key: str | None = Field(default=None, max_length=64)
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: PromptCacheOptions | None = None
    service_tier: Literal["auto", "default", "fast", "flex", "priority"] | None = None
    """The prompt cache and service tier fields are accepted and not used (no prompt cache, one tier)."""

    def command(self) -> NewResponse:
        if not self.model:
            raise InvalidRequestError("Missing required parameter: 'model'.", param="model")
        return NewResponse(
            model=self.model,
            input=parse_input(self.input),
            instructions=self.instructions,
            previous_response_id=self.previous_response_id,
        )


class CreateConversationRequest(WithMetadata):
    items: list[dict[str, Any]] | None = Field(default=None, max_length=20)

    def new_items(self) -> list[NewItem | ItemReference]:
        return parse_items(self.items or [], "items")


class UpdateConversationRequest(Strict):
    metadata: dict[str, str] | None
    """Required, but may be null: null clears it."""

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str]:
        return _check_metadata(value) or {}


class CreateItemsRequest(Strict):
    items: list[dict[str, Any]] = Field(max_length=20)

    def new_items(self) -> list[NewItem | ItemReference]:
        return parse_items(self.items, "items")
