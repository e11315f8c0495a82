"""Members: merged members give up their phone; checkout codes; member-sales facts.

Revision ID: 0008
Revises: 0005

`members.phone` becomes nullable so a merged member can free its number. On SQLite this
uses the documented in-place edit for removing a NOT NULL constraint
(https://www.sqlite.org/lang_altertable.html, "otheralter") instead of a batch rebuild:
a rebuild drops `members`, and with foreign keys on, that drop would delete or block the
rows other tables (points, stored value, passes) keep for members.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.models import UtcDateTime

revision = "0008"
down_revision = "0005"
branch_labels = None
depends_on = None

_NOT_NULL_PHONE = "phone VARCHAR(11) NOT NULL,"


def _phone_nullable_sqlite() -> None:
    bind = op.get_bind()
    sql = bind.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'members'")
    ).scalar()
    if sql is None or sql.count(_NOT_NULL_PHONE) != 1:
        raise RuntimeError(f"members table is not as revision 0005 made it; cannot relax phone: {sql!r}")
    version = int(bind.execute(sa.text("PRAGMA schema_version")).scalar() or 0)
    bind.execute(sa.text("PRAGMA writable_schema = ON"))
    bind.execute(
        sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' AND name = 'members'"),
        {"sql": sql.replace(_NOT_NULL_PHONE, "phone VARCHAR(11),")},
    )
    bind.execute(sa.text(f"PRAGMA schema_version = {version + 1}"))
    bind.execute(sa.text("PRAGMA writable_schema = OFF"))


def upgrade() -> None:
    op.add_column("members", sa.Column("released_phone", sa.String(11), nullable=True))
    op.create_index("ix_members_released_phone", "members", ["released_phone"])
    if op.get_bind().dialect.name == "sqlite":
        _phone_nullable_sqlite()
    else:
        op.alter_column("members", "phone", existing_type=sa.String(11), nullable=True)

    op.create_table(
        "member_code_keys",
        sa.Column(
            "member_id", sa.String(36), sa.ForeignKey("members.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("handle", sa.String(8), nullable=False, unique=True),
        sa.Column("secret", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "member_code_uses",
        sa.Column(
            "member_id", sa.String(36), sa.ForeignKey("members.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("window", sa.BigInteger(), primary_key=True),
        sa.Column("store", sa.String(32), nullable=True),
        sa.Column("used_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "member_orders",
        sa.Column("order_id", sa.String(36), primary_key=True),
        sa.Column("member_id", sa.String(36), nullable=False),
        sa.Column("store", sa.String(32), nullable=False),
        sa.Column("business_day", sa.Date(), nullable=False),
        sa.Column("closed_at", UtcDateTime(), nullable=True),
        sa.Column("total_fen", sa.BigInteger(), nullable=False),
        sa.Column("refunded_fen", sa.BigInteger(), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
    )
    op.create_index("ix_member_orders_member_day", "member_orders", ["member_id", "business_day"])
    op.create_index("ix_member_orders_day", "member_orders", ["business_day"])
    op.create_index("ix_member_orders_store_day", "member_orders", ["store", "business_day"])


def downgrade() -> None:
    op.drop_table("member_orders")
    op.drop_table("member_code_uses")
    op.drop_table("member_code_keys")
    op.drop_index("ix_members_released_phone", "members")
    op.drop_column("members", "released_phone")
