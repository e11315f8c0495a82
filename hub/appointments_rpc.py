"""Till RPC methods for appointments: the store's bookings of a day, and check-in at the desk.

`appointment.checkin` takes a punch-card use, so it is keyed: the RpcServer refuses it
without an idempotency key and a retry gets the first outcome back.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select

from hub.appointment_tables import ApptService
from hub.appointments_setup import AppointmentError, store_zone
from hub.appointments_views import appointment_json, day_appointments
from hub.appointments_visits import check_in
from hub.db import AsyncSession
from hub.errors import NotFound
from hub.members import Member
from hub.rpc import Method, RpcError
from protocol.phone import mask_phone

__all__ = ["RPC_KEYED", "RPC_METHODS"]

P = TypeVar("P", bound=BaseModel)


class _DayParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    day: date | None = None  # the store's local day; today when left out


class _CheckInParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    appointment_id: str = Field(min_length=1, max_length=36)
    use_pass: bool = True


def _parse(model: type[P], method: str, params: dict[str, Any]) -> P:
    try:
        return model.model_validate(params)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "params"
        raise RpcError(f"{method}: {field}: {first['msg']}") from None


async def _today(session: AsyncSession, store: str, params: dict[str, Any]) -> Any:
    p = _parse(_DayParams, "appointment.today", params)
    try:
        day = p.day or datetime.now(UTC).astimezone(await store_zone(session, store)).date()
    except NotFound as err:
        raise RpcError(str(err)) from None
    rows = await day_appointments(session, store, day)
    members = {
        m.id: m
        for m in (
            await session.scalars(select(Member).where(Member.id.in_({a.member_id for a in rows})))
        ).all()
    }
    services = {s.code: s.name for s in (await session.scalars(select(ApptService))).all()}
    items = []
    for appt in rows:
        member = members.get(appt.member_id)
        item = appointment_json(appt)
        item["service_name"] = services.get(appt.service_code, appt.service_code)
        item["member_name"] = member.name if member else ""
        item["phone_masked"] = mask_phone(member.phone) if member else ""
        items.append(item)
    return {"store": store, "day": day.isoformat(), "items": items}


async def _checkin(session: AsyncSession, store: str, params: dict[str, Any]) -> Any:
    p = _parse(_CheckInParams, "appointment.checkin", params)
    try:
        return await check_in(
            session, p.appointment_id, store=store, use_pass=p.use_pass, actor=f"store:{store}"
        )
    except (AppointmentError, NotFound) as err:
        raise RpcError(str(err)) from None


RPC_METHODS: dict[str, Method] = {"appointment.today": _today, "appointment.checkin": _checkin}
RPC_KEYED = {"appointment.checkin"}
