"""Trial metrics: every value a run logged with BatchPutMetrics (its time and step), durable across restarts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trial_metrics",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("trial_component", sa.String(256), nullable=False),
        sa.Column("metric_name", sa.String(256), nullable=False),
        sa.Column("timestamp", sa.Float(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=True),
        sa.Column("value", sa.Float(), nullable=False),
    )
    op.create_index("ix_trial_metrics_component", "trial_metrics", ["trial_component", "metric_name"])


def downgrade() -> None:
    op.drop_table("trial_metrics")
