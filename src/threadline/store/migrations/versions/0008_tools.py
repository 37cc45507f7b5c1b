"""run steps: a turn may write a second tool_calls step, for its server-side calls

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("run_steps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("part", sa.Integer(), nullable=False, server_default="0"))
        batch_op.drop_index("uq_run_steps_turn")
        batch_op.create_index("uq_run_steps_turn", ["run_id", "turn", "type", "part"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("run_steps", schema=None) as batch_op:
        batch_op.drop_index("uq_run_steps_turn")
        batch_op.create_index("uq_run_steps_turn", ["run_id", "turn", "type"], unique=True)
        batch_op.drop_column("part")
