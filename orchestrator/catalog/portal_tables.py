"""The client portal's tables, in the catalog's database (one database for the provider: the portal's accounts, requests
and tickets join the catalog's snapshots and jobs; migration 0006 creates them). Times are ISO 8601 UTC text."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint

from orchestrator.catalog.schema import metadata

users = Table(
    "portal_users", metadata,
    Column("id", Integer, primary_key=True),
    Column("login", String(100), nullable=False, unique=True),
    Column("tenant", String(200), nullable=False),  # the catalog's client name ("" for provider staff)
    Column("role", String(20), nullable=False),  # client | technician | admin
    Column("password_hash", String(200), nullable=False),  # Argon2id, PHC string
    Column("must_change", Boolean, nullable=False),  # a default password not yet changed
    Column("failures", Integer, nullable=False, default=0),  # failed logins since the last success
    Column("locked_until", String(40), nullable=False, default=""),
    Column("created", String(40), nullable=False),
)

sessions = Table(
    "portal_sessions", metadata,
    Column("token_hash", String(64), primary_key=True),  # sha256 of the cookie or bearer token: a leak of the
    Column("user_id", Integer, ForeignKey("portal_users.id"), nullable=False),  # table opens no session
    Column("kind", String(10), nullable=False),  # web | api
    Column("csrf", String(64), nullable=False),
    Column("created", String(40), nullable=False),
    Column("expires", String(40), nullable=False),
)

audit = Table(
    "portal_audit", metadata,
    Column("id", Integer, primary_key=True),
    Column("time", String(40), nullable=False),
    Column("login", String(100), nullable=False),
    Column("tenant", String(200), nullable=False),
    Column("action", String(60), nullable=False),
    Column("detail", Text, nullable=False),
    Column("address", String(100), nullable=False),
    Index("ix_portal_audit_time", "time"),
)

requests = Table(
    "portal_requests", metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant", String(200), nullable=False),
    Column("opened_by", String(100), nullable=False),
    Column("opened", String(40), nullable=False),
    Column("kind", String(20), nullable=False),  # files | vm | database | tree
    Column("snapshot_id", String(64), nullable=False, default=""),
    Column("paths", Text, nullable=False, default="[]"),  # JSON list
    Column("target", Text, nullable=False, default=""),  # "" = the original location
    Column("urgency", String(10), nullable=False),  # low | normal | high | critical
    Column("description", Text, nullable=False, default=""),
    Column("quote", Text, nullable=False, default=""),
    Column("planned_for", String(40), nullable=False, default=""),
    Column("state", String(20), nullable=False),
    Column("log", Text, nullable=False, default=""),  # the output of the restores run for it
    Index("ix_portal_requests_tenant", "tenant", "state"),
)

request_events = Table(
    "portal_request_events", metadata,
    Column("id", Integer, primary_key=True),
    Column("request_id", Integer, ForeignKey("portal_requests.id"), nullable=False),
    Column("time", String(40), nullable=False),
    Column("login", String(100), nullable=False),
    Column("from_state", String(20), nullable=False),
    Column("to_state", String(20), nullable=False),
    Column("note", Text, nullable=False, default=""),
)

incidents = Table(
    "portal_incidents", metadata,
    Column("id", Integer, primary_key=True),
    Column("reference", String(20), nullable=False),  # INC-2026-00042
    Column("year", Integer, nullable=False),
    Column("number", Integer, nullable=False),
    Column("tenant", String(200), nullable=False),
    Column("opened_by", String(100), nullable=False),
    Column("opened", String(40), nullable=False),  # the ticket's time
    Column("title", String(300), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("confirmed", String(40), nullable=False, default=""),  # the client's written confirmation
    Column("closed", String(40), nullable=False, default=""),
    Column("contested", String(40), nullable=False, default=""),  # the last contest of a closure
    Column("report_causes", Text, nullable=False, default=""),
    Column("report_fixes", Text, nullable=False, default=""),
    Column("report_filed", String(40), nullable=False, default=""),
    UniqueConstraint("year", "number", name="uq_portal_incidents_number"),
    UniqueConstraint("reference", name="uq_portal_incidents_reference"),
    Index("ix_portal_incidents_tenant", "tenant"),
)

incident_events = Table(
    "portal_incident_events", metadata,
    Column("id", Integer, primary_key=True),
    Column("incident_id", Integer, ForeignKey("portal_incidents.id"), nullable=False),
    Column("time", String(40), nullable=False),
    Column("login", String(100), nullable=False),
    Column("event", String(30), nullable=False),  # opened | confirmed | closed | notified | contested | report
    Column("note", Text, nullable=False, default=""),
)
