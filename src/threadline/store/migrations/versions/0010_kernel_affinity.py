"""kernel affinity: which worker holds a thread's code_interpreter kernel, and when a run was queued

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("threads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kernel_worker_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("kernel_expires_at", sa.Float(), nullable=True))
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("queued_at", sa.Float(), nullable=True))
    # Threads that ran code before: their next kernel is a fresh one, and the model is to be told.
    # An empty holder means "ran code, no worker holds its kernel".
    op.execute(
        "UPDATE threads SET kernel_worker_id = '' WHERE id IN (SELECT thread_id FROM run_steps"
        " WHERE type = 'tool_calls' AND CAST(step_details AS TEXT) LIKE '%\"type\": \"code_interpreter\"%')"
    )


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("queued_at")
    with op.batch_alter_table("threads", schema=None) as batch_op:
        batch_op.drop_column("kernel_expires_at")
        batch_op.drop_column("kernel_worker_id")
