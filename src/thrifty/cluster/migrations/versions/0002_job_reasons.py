"""Why a job waits or failed (`reason`) and what the last round granted it (`last_decision`).

Revision ID: 0002_reasons
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_reasons"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("reason", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("last_decision", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("last_decision")
        batch.drop_column("reason")
