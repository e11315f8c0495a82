"""The demo's beauty/fitness store (hub only): a facial with a therapist on shift and a room,
and a member holding a 10-visit card, so a booking can be made and checked in by curl.

Safe to run again on the same state directory: what exists is kept.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from hub.appointment_tables import ApptResource, ResourceKind
from hub.appointments_setup import AppointmentError, ServiceTerms, add_resource, add_shift, put_service
from hub.db import Database
from hub.members import MemberFields, create_member, find_by_phone
from hub.models import Store
from hub.passes import PassError, ProductSpec, create_product, issue_manual, member_passes
from hub.stores import add_store

__all__ = ["BEAUTY_STORE", "appointments_banner", "setup_demo_appointments"]

BEAUTY_STORE = "demo-beauty"
BEAUTY_STORE_NAME = "演示美容健身店"
_ACTOR = "user:demo-owner"
_PHONE = "13900005678"
_SERVICE = "FACIAL"
_CARD = "FACIAL10"


async def setup_demo_appointments(db: Database) -> dict[str, Any]:
    """The store, its facial, therapist (on shift for the next 14 hours), room and a member with a card."""
    async with db.session() as session:
        has_store = await session.get(Store, BEAUTY_STORE) is not None
    if not has_store:
        await add_store(db, BEAUTY_STORE, BEAUTY_STORE_NAME)
    zone = ZoneInfo("Asia/Shanghai")
    now_local = datetime.now(UTC).astimezone(zone)
    async with db.session() as session, session.begin():
        await put_service(
            session,
            _SERVICE,
            ServiceTerms(
                "面部护理",
                60,
                [{"kind": "staff", "tag": "facial"}, {"kind": "room", "tag": None}],
                buffer_min=15,
                price_fen=19_800,
                change_cutoff_min=120,
            ),
        )
        resources = {
            r.name: r
            for r in (
                await session.scalars(select(ApptResource).where(ApptResource.store == BEAUTY_STORE))
            ).all()
        }
        if "李美容师" not in resources:
            resources["李美容师"] = await add_resource(
                session, BEAUTY_STORE, ResourceKind.STAFF, "李美容师", ["facial"]
            )
        if "一号房" not in resources:
            resources["一号房"] = await add_resource(session, BEAUTY_STORE, ResourceKind.ROOM, "一号房", [])
        member = await find_by_phone(session, _PHONE)
        if member is None:
            member = await create_member(session, MemberFields(_PHONE, channel="hub", name="演示顾客"))
        with contextlib.suppress(PassError):  # made by an earlier run
            spec = ProductSpec(
                name="面部护理10次卡", kind="count", sale_sku="CARD-FACIAL10", covers_skus=[_SERVICE], uses=10
            )
            await create_product(session, _CARD, spec)
        if not await member_passes(session, member.id, usable_only=True):
            await issue_manual(
                session, _CARD, member.id, actor=_ACTOR, reason="demo: a card the member bought"
            )
        therapist = resources["李美容师"].id
        member_id = member.id
    start = time(now_local.hour)
    end = time((now_local.hour + 14) % 24)
    try:
        async with db.session() as session, session.begin():
            await add_shift(session, therapist, now_local.date(), start, end, actor=_ACTOR)
    except AppointmentError:
        pass  # on shift from an earlier run
    first = (now_local + timedelta(minutes=30)).replace(second=0, microsecond=0)
    first += timedelta(minutes=-first.minute % 15)
    return {
        "beauty_store": BEAUTY_STORE,
        "beauty_service": _SERVICE,
        "beauty_member_id": member_id,
        "beauty_therapist_id": therapist,
        "beauty_example_start": first.isoformat(),
    }


def appointments_banner(hub_url: str, token: str, info: dict[str, Any]) -> None:
    """How to see free slots, book and check in at the beauty store (docs/appointments.md)."""
    auth_header = f'-H "Authorization: Bearer {token}"'
    json_header = '-H "Content-Type: application/json"'
    store = f"{hub_url}/api/v1/stores/{BEAUTY_STORE}"
    day = info["beauty_example_start"][:10]
    booking = (
        f'{{"service": "{_SERVICE}", "member_id": "{info["beauty_member_id"]}", '
        f'"starts_at": "{info["beauty_example_start"]}"}}'
    )
    print(
        f"  appointments {BEAUTY_STORE} ({BEAUTY_STORE_NAME}, hub only): 面部护理 60 min,\n"
        f"               a therapist on shift, one room; member {_PHONE} holds a 10-visit card\n"
        f"  free slots:  curl {auth_header} '{store}/availability?service={_SERVICE}&day={day}'\n"
        f"  book:        curl -X POST {auth_header} {json_header} -d '{booking}' {store}/appointments\n"
        f"  check in:    curl -X POST {auth_header}"
        f" {hub_url}/api/v1/appointments/<id from the booking>/check-in\n",
        flush=True,
    )
