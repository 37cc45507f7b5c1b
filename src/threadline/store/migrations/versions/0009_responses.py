"""responses and conversations: thread kinds, recorded response streams, item types of messages, the Responses settings of a run

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("threads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="thread"))
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("type", sa.String(length=32), nullable=False, server_default="message"))
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("response", sa.JSON(), nullable=True))
    op.create_table(
        "response_events",
        sa.Column("response_id", sa.String(length=64), nullable=False),
        sa.Column("sequence_number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("event", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["response_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("response_id", "sequence_number"),
    )


def downgrade() -> None:
    op.drop_table("response_events")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("response")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("type")
    with op.batch_alter_table("threads", schema=None) as batch_op:
        batch_op.drop_column("kind")
