"""Join the branches built side by side off 0010: member tags and segments, job runs, stock.

Revision ID: 0014
Revises: 0011, 0012, 0013
"""

from __future__ import annotations

revision = "0014"
down_revision = ("0011", "0012", "0013")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """A merge point only: each branch created its own tables."""


def downgrade() -> None:
    """A merge point only."""
