"""A submission's idempotency key keeps the hash of the spec it stored; a user's token can be
revoked. Rows from before keep working: a key without a hash returns its job as it always did.

Revision ID: 0003
Revises: 0002_reasons
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002_reasons"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("request_hash", sa.String(64), nullable=True))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("revoked_at", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("revoked_at")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("request_hash")
