"""Join the member domains' branches (levels/points, stored value, member codes, passes).

They were built side by side off 0005; from here the history is one line again.

Revision ID: 0010
Revises: 0006, 0007, 0008, 0009
"""

from __future__ import annotations

revision = "0010"
down_revision = ("0006", "0007", "0008", "0009")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """A merge point only: each branch created its own tables."""


def downgrade() -> None:
    """A merge point only."""
