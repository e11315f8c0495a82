"""Setting up appointments: the chain's services, each store's staff, rooms and machines, and shifts (排班).

Shifts are entered as a local day and local times in the store's time zone and stored
in UTC; an end at or before the start means the shift runs past midnight.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from hub.appointment_tables import ApptResource, ApptService, ApptShift, ResourceKind
from hub.db import AsyncSession, Database
from hub.errors import HubError, NotFound
from hub.models import Store
from protocol.ids import new_id
from protocol.timeutil import format_utc

__all__ = [
    "AppointmentError",
    "ServiceTerms",
    "add_resource",
    "add_shift",
    "get_service",
    "in_transaction",
    "list_resources",
    "list_services",
    "list_shifts",
    "local_day_bounds",
    "put_service",
    "resource_json",
    "service_json",
    "shift_json",
    "store_zone",
]

T = TypeVar("T")
_CODE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,31}$")
_TAG = re.compile(r"^[\w-]{1,32}$")
MAX_SHIFT_HOURS = 16
_LOCK_ATTEMPTS = 6


class AppointmentError(HubError):
    """A booking, class, shift or plan step that the rules refuse; says why and what to do."""


@dataclass(frozen=True)
class ServiceTerms:
    """What a service takes: minutes, buffer after it, what it needs, seats, its rules."""

    name: str
    duration_min: int
    needs: list[dict[str, Any]]
    buffer_min: int = 0
    capacity: int = 1
    waitlist: bool = False
    pass_sku: str | None = None
    price_fen: int = 0
    book_cutoff_min: int = 0
    change_cutoff_min: int = 0


def _now() -> datetime:
    return datetime.now(UTC)


async def in_transaction(db: Database, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one transaction; on SQLite, retry it when the write lock wait timed out.

    SQLite lets one writer in at a time and gives up after its busy timeout; a burst of
    bookings can exceed that. The failed transaction wrote nothing, so it is run again
    (a few times, with a jittered pause). PostgreSQL waits on row locks and never needs it.
    """
    for attempt in range(1, _LOCK_ATTEMPTS + 1):
        try:
            async with db.session() as session, session.begin():
                return await work(session)
        except OperationalError as err:
            if "database is locked" not in str(err) or attempt == _LOCK_ATTEMPTS:
                raise
            await asyncio.sleep(random.uniform(0.01, 0.1) * attempt)  # noqa: S311 - jitter, not secrecy
    raise AssertionError("unreachable")


async def store_zone(session: AsyncSession, store: str) -> ZoneInfo:
    """The store's time zone; `NotFound` for an unknown store."""
    zone = await session.scalar(select(Store.timezone).where(Store.id == store))
    if zone is None:
        raise NotFound(f"unknown store '{store}'")
    return ZoneInfo(zone)


def local_day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """Local midnight to the next local midnight of `day`, in UTC (23 or 25 hours across DST)."""
    start = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
    return start, end


def _check_needs(needs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    clean = []
    for index, need in enumerate(needs):
        kind, tag = need.get("kind"), need.get("tag")
        if kind not in {k.value for k in ResourceKind}:
            raise AppointmentError(f"needs[{index}]: kind must be staff, room or machine")
        if tag is not None and (not isinstance(tag, str) or not _TAG.match(tag)):
            raise AppointmentError(f"needs[{index}]: tag must be 1-32 letters, digits, '_' or '-'")
        clean.append({"kind": kind, "tag": tag})
    if not any(n["kind"] == ResourceKind.STAFF for n in clean):
        raise AppointmentError("a service needs at least one staff member (kind 'staff')")
    return clean


async def put_service(session: AsyncSession, code: str, terms: ServiceTerms) -> ApptService:
    """Create or replace a service; bookings already made keep the times they were given."""
    if not _CODE.match(code):
        raise AppointmentError("a service code is 1-32 capital letters, digits, '_' or '-'")
    if not 5 <= terms.duration_min <= 24 * 60:
        raise AppointmentError("duration_min must be from 5 to 1440")
    if not 0 <= terms.buffer_min <= 240:
        raise AppointmentError("buffer_min must be from 0 to 240")
    if not 1 <= terms.capacity <= 500:
        raise AppointmentError("capacity must be from 1 to 500")
    if terms.waitlist and terms.capacity == 1:
        raise AppointmentError("a waitlist is for group classes (capacity above 1)")
    needs = _check_needs(terms.needs)
    now = _now()
    row = await session.get(ApptService, code)
    if row is None:
        row = ApptService(code=code, created_at=now, active=True)
        session.add(row)
    row.name, row.duration_min, row.buffer_min = terms.name, terms.duration_min, terms.buffer_min
    row.needs, row.capacity, row.waitlist = needs, terms.capacity, terms.waitlist
    row.pass_sku = terms.pass_sku or code
    row.price_fen, row.book_cutoff_min = terms.price_fen, terms.book_cutoff_min
    row.change_cutoff_min, row.updated_at, row.active = terms.change_cutoff_min, now, True
    await session.flush()
    return row


async def get_service(session: AsyncSession, code: str) -> ApptService:
    """The service with this code, or `NotFound`."""
    row = await session.get(ApptService, code)
    if row is None:
        raise NotFound(f"no service '{code}'")
    return row


async def list_services(session: AsyncSession) -> list[ApptService]:
    """Every service, by code."""
    return list((await session.scalars(select(ApptService).order_by(ApptService.code))).all())


def service_json(s: ApptService) -> dict[str, Any]:
    """A service as the API shows it."""
    return {
        "code": s.code,
        "name": s.name,
        "duration_min": s.duration_min,
        "buffer_min": s.buffer_min,
        "needs": s.needs,
        "capacity": s.capacity,
        "waitlist": s.waitlist,
        "pass_sku": s.pass_sku,
        "price_fen": s.price_fen,
        "book_cutoff_min": s.book_cutoff_min,
        "change_cutoff_min": s.change_cutoff_min,
        "active": s.active,
    }


async def add_resource(
    session: AsyncSession, store: str, kind: ResourceKind, name: str, tags: list[str]
) -> ApptResource:
    """A staff member (tags: skills), room or machine (tags: features) of the store."""
    await store_zone(session, store)
    name = name.strip()
    if not 1 <= len(name) <= 64:
        raise AppointmentError("a resource name is 1-64 characters")
    for tag in tags:
        if not _TAG.match(tag):
            raise AppointmentError(f"tag {tag!r}: 1-32 letters, digits, '_' or '-'")
    taken = await session.scalar(
        select(ApptResource.id).where(
            ApptResource.store == store, ApptResource.kind == kind.value, ApptResource.name == name
        )
    )
    if taken is not None:
        raise AppointmentError(f"store '{store}' already has a {kind.value} named {name!r}")
    row = ApptResource(
        id=str(new_id()),
        store=store,
        kind=kind.value,
        name=name,
        tags=sorted(set(tags)),
        active=True,
        lock_version=0,
        created_at=_now(),
    )
    session.add(row)
    await session.flush()
    return row


async def list_resources(session: AsyncSession, store: str) -> list[ApptResource]:
    """The store's resources, staff first."""
    rows = await session.scalars(
        select(ApptResource).where(ApptResource.store == store).order_by(ApptResource.kind, ApptResource.name)
    )
    return list(rows.all())


def resource_json(r: ApptResource) -> dict[str, Any]:
    """A resource as the API shows it."""
    return {"id": r.id, "store": r.store, "kind": r.kind, "name": r.name, "tags": r.tags, "active": r.active}


async def add_shift(
    session: AsyncSession, resource_id: str, day: date, start: time, end: time, *, actor: str
) -> ApptShift:
    """A staff member works from `start` to `end` local time on `day`; overlapping shifts are refused."""
    resource = await session.get(ApptResource, resource_id)
    if resource is None:
        raise NotFound(f"no resource {resource_id}")
    if resource.kind != ResourceKind.STAFF:
        raise AppointmentError(f"{resource.name} is a {resource.kind}; only staff have shifts")
    zone = await store_zone(session, resource.store)
    starts = datetime.combine(day, start, tzinfo=zone).astimezone(UTC)
    end_day = day if end > start else day + timedelta(days=1)
    ends = datetime.combine(end_day, end, tzinfo=zone).astimezone(UTC)
    if ends - starts > timedelta(hours=MAX_SHIFT_HOURS):
        raise AppointmentError(f"a shift lasts at most {MAX_SHIFT_HOURS} hours")
    clash = await session.scalar(
        select(ApptShift).where(
            ApptShift.resource_id == resource_id, ApptShift.starts_at < ends, ApptShift.ends_at > starts
        )
    )
    if clash is not None:
        raise AppointmentError(
            f"{resource.name} already has a shift on {clash.day} overlapping this one; change that one"
        )
    row = ApptShift(
        resource_id=resource_id,
        store=resource.store,
        day=day,
        starts_at=starts,
        ends_at=ends,
        created_by=actor,
        created_at=_now(),
    )
    session.add(row)
    await session.flush()
    return row


async def list_shifts(session: AsyncSession, store: str, day: date) -> list[ApptShift]:
    """The store's shifts that start on the local `day`."""
    rows = await session.scalars(
        select(ApptShift)
        .where(ApptShift.store == store, ApptShift.day == day)
        .order_by(ApptShift.starts_at, ApptShift.resource_id)
    )
    return list(rows.all())


def shift_json(s: ApptShift) -> dict[str, Any]:
    """A shift as the API shows it."""
    return {
        "id": s.id,
        "resource_id": s.resource_id,
        "store": s.store,
        "day": s.day.isoformat(),
        "starts_at": format_utc(s.starts_at),
        "ends_at": format_utc(s.ends_at),
    }
