"""Alert state, so each alert condition is sent once until it clears.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("alert_state", sa.Column("key", sa.String(400), primary_key=True),
                    sa.Column("active", sa.Boolean, nullable=False),
                    sa.Column("since", sa.String(40), nullable=False),
                    sa.Column("message", sa.Text, nullable=False))


def downgrade() -> None:
    op.drop_table("alert_state")
