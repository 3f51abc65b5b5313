"""Resources: a version for compare-and-set on the whole document, and an indexed parent link.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("resources") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("parent_arn", sa.String(2048), nullable=True))
    op.create_index("ix_resources_parent", "resources", ["parent_arn"])


def downgrade() -> None:
    op.drop_index("ix_resources_parent", "resources")
    with op.batch_alter_table("resources") as batch:
        batch.drop_column("parent_arn")
        batch.drop_column("version")
