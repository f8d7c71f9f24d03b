"""Catalog tables (SQLAlchemy Core). File entries are versioned by ranges of per-source snapshot sequence numbers:
a row says "this path had these attributes from snapshot ``first_seq`` to ``last_seq``", so a nightly backup of
100,000 unchanged files touches no row, and a search across 30 snapshots reads each file version once."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

clients = Table(
    "clients", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
)

sources = Table(
    "sources", metadata,
    Column("id", Integer, primary_key=True),
    Column("client_id", Integer, ForeignKey("clients.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("plugin", String(100), nullable=False, default=""),
    UniqueConstraint("client_id", "name", name="uq_sources_client_name"),
)

snapshots = Table(
    "snapshots", metadata,
    Column("id", String(64), primary_key=True),
    Column("source_id", Integer, ForeignKey("sources.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("name", String(400), nullable=False),
    Column("time", String(40), nullable=False),  # ISO 8601 UTC: sorts as text
    Column("vault", Text, nullable=False),
    Column("hostname", String(200), nullable=False, default=""),
    Column("items", Text, nullable=False),  # JSON: [{name, type, root, size, entries}]
    Column("stats", Text, nullable=False),  # JSON
    Index("ix_snapshots_source_time", "source_id", "time"),
)

entries = Table(
    "entries", metadata,
    Column("id", Integer, primary_key=True),
    Column("source_id", Integer, ForeignKey("sources.id"), nullable=False),
    Column("item", String(400), nullable=False),
    Column("path", Text, nullable=False),  # as users see it: /srv/docs/a.txt, smb://host/share/a.txt
    Column("parent", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("type", String(1), nullable=False),
    Column("size", BigInteger, nullable=False, default=0),
    Column("mtime_ns", BigInteger, nullable=False, default=0),
    Column("mode", Integer, nullable=False, default=0),
    Column("owner", String(100), nullable=False, default=""),
    Column("grp", String(100), nullable=False, default=""),
    Column("first_seq", Integer, nullable=False),
    Column("last_seq", Integer, nullable=False),
    Index("ix_entries_dir", "source_id", "parent", "first_seq"),
    Index("ix_entries_name", "name"),
    Index("ix_entries_live", "source_id", "last_seq"),
    Index("ix_entries_path", "source_id", "path", "last_seq"),  # closing changed paths (migration 0004)
)

jobs = Table(
    "jobs", metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", String(32), nullable=False),  # the sources of one `dobaas run` share it
    Column("policy", String(200), nullable=False),
    Column("client", String(200), nullable=False),
    Column("source", String(200), nullable=False),
    Column("plugin", String(100), nullable=False),
    Column("trigger", String(20), nullable=False),  # manual | schedule
    Column("status", String(20), nullable=False),  # running | ok | partial | failed | interrupted
    Column("started", String(40), nullable=False),
    Column("ended", String(40), nullable=False),
    Column("snapshot_id", String(64), nullable=True),
    Column("bytes_read", BigInteger, nullable=False),
    Column("bytes_stored", BigInteger, nullable=False),
    Column("files", Integer, nullable=False),
    Column("warnings", Text, nullable=False),  # JSON list
    Column("errors", Text, nullable=False),  # JSON list
    Column("holder", String(300), nullable=True),  # JSON {host, pid, pstart} of the process running it (0005)
    Index("ix_jobs_source_started", "client", "source", "started"),
    Index("ix_jobs_policy_started", "policy", "started"),
)

alert_state = Table(
    "alert_state", metadata,
    Column("key", String(400), primary_key=True),  # e.g. acme/documents/failed
    Column("active", Boolean, nullable=False),
    Column("since", String(40), nullable=False),
    Column("message", Text, nullable=False),
)

restores = Table(
    "restores", metadata,
    Column("id", Integer, primary_key=True),
    Column("time", String(40), nullable=False),
    Column("user", String(100), nullable=False),
    Column("host", String(200), nullable=False),
    Column("snapshot_id", String(64), nullable=False),
    Column("paths", Text, nullable=False),  # JSON list
    Column("target", Text, nullable=False),
    Column("overwrite", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("files", Integer, nullable=False, default=0),
    Column("bytes", BigInteger, nullable=False, default=0),
    Column("detail", Text, nullable=False, default=""),  # JSON: skipped and errors
)
