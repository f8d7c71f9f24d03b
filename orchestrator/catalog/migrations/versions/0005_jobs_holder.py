"""Jobs are recorded when they start (status ``running``) with the process that runs them, so a run that was
killed is found by the next start and marked ``interrupted`` instead of vanishing from the history.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("holder", sa.String(300), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "holder")
