"""Appointments (智能预约): resources, services, shifts, class sessions, bookings, resource holds,
and service plans (疗程).

Revision ID: 0020
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.models import UtcDateTime

revision = "0020"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "appt_resources",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("store", sa.String(32), sa.ForeignKey("stores.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("lock_version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("store", "kind", "name", name="uq_appt_resources_name"),
    )
    op.create_index("ix_appt_resources_store", "appt_resources", ["store"])
    op.create_table(
        "appt_services",
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("duration_min", sa.Integer(), nullable=False),
        sa.Column("buffer_min", sa.Integer(), nullable=False),
        sa.Column("needs", sa.JSON(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("waitlist", sa.Boolean(), nullable=False),
        sa.Column("pass_sku", sa.String(64), nullable=False),
        sa.Column("price_fen", sa.BigInteger(), nullable=False),
        sa.Column("book_cutoff_min", sa.Integer(), nullable=False),
        sa.Column("change_cutoff_min", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "appt_shifts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "resource_id",
            sa.String(36),
            sa.ForeignKey("appt_resources.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("store", sa.String(32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("starts_at", UtcDateTime(), nullable=False),
        sa.Column("ends_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_appt_shifts_resource", "appt_shifts", ["resource_id", "starts_at"])
    op.create_table(
        "appt_classes",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("store", sa.String(32), sa.ForeignKey("stores.id"), nullable=False),
        sa.Column("service_code", sa.String(32), sa.ForeignKey("appt_services.code"), nullable=False),
        sa.Column("starts_at", UtcDateTime(), nullable=False),
        sa.Column("ends_at", UtcDateTime(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("resources", sa.JSON(), nullable=False),
        sa.Column("cancelled", sa.Boolean(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_appt_classes_store", "appt_classes", ["store", "starts_at"])
    op.create_table(
        "service_plans",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("member_id", sa.String(36), sa.ForeignKey("members.id"), nullable=False),
        sa.Column("service_code", sa.String(32), sa.ForeignKey("appt_services.code"), nullable=False),
        sa.Column("store", sa.String(32), sa.ForeignKey("stores.id"), nullable=False),
        sa.Column("sessions_total", sa.Integer(), nullable=False),
        sa.Column("sessions_done", sa.Integer(), nullable=False),
        sa.Column("interval_days", sa.Integer(), nullable=False),
        sa.Column("next_due", sa.Date(), nullable=True),
        sa.Column("reminded_session", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_service_plans_due", "service_plans", ["store", "status", "next_due"])
    op.create_index("ix_service_plans_member", "service_plans", ["member_id", "status"])
    op.create_table(
        "appointments",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("store", sa.String(32), sa.ForeignKey("stores.id"), nullable=False),
        sa.Column("service_code", sa.String(32), sa.ForeignKey("appt_services.code"), nullable=False),
        sa.Column("member_id", sa.String(36), sa.ForeignKey("members.id"), nullable=False),
        sa.Column("class_id", sa.String(36), sa.ForeignKey("appt_classes.id"), nullable=True),
        sa.Column("plan_id", sa.String(36), sa.ForeignKey("service_plans.id"), nullable=True),
        sa.Column("starts_at", UtcDateTime(), nullable=False),
        sa.Column("ends_at", UtcDateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("resources", sa.JSON(), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("late_cancel", sa.Boolean(), nullable=False),
        sa.Column("cancel_reason", sa.String(500), nullable=True),
        sa.Column("checked_in_at", UtcDateTime(), nullable=True),
        sa.Column("pass_txn_id", sa.String(36), nullable=True),
        sa.Column("reminded", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(80), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_appointments_store_start", "appointments", ["store", "starts_at"])
    op.create_index("ix_appointments_member", "appointments", ["member_id", "starts_at"])
    op.create_index("ix_appointments_class", "appointments", ["class_id", "status", "created_at"])
    op.create_index("ix_appointments_status_end", "appointments", ["status", "ends_at"])
    op.create_index("ix_appointments_status_start", "appointments", ["status", "starts_at"])
    op.create_table(
        "appt_holds",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("resource_id", sa.String(36), sa.ForeignKey("appt_resources.id"), nullable=False),
        sa.Column("starts_at", UtcDateTime(), nullable=False),
        sa.Column("ends_at", UtcDateTime(), nullable=False),
        sa.Column(
            "appointment_id",
            sa.String(36),
            sa.ForeignKey("appointments.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column(
            "class_id", sa.String(36), sa.ForeignKey("appt_classes.id", ondelete="CASCADE"), nullable=True
        ),
    )
    op.create_index("ix_appt_holds_resource", "appt_holds", ["resource_id", "starts_at"])
    op.create_index("ix_appt_holds_appointment_id", "appt_holds", ["appointment_id"])
    op.create_index("ix_appt_holds_class_id", "appt_holds", ["class_id"])


def downgrade() -> None:
    for table in (
        "appt_holds",
        "appointments",
        "service_plans",
        "appt_classes",
        "appt_shifts",
        "appt_services",
        "appt_resources",
    ):
        op.drop_table(table)
