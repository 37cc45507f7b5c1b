"""Domain entities: plain dataclasses, independent of the wire format and of storage rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar, get_args

from threadline.domain.content import ItemFields, Part, text_of
from threadline.domain.run_states import RunStatus
from threadline.domain.steps import BuiltinDetails, BuiltinType

JSON = Any
Metadata = dict[str, str]


DEFAULT_PROJECT = "proj_default"
"""The project of open mode and of ``THREADLINE_API_KEY``; objects from before projects belong to it."""


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    name: str
    created_at: int
    thread_ttl_days: float | None = None
    """Overrides ``THREADLINE_THREAD_TTL_DAYS`` for this project's threads (0: never delete)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A project's API key. Only a hash of the secret is kept; the secret is shown once, at creation."""

    id: str
    project_id: str
    name: str
    prefix: str
    """The secret's first characters, to recognise it in a list."""
    created_at: int
    revoked_at: int | None = None


@dataclass(slots=True)
class Assistant:
    id: str
    created_at: int
    model: str
    name: str | None = None
    description: str | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_resources: dict[str, Any] | None = None
    metadata: Metadata = field(default_factory=dict)
    temperature: float | None = None
    top_p: float | None = None
    response_format: JSON = "auto"
    reasoning_effort: str | None = None
    project_id: str = DEFAULT_PROJECT


ThreadKind = Literal["thread", "conversation", "response"]
"""Made by the Assistants API, by the Conversations API, or for a response that has no conversation
(unlisted). All three are threads and conversations alike."""


@dataclass(slots=True)
class Thread:
    id: str
    created_at: int
    metadata: Metadata = field(default_factory=dict)
    tool_resources: dict[str, Any] | None = None
    last_active_at: int | None = None
    """When a message or a run last touched the thread (a Threadline extension field)."""
    project_id: str = DEFAULT_PROJECT
    kind: ThreadKind = "thread"
    # Execution bookkeeping, never sent to clients.
    kernel_worker_id: str | None = None
    """The worker that last ran the thread's code (set once the thread has run code at all)."""
    kernel_expires_at: float | None = None
    """Until when that worker keeps the thread's kernel (its idle expiry): other workers leave the
    thread's queued runs to it for a moment (``sandbox_affinity_seconds``)."""


MessageStatus = Literal["in_progress", "incomplete", "completed"]
MessageRole = Literal["user", "assistant", "system", "developer", "tool"]
"""``system``, ``developer`` (Responses input messages) and ``tool`` (function call outputs) are
never made by the Assistants API."""
ItemType = Literal[
    "message",
    "function_call",
    "function_call_output",
    "file_search_call",
    "code_interpreter_call",
    "web_search_call",
    "reasoning",
    "compaction",
    "mcp_list_tools",
    "mcp_call",
    "mcp_approval_request",
    "mcp_approval_response",
]
"""What a thread entry is. Messages are what the Assistants API shows; the others are Responses
items kept in the thread so the model sees them on later turns. Their one content part, an
:class:`~threadline.domain.content.ItemFields`, holds the item's fields (``call_id``, ``name``,
``arguments`` / ``call_id``, ``output`` / ``queries``, ``results`` / ``code``, ``container_id``,
``outputs`` / ``status``, ``action`` / ``summary``, ``encrypted_content`` / ``encrypted_content``,
``summary``)."""


@dataclass(slots=True)
class Message:
    id: str
    thread_id: str
    created_at: int
    role: MessageRole
    content: list[Part]
    status: MessageStatus = "completed"
    assistant_id: str | None = None
    run_id: str | None = None
    attachments: list[dict[str, Any]] | None = None
    metadata: Metadata = field(default_factory=dict)
    incomplete_details: dict[str, Any] | None = None
    completed_at: int | None = None
    incomplete_at: int | None = None
    type: ItemType = "message"

    @property
    def text(self) -> str:
        """The message's text parts joined: what a chat model is shown."""
        return text_of(self.content)

    @property
    def fields(self) -> dict[str, Any]:
        """A non-message entry's fields (its one :class:`ItemFields` part)."""
        part = self.content[0]
        assert isinstance(part, ItemFields), f"a {self.type} entry has no item fields"
        return part.fields


@dataclass(slots=True)
class RequiredAction:
    """What a run in ``requires_action`` waits for: outputs for these client function calls."""

    calls: list[FunctionCall]


@dataclass(slots=True)
class Run:
    id: str
    thread_id: str
    assistant_id: str
    created_at: int
    model: str
    instructions: str
    status: RunStatus = RunStatus.QUEUED
    tools: list[dict[str, Any]] = field(default_factory=list)
    metadata: Metadata = field(default_factory=dict)
    required_action: RequiredAction | None = None
    last_error: dict[str, Any] | None = None
    expires_at: int | None = None
    started_at: int | None = None
    cancelled_at: int | None = None
    failed_at: int | None = None
    completed_at: int | None = None
    incomplete_details: dict[str, Any] | None = None
    usage: dict[str, int] | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_prompt_tokens: int | None = None
    max_completion_tokens: int | None = None
    truncation_strategy: dict[str, Any] = field(
        default_factory=lambda: {"type": "auto", "last_messages": None}
    )
    tool_choice: JSON = "auto"
    parallel_tool_calls: bool = True
    response_format: JSON = "auto"
    reasoning_effort: str | None = None
    # Execution bookkeeping, never sent to clients.
    worker_id: str | None = None
    lease_expires_at: float | None = None
    claims: int = 0
    """How many times a worker has taken this run; on the first, it cannot have any steps yet."""
    queued_at: float | None = None
    """When the run was created or its tool outputs submitted (epoch seconds): the worker holding
    its thread's kernel has it to itself for ``sandbox_affinity_seconds`` from then."""
    response: ResponseSettings | None = None
    """Set when the Responses API made this run: its settings runs lack (see ``domain/responses.py``).
    Such a run ends ``completed`` with its client function calls as items, never ``requires_action``."""


@dataclass(frozen=True, slots=True)
class ResponseSettings:
    """What a run made by the Responses API keeps that runs lack: the request's fields the engine
    does not use, echoed back as given (the first fourteen), and how the response is kept."""

    tools: list[dict[str, Any]] = field(default_factory=list)
    """The tools as the request gave them (the run's ``tools`` are in the engine's form)."""
    tool_choice: JSON = "auto"
    text: dict[str, Any] | None = None
    include: list[str] = field(default_factory=list)
    truncation: str = "disabled"
    reasoning: dict[str, Any] | None = None
    user: str | None = None
    max_tool_calls: int | None = None
    top_logprobs: int = 0
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    conversation: str | None = None
    """The conversation it belongs to; ``None`` for a response with a thread of its own."""
    background: bool = False
    store: bool = True
    tool_resources: dict[str, Any] = field(default_factory=dict)
    input_ids: list[str] = field(default_factory=list)
    """The thread entries its input became."""
    mcp_headers: dict[str, str] | None = None
    """Its ``mcp`` tools' headers, sealed (by server label); kept only when there are any."""


StepStatus = Literal["in_progress", "cancelled", "failed", "completed", "expired"]


@dataclass(slots=True)
class MessageCreation:
    """A ``message_creation`` step's details: the message the step writes."""

    message_id: str


@dataclass(slots=True)
class FunctionCall:
    """A call to a client function; ``output`` is ``None`` until the client submits it."""

    id: str
    name: str
    arguments: str
    output: str | None = None


@dataclass(slots=True)
class BuiltinCall:
    """A call to a server-side tool: what the model asked, what the step shows, what the model heard."""

    id: str
    type: BuiltinType
    name: str
    """The function name the model called."""
    arguments: str
    """The arguments as the model wrote them (sent back to the model with the output)."""
    details: BuiltinDetails
    output: str | None = None
    """What the model is told; ``None`` while the call runs."""


ToolCallRecord = FunctionCall | BuiltinCall


@dataclass(slots=True)
class ToolCalls:
    """A ``tool_calls`` step's details."""

    calls: list[ToolCallRecord] = field(default_factory=list)


StepDetails = MessageCreation | ToolCalls


@dataclass(slots=True)
class RunStep:
    id: str
    run_id: str
    thread_id: str
    assistant_id: str
    created_at: int
    type: Literal["message_creation", "tool_calls"]
    step_details: StepDetails
    status: StepStatus = "in_progress"
    last_error: dict[str, Any] | None = None
    expired_at: int | None = None
    cancelled_at: int | None = None
    failed_at: int | None = None
    completed_at: int | None = None
    metadata: Metadata = field(default_factory=dict)
    usage: dict[str, int] | None = None
    turn: int = 0
    """Which model call of the run wrote this step; makes a retried turn's writes idempotent."""
    part: int = 0
    """0 for the turn's message or function calls, 1 for its server-side calls (a step of their own)."""


@dataclass(frozen=True, slots=True)
class RunTransition:
    """One status change of a run, kept for operators and the console (a Threadline extension)."""

    run_id: str
    to_status: RunStatus
    at: float
    """When it happened, in seconds since the epoch (fractions kept: runs change fast)."""
    cause: str
    worker_id: str | None = None


@dataclass(slots=True)
class Summary:
    """What a thread said before the messages a prompt still has room for, written by the model."""

    thread_id: str
    text: str
    last_message_id: str
    """The newest message the summary covers; later ones are not in it."""
    updated_at: int


@dataclass(slots=True)
class File:
    """An uploaded file: its description here, its bytes in the blob store under ``id``."""

    id: str
    created_at: int
    bytes: int
    filename: str
    purpose: str
    content_type: str
    expires_at: int | None = None
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None
    project_id: str = DEFAULT_PROJECT


JobStatus = Literal["queued", "running", "succeeded", "failed"]
JOB_STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)


@dataclass(slots=True)
class Job:
    """A unit of background work (file ingestion, clean-ups), run by a worker's handler for ``kind``."""

    id: str
    kind: str
    payload: dict[str, Any]
    created_at: float
    status: JobStatus = "queued"
    attempts: int = 0
    """How many times a worker has started it."""
    max_attempts: int = 5
    run_after: float = 0.0
    """Not claimed before this time (a retry's backoff)."""
    worker_id: str | None = None
    lease_expires_at: float | None = None
    last_error: str | None = None
    finished_at: float | None = None


@dataclass(frozen=True, slots=True)
class ListQuery:
    limit: int = 20
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None
    before: str | None = None


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    has_more: bool


# --- vector stores ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileCounts:
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return self.in_progress + self.completed + self.failed + self.cancelled


@dataclass(slots=True)
class VectorStore:
    id: str
    project_id: str
    created_at: int
    name: str | None
    metadata: dict[str, str]
    expires_after: dict[str, Any] | None
    expires_at: int | None
    last_active_at: int
    file_counts: FileCounts = field(default_factory=FileCounts)
    usage_bytes: int = 0
    """Bytes of the files indexed (``completed``), computed from the store's files when read."""

    def status(self, at: int) -> str:
        if self.expires_at is not None and at >= self.expires_at:
            return "expired"
        return "in_progress" if self.file_counts.in_progress else "completed"


@dataclass(slots=True)
class VectorStoreFile:
    id: str
    """The file's id: a file is in a store at most once."""
    vector_store_id: str
    project_id: str
    created_at: int
    status: str
    chunking_strategy: dict[str, Any]
    attributes: dict[str, Any] | None = None
    batch_id: str | None = None
    usage_bytes: int = 0
    last_error: dict[str, str] | None = None
    progress: tuple[int, int] | None = None
    """While it is indexed: chunks embedded, and chunks in all (once the file is chunked)."""


@dataclass(slots=True)
class FileBatch:
    id: str
    vector_store_id: str
    project_id: str
    created_at: int
    cancelled: bool = False
    file_counts: FileCounts = field(default_factory=FileCounts)

    @property
    def status(self) -> str:
        if self.cancelled:
            return "cancelled"
        return "in_progress" if self.file_counts.in_progress else "completed"


@dataclass(frozen=True, slots=True)
class NewFile:
    """A file to add, as the request named it."""

    file_id: str
    chunking_strategy: dict[str, Any] | None = None
    attributes: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ThreadStorePlan:
    """The files a request's messages attach for ``file_search`` go into their thread's store: the
    one the thread names if it is live, else ``new_store``, made and named in its place. The store
    layer applies this in the transaction that writes the messages, so two requests adding files to
    one thread at once cannot make two stores, and a run sees the store as soon as it exists."""

    new_store: VectorStore
    at: int
    """When the files are added (the store's new ``last_active_at``)."""
    ingest_job: Callable[[str, str], Job]
    """The ingestion job of a file added to a store (``store_id``, ``file_id``), written with it."""


@dataclass(frozen=True, slots=True)
class ThreadStoreFiles:
    """What applying a :class:`ThreadStorePlan` did."""

    store_id: str
    added: list[str]
    """Files new to the store (written ``in_progress``), to be ingested; files it held already stay."""
    tool_resources: dict[str, Any]
    """The thread's tool resources afterwards."""


@dataclass(frozen=True, slots=True)
class SearchHit:
    file_id: str
    filename: str
    score: float
    attributes: dict[str, Any] | None
    text: str
