"""projects and API keys; assistants and threads belong to a project

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import time
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    projects = op.create_table(
        "projects",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("thread_ttl_days", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
    )
    op.bulk_insert(projects, [{"id": "proj_default", "name": "Default", "created_at": int(time.time())}])
    op.create_table(
        "api_keys",
        sa.Column("seq", SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
        sa.UniqueConstraint("secret_hash"),
    )
    for table in ("assistants", "threads"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("project_id", sa.String(length=64), nullable=False, server_default="proj_default")
            )
        op.create_index(f"ix_{table}_project_seq", table, ["project_id", "seq"], unique=False)


def downgrade() -> None:
    for table in ("threads", "assistants"):
        op.drop_index(f"ix_{table}_project_seq", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("project_id")
    op.drop_table("api_keys")
    op.drop_table("projects")
