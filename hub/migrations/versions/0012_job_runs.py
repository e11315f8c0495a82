"""Nightly jobs: one `job_runs` row per job and day (who ran it, when, what it did or why it failed).

Revision ID: 0012
Revises: 0010

Built off 0010 beside another branch (0011); `hub.db` upgrades to "heads" until they are merged.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.models import UtcDateTime

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("started_by", sa.String(80), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("summary", sa.String(500), nullable=False),
        sa.Column("error", sa.String(2000), nullable=True),
        sa.UniqueConstraint("job", "day", name="uq_job_runs_job_day"),
    )
    op.create_index("ix_job_runs_started", "job_runs", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_job_runs_started", table_name="job_runs")
    op.drop_table("job_runs")
