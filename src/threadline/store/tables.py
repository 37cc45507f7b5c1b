"""Table definitions (SQLAlchemy Core). Alembic migrations in ``migrations/`` must match these.

Every table has an integer ``seq`` primary key: lists order by it, so two objects made in the same
second still come back in the order they were made. Public ids (``run_...``) are unique keys.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

Seq = BigInteger().with_variant(Integer(), "sqlite")


def _seq() -> Column[int]:
    return Column("seq", Seq, primary_key=True, autoincrement=True)


def _meta() -> Column[object]:
    return Column("metadata", JSON, key="meta", nullable=False)


assistants = Table(
    "assistants",
    metadata,
    _seq(),
    Column("id", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("name", String(256)),
    Column("description", String(512)),
    Column("model", String(256), nullable=False),
    Column("instructions", Text),
    Column("tools", JSON, nullable=False),
    Column("tool_resources", JSON),
    _meta(),
    Column("temperature", Float),
    Column("top_p", Float),
    Column("response_format", JSON),
    Column("reasoning_effort", String(16)),
    Column("project_id", String(64), nullable=False, server_default="proj_default"),
    Index("ix_assistants_project_seq", "project_id", "seq"),
)

threads = Table(
    "threads",
    metadata,
    _seq(),
    Column("id", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    _meta(),
    Column("tool_resources", JSON),
    # The thread lock: the one run allowed to be active on this thread.
    Column("active_run_id", String(64)),
    # When a message or a run last touched the thread: stale threads are deleted after a TTL.
    Column("last_active_at", BigInteger),
    Column("project_id", String(64), nullable=False, server_default="proj_default"),
    # "thread", "conversation" (made by the Conversations API) or "response" (a response's own, unlisted).
    Column("kind", String(16), nullable=False, server_default="thread"),
    # Which worker holds the thread's code_interpreter kernel, and until when.
    Column("kernel_worker_id", String(64)),
    Column("kernel_expires_at", Float),
    Index("ix_threads_last_active_at", "last_active_at"),
    Index("ix_threads_project_seq", "project_id", "seq"),
)

projects = Table(
    "projects",
    metadata,
    _seq(),
    Column("id", String(64), nullable=False, unique=True),
    Column("name", String(256), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("thread_ttl_days", Float),
)

api_keys = Table(
    "api_keys",
    metadata,
    _seq(),
    Column("id", String(64), nullable=False, unique=True),
    Column("project_id", String(64), ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(256), nullable=False),
    Column("prefix", String(16), nullable=False),
    # SHA-256 of the secret, hex: keys are long random strings, so a fast hash is enough.
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger),
)

messages = Table(
    "messages",
    metadata,
    _seq(),
    Column("id", String(64), nullable=False, unique=True),
    Column("thread_id", String(64), ForeignKey("threads.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("role", String(16), nullable=False),
    Column("content", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("assistant_id", String(64)),
    Column("run_id", String(64)),
    Column("attachments", JSON),
    _meta(),
    Column("incomplete_details", JSON),
    Column("completed_at", BigInteger),
    Column("incomplete_at", BigInteger),
    # "message", or a Responses item kept in the thread: "function_call", "function_call_output".
    Column("type", String(32), nullable=False, server_default="message"),
    Index("ix_messages_thread_seq", "thread_id", "seq"),
)

runs = Table(
    "runs",
    metadata,
    _seq(),
    Column("id", String(64), nullable=False, unique=True),
    Column("thread_id", String(64), ForeignKey("threads.id", ondelete="CASCADE"), nullable=False),
    Column("assistant_id", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("model", String(256), nullable=False),
    Column("instructions", Text, nullable=False),
    Column("tools", JSON, nullable=False),
    _meta(),
    Column("required_action", JSON),
    Column("last_error", JSON),
    Column("expires_at", BigInteger),
    Column("started_at", BigInteger),
    Column("cancelled_at", BigInteger),
    Column("failed_at", BigInteger),
    Column("completed_at", BigInteger),
    Column("incomplete_details", JSON),
    Column("usage", JSON),
    Column("temperature", Float),
    Column("top_p", Float),
    Column("max_prompt_tokens", Integer),
    Column("max_completion_tokens", Integer),
    Column("truncation_strategy", JSON, nullable=False),
    Column("tool_choice", JSON, nullable=False),
    Column("parallel_tool_calls", Boolean, nullable=False),
    Column("response_format", JSON),
    Column("reasoning_effort", String(16)),
    Column("worker_id", String(64)),
    Column("lease_expires_at", Float),
    Column("claims", Integer, nullable=False, server_default="0"),
    # Set for a run made by the Responses API: the request's settings that runs do not have.
    Column("response", JSON),
    Column("queued_at", Float),
    Index("ix_runs_thread_seq", "thread_id", "seq"),
    Index("ix_runs_status_seq", "status", "seq"),
)

run_steps = Table(
    "run_steps",
    metadata,
    _seq(),
    Column("id", String(64), nullable=False, unique=True),
    Column("run_id", String(64), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("thread_id", String(64), nullable=False),
    Column("assistant_id", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("type", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("step_details", JSON, nullable=False),
    Column("last_error", JSON),
    Column("expired_at", BigInteger),
    Column("cancelled_at", BigInteger),
    Column("failed_at", BigInteger),
    Column("completed_at", BigInteger),
    _meta(),
    Column("usage", JSON),
    Column("turn", Integer, nullable=False),
    Column("part", Integer, nullable=False, server_default="0"),
    Index("ix_run_steps_run_seq", "run_id", "seq"),
    # A turn writes at most one step of each type and part, even when a second worker retries it.
    Index("uq_run_steps_turn", "run_id", "turn", "type", "part", unique=True),
)

run_transitions = Table(
    "run_transitions",
    metadata,
    _seq(),
    Column("run_id", String(64), ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("to_status", String(16), nullable=False),
    Column("at", Float, nullable=False),
    Column("cause", Text, nullable=False),
    Column("worker_id", String(64)),
    Index("ix_run_transitions_run_seq", "run_id", "seq"),
)

# A background response's stream as it was sent, so a client can pick it up again after any event.
response_events = Table(
    "response_events",
    metadata,
    Column("response_id", String(64), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("sequence_number", Integer, primary_key=True, autoincrement=False),
    Column("event", JSON, nullable=False),
)

thread_summaries = Table(
    "thread_summaries",
    metadata,
    Column("thread_id", String(64), ForeignKey("threads.id", ondelete="CASCADE"), primary_key=True),
    Column("text", Text, nullable=False),
    Column("last_message_id", String(64), nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

files = Table(
    "files",
    metadata,
    _seq(),
    Column("id", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("filename", String(512), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("content_type", String(256), nullable=False),
    Column("expires_at", BigInteger),
    Column("status", String(16), nullable=False),
    Column("status_details", Text),
    Column("project_id", String(64), nullable=False, server_default="proj_default"),
    Index("ix_files_purpose_seq", "purpose", "seq"),
    Index("ix_files_project_seq", "project_id", "seq"),
)

# The background job queue: claimed like runs (one statement, SKIP LOCKED on PostgreSQL), leased,
# retried with backoff, and taken back by a reaper when a worker's lease lapses.
jobs = Table(
    "jobs",
    metadata,
    _seq(),
    Column("id", String(64), nullable=False, unique=True),
    Column("kind", String(64), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("run_after", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("worker_id", String(64)),
    Column("lease_expires_at", Float),
    Column("last_error", Text),
    Column("finished_at", Float),
    Index("ix_jobs_status_run_after", "status", "run_after"),
)

# File search: one row per chunk of a file in a vector store. The vector is float32 bytes and the
# keyword terms an int32 (2, n) array of term ids and counts (``retrieval.terms``), so both
# databases hold the same thing and search runs on an in-memory copy (``store/chunks.py``).
file_chunks = Table(
    "file_chunks",
    metadata,
    _seq(),
    Column("vector_store_id", String(64), nullable=False),
    Column("file_id", String(64), nullable=False),
    Column("ordinal", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("token_count", Integer, nullable=False),
    Column("vector", LargeBinary, nullable=False),
    Column("terms", LargeBinary, nullable=False),
    Index("ix_file_chunks_store_file", "vector_store_id", "file_id", "ordinal"),
)

# A counter per vector store, raised by every write to its chunks: searches compare it with the
# one their in-memory copy was built at (one primary-key read, however big the store).
file_chunk_revisions = Table(
    "file_chunk_revisions",
    metadata,
    Column("vector_store_id", String(64), primary_key=True),
    Column("revision", BigInteger, nullable=False),
)

# Vector stores (``domain/vector_stores.py``). Counts, usage and status are not stored: they are
# computed from the files' rows when a store is read, so concurrent ingestion jobs cannot skew them.
vector_stores = Table(
    "vector_stores",
    metadata,
    _seq(),
    Column("id", String(64), nullable=False, unique=True),
    Column("project_id", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("name", Text),
    _meta(),
    Column("expires_after", JSON),
    Column("expires_at", BigInteger),
    Column("last_active_at", BigInteger, nullable=False),
    Index("ix_vector_stores_project_seq", "project_id", "seq"),
)

# A file in a vector store: its id is the file's, unique within the store.
vector_store_files = Table(
    "vector_store_files",
    metadata,
    _seq(),
    Column("id", String(64), nullable=False),
    Column("vector_store_id", String(64), nullable=False),
    Column("project_id", String(64), nullable=False),
    Column("batch_id", String(64)),
    Column("created_at", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("usage_bytes", BigInteger, nullable=False),
    Column("last_error", JSON),
    Column("chunking_strategy", JSON, nullable=False),
    Column("attributes", JSON),
    UniqueConstraint("vector_store_id", "id", name="uq_vector_store_files_store_file"),
    Index("ix_vector_store_files_file", "id"),
    Index("ix_vector_store_files_batch", "batch_id"),
)

vector_store_file_batches = Table(
    "vector_store_file_batches",
    metadata,
    _seq(),
    Column("id", String(64), nullable=False, unique=True),
    Column("vector_store_id", String(64), nullable=False),
    Column("project_id", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("cancelled", Boolean, nullable=False),
)
