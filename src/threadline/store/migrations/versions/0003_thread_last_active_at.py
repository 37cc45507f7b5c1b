"""threads.last_active_at: when a message or a run last touched a thread (stale threads expire)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("threads", sa.Column("last_active_at", sa.BigInteger(), nullable=True))
    # Threads from before the column: last active when they were made, or at their newest message.
    op.execute(
        "UPDATE threads SET last_active_at = COALESCE("
        "(SELECT MAX(messages.created_at) FROM messages WHERE messages.thread_id = threads.id), created_at)"
    )
    op.create_index("ix_threads_last_active_at", "threads", ["last_active_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_threads_last_active_at", table_name="threads")
    op.drop_column("threads", "last_active_at")
