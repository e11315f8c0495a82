"""Appointment (智能预约) and service plan (疗程) tables.

A booking occupies its resources through `appt_holds` rows (start to end plus the service's
buffer). Two holds of one resource never overlap: every writer locks the resource rows
(`lock_version`, one UPDATE per resource in id order) before it checks for overlap and
inserts, in the same transaction; see `hub.appointments`.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Date, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hub.models import Base

__all__ = [
    "Appointment",
    "ApptClass",
    "ApptHold",
    "ApptResource",
    "ApptService",
    "ApptShift",
    "ApptStatus",
    "PlanStatus",
    "ResourceKind",
    "ServicePlan",
]


class ResourceKind(StrEnum):
    """What a service can need: a person with a skill, a room, a machine."""

    STAFF = "staff"
    ROOM = "room"
    MACHINE = "machine"


class ApptStatus(StrEnum):
    """Where an appointment is; `checked_in`, `cancelled` and `no_show` are final."""

    BOOKED = "booked"
    WAITLISTED = "waitlisted"  # a full group class; promoted in order when a seat frees
    CHECKED_IN = "checked_in"
    CANCELLED = "cancelled"
    NO_SHOW = "no_show"


class PlanStatus(StrEnum):
    """A service plan runs until all its sessions are checked in, or it is cancelled."""

    ACTIVE = "active"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class ApptResource(Base):
    """A bookable staff member, room or machine of one store; `tags` are skills or features."""

    __tablename__ = "appt_resources"
    __table_args__ = (UniqueConstraint("store", "kind", "name", name="uq_appt_resources_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    store: Mapped[str] = mapped_column(ForeignKey("stores.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(64))
    tags: Mapped[list[str]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    lock_version: Mapped[int] = mapped_column(BigInteger, default=0)  # bumped to lock the row
    created_at: Mapped[datetime]


class ApptService(Base):
    """A bookable service, chain-wide: how long, the buffer after it, what it needs, its rules.

    `needs` is a list of `{"kind": "staff"|"room"|"machine", "tag": str|None}`; a resource
    fits a need if its kind matches and it carries the tag. `capacity` > 1 makes it a group
    class (团课), booked into `ApptClass` sessions.
    """

    __tablename__ = "appt_services"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    duration_min: Mapped[int] = mapped_column(Integer)
    buffer_min: Mapped[int] = mapped_column(Integer, default=0)
    needs: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    capacity: Mapped[int] = mapped_column(Integer, default=1)
    waitlist: Mapped[bool] = mapped_column(Boolean, default=False)
    pass_sku: Mapped[str] = mapped_column(String(64))  # the service SKU a punch card must cover
    price_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    book_cutoff_min: Mapped[int] = mapped_column(Integer, default=0)  # book at least this long ahead
    change_cutoff_min: Mapped[int] = mapped_column(Integer, default=0)  # cancel/reschedule before this
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ApptShift(Base):
    """A staff member's shift (排班), entered in the store's local time and stored in UTC."""

    __tablename__ = "appt_shifts"
    __table_args__ = (Index("ix_appt_shifts_resource", "resource_id", "starts_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource_id: Mapped[str] = mapped_column(ForeignKey("appt_resources.id", ondelete="CASCADE"))
    store: Mapped[str] = mapped_column(String(32))
    day: Mapped[date] = mapped_column(Date)  # the local day it starts on
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]


class ApptClass(Base):
    """One session of a group class: its resources are held once for all its seats."""

    __tablename__ = "appt_classes"
    __table_args__ = (Index("ix_appt_classes_store", "store", "starts_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    store: Mapped[str] = mapped_column(ForeignKey("stores.id"))
    service_code: Mapped[str] = mapped_column(ForeignKey("appt_services.code"))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    capacity: Mapped[int] = mapped_column(Integer)
    resources: Mapped[list[str]] = mapped_column(JSON)
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(BigInteger, default=0)  # bumped to lock the class
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]


class Appointment(Base):
    """One member's booking of a service (or seat in a class) at one store."""

    __tablename__ = "appointments"
    __table_args__ = (
        Index("ix_appointments_store_start", "store", "starts_at"),
        Index("ix_appointments_member", "member_id", "starts_at"),
        Index("ix_appointments_class", "class_id", "status", "created_at"),
        Index("ix_appointments_status_end", "status", "ends_at"),
        Index("ix_appointments_status_start", "status", "starts_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # UUIDv7
    store: Mapped[str] = mapped_column(ForeignKey("stores.id"))
    service_code: Mapped[str] = mapped_column(ForeignKey("appt_services.code"))
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    class_id: Mapped[str | None] = mapped_column(ForeignKey("appt_classes.id"))
    plan_id: Mapped[str | None] = mapped_column(ForeignKey("service_plans.id"))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]  # end of the service itself; the buffer follows it
    status: Mapped[str] = mapped_column(String(16))
    resources: Mapped[list[str]] = mapped_column(JSON)
    note: Mapped[str] = mapped_column(String(500), default="")
    late_cancel: Mapped[bool] = mapped_column(Boolean, default=False)
    cancel_reason: Mapped[str | None] = mapped_column(String(500))
    checked_in_at: Mapped[datetime | None]
    pass_txn_id: Mapped[str | None] = mapped_column(String(36))
    reminded: Mapped[bool] = mapped_column(Boolean, default=False)  # the reminder is queued
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ApptHold(Base):
    """A resource occupied from `starts_at` to `ends_at` (buffer included) by a booking or a class."""

    __tablename__ = "appt_holds"
    __table_args__ = (Index("ix_appt_holds_resource", "resource_id", "starts_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource_id: Mapped[str] = mapped_column(ForeignKey("appt_resources.id"))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    appointment_id: Mapped[str | None] = mapped_column(
        ForeignKey("appointments.id", ondelete="CASCADE"), index=True
    )
    class_id: Mapped[str | None] = mapped_column(
        ForeignKey("appt_classes.id", ondelete="CASCADE"), index=True
    )


class ServicePlan(Base):
    """A plan of N sessions of one service at an interval for a member (疗程/健身计划)."""

    __tablename__ = "service_plans"
    __table_args__ = (
        Index("ix_service_plans_due", "store", "status", "next_due"),
        Index("ix_service_plans_member", "member_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    member_id: Mapped[str] = mapped_column(ForeignKey("members.id"))
    service_code: Mapped[str] = mapped_column(ForeignKey("appt_services.code"))
    store: Mapped[str] = mapped_column(ForeignKey("stores.id"))
    sessions_total: Mapped[int] = mapped_column(Integer)
    sessions_done: Mapped[int] = mapped_column(Integer, default=0)
    interval_days: Mapped[int] = mapped_column(Integer)
    next_due: Mapped[date | None] = mapped_column(Date)
    reminded_session: Mapped[int] = mapped_column(Integer, default=0)  # last session number reminded of
    status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(String(500), default="")
    created_by: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
