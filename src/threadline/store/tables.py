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
    MetaData,
    String,
    Table,
    Text,
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

thread_summaries = Table(
    "thread_summaries",
    metadata,
    Column("thread_id", String(64), ForeignKey("threads.id", ondelete="CASCADE"), primary_key=True),
    Column("text", Text, nullable=False),
    Column("last_message_id", String(64), nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)
