"""Metric data: one row per metric series and minute (CloudWatch's statistic set), durable across restarts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metric_data",
        sa.Column("namespace", sa.String(256), primary_key=True),
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("dimensions", sa.String(2048), primary_key=True),
        sa.Column("minute", sa.BigInteger(), primary_key=True),
        sa.Column("unit", sa.String(32), nullable=False),
        sa.Column("sample_count", sa.Float(), nullable=False),
        sa.Column("total", sa.Float(), nullable=False),
        sa.Column("minimum", sa.Float(), nullable=False),
        sa.Column("maximum", sa.Float(), nullable=False),
    )
    op.create_index("ix_metric_data_minute", "metric_data", ["minute"])


def downgrade() -> None:
    op.drop_table("metric_data")
