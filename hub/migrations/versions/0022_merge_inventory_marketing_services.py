"""Join the branches built side by side off 0014: catalog, purchasing, stocktakes, promotions
and coupons, campaigns and group buys, appointments, referrals and the points mall.

Revision ID: 0022
Revises: 0015, 0016, 0017, 0018, 0019, 0020, 0021
"""

from __future__ import annotations

revision = "0022"
down_revision = ("0015", "0016", "0017", "0018", "0019", "0020", "0021")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """A merge point only: each branch created its own tables."""


def downgrade() -> None:
    """A merge point only."""
