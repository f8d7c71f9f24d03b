"""The client portal's accounts, sessions, audit log, restore requests and incident tickets.

The tables are created from their definitions in orchestrator.catalog.portal_tables as they stand at this revision; a later
change to them comes with a migration of its own (add_column, as 0005 does).

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ORDER = ("portal_users", "portal_sessions", "portal_audit", "portal_requests", "portal_request_events",
          "portal_incidents", "portal_incident_events")


def upgrade() -> None:
    from orchestrator.catalog import portal_tables as tables

    bind = op.get_bind()
    for name in _ORDER:
        tables.metadata.tables[name].create(bind, checkfirst=True)


def downgrade() -> None:
    for name in reversed(_ORDER):
        op.drop_table(name)
