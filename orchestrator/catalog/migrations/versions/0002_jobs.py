"""Job history: one row per source per run.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("jobs", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("run_id", sa.String(32), nullable=False),
                    sa.Column("policy", sa.String(200), nullable=False),
                    sa.Column("client", sa.String(200), nullable=False),
                    sa.Column("source", sa.String(200), nullable=False),
                    sa.Column("plugin", sa.String(100), nullable=False),
                    sa.Column("trigger", sa.String(20), nullable=False),
                    sa.Column("status", sa.String(20), nullable=False),
                    sa.Column("started", sa.String(40), nullable=False),
                    sa.Column("ended", sa.String(40), nullable=False),
                    sa.Column("snapshot_id", sa.String(64), nullable=True),
                    sa.Column("bytes_read", sa.BigInteger, nullable=False),
                    sa.Column("bytes_stored", sa.BigInteger, nullable=False),
                    sa.Column("files", sa.Integer, nullable=False),
                    sa.Column("warnings", sa.Text, nullable=False),
                    sa.Column("errors", sa.Text, nullable=False))
    op.create_index("ix_jobs_source_started", "jobs", ["client", "source", "started"])
    op.create_index("ix_jobs_policy_started", "jobs", ["policy", "started"])


def downgrade() -> None:
    op.drop_table("jobs")
