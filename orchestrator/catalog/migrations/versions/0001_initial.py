"""Initial catalog: clients, sources, snapshots, versioned file entries, restore audit.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("clients", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String(200), nullable=False, unique=True))
    op.create_table("sources", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("client_id", sa.Integer, sa.ForeignKey("clients.id"), nullable=False),
                    sa.Column("name", sa.String(200), nullable=False),
                    sa.Column("plugin", sa.String(100), nullable=False),
                    sa.UniqueConstraint("client_id", "name", name="uq_sources_client_name"))
    op.create_table("snapshots", sa.Column("id", sa.String(64), primary_key=True),
                    sa.Column("source_id", sa.Integer, sa.ForeignKey("sources.id"), nullable=False),
                    sa.Column("seq", sa.Integer, nullable=False), sa.Column("name", sa.String(400), nullable=False),
                    sa.Column("time", sa.String(40), nullable=False), sa.Column("vault", sa.Text, nullable=False),
                    sa.Column("hostname", sa.String(200), nullable=False), sa.Column("items", sa.Text, nullable=False),
                    sa.Column("stats", sa.Text, nullable=False))
    op.create_index("ix_snapshots_source_time", "snapshots", ["source_id", "time"])
    op.create_table("entries", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("source_id", sa.Integer, sa.ForeignKey("sources.id"), nullable=False),
                    sa.Column("item", sa.String(400), nullable=False), sa.Column("path", sa.Text, nullable=False),
                    sa.Column("parent", sa.Text, nullable=False), sa.Column("name", sa.Text, nullable=False),
                    sa.Column("type", sa.String(1), nullable=False), sa.Column("size", sa.BigInteger, nullable=False),
                    sa.Column("mtime_ns", sa.BigInteger, nullable=False), sa.Column("mode", sa.Integer, nullable=False),
                    sa.Column("owner", sa.String(100), nullable=False), sa.Column("grp", sa.String(100), nullable=False),
                    sa.Column("first_seq", sa.Integer, nullable=False), sa.Column("last_seq", sa.Integer, nullable=False))
    op.create_index("ix_entries_dir", "entries", ["source_id", "parent", "first_seq"])
    op.create_index("ix_entries_name", "entries", ["name"])
    op.create_index("ix_entries_live", "entries", ["source_id", "last_seq"])
    op.create_table("restores", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("time", sa.String(40), nullable=False), sa.Column("user", sa.String(100), nullable=False),
                    sa.Column("host", sa.String(200), nullable=False),
                    sa.Column("snapshot_id", sa.String(64), nullable=False), sa.Column("paths", sa.Text, nullable=False),
                    sa.Column("target", sa.Text, nullable=False), sa.Column("overwrite", sa.String(20), nullable=False),
                    sa.Column("status", sa.String(20), nullable=False), sa.Column("files", sa.Integer, nullable=False),
                    sa.Column("bytes", sa.BigInteger, nullable=False), sa.Column("detail", sa.Text, nullable=False))


def downgrade() -> None:
    for t in ("restores", "entries", "snapshots", "sources", "clients"):
        op.drop_table(t)
