"""The demo's promotions and coupon (issue 8): what head office sets up and publishes to the demo store.

- 满50减5 on the whole order;
- fresh food (category 鲜食 and everything under it, e.g. 鲜食/称重) marked down by the time
  of day in the store's time zone:
  "晚市鲜食 8折" from 20:00 to 04:00 and "日间鲜食 9折" from 04:00 to 20:00, so exactly one
  of them is live whenever the demo runs;
- a coupon template "满20减3券" and a hub member (phone `PROMO_PHONE`) holding one unused coupon.

Everything goes through the hub's own domain functions, as head office would through the
API. Safe to run again on the same state directory: what exists is kept, and the member
gets a new coupon only when they hold no unused one.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from hub.coupon_schemas import TemplateIn
from hub.coupon_tables import CouponState, CouponTemplate, IssueSource
from hub.coupons import create_template, issue, member_coupons
from hub.db import Database
from hub.link import BrokerLink
from hub.members import MemberFields, create_member, find_by_phone
from hub.models import Store
from hub.promotions import create_promotion, list_promotions, publish

__all__ = ["PROMO_PHONE", "promotions_banner", "setup_demo_promotions"]

PROMO_PHONE = "13900002468"
_ACTOR = "user:demo-owner"
_FRESH = "鲜食"
_NIGHT = "晚市鲜食 8折"
_DAY = "日间鲜食 9折"
_TEMPLATE = "满20减3券"
_FRESH_HOURS = {_NIGHT: (time(20), time(4), 2000), _DAY: (time(4), time(20), 1000)}


def _rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {"kind": "threshold", "name": "满50减5", "threshold_fen": 5000, "amount_fen": 500},
    ]
    for name, (start, end, off_bp) in _FRESH_HOURS.items():
        rules.append(
            {
                "kind": "percent_off",
                "name": name,
                "off_bp": off_bp,
                "scope": {"categories": [_FRESH]},
                "window": {"hours": [{"start": start.isoformat(), "end": end.isoformat()}]},
            }
        )
    return rules


def fresh_markdown_now(zone: ZoneInfo, now: datetime | None = None) -> str:
    """Which fresh-food markdown is live at `now` in the store's time zone."""
    hour = (now or datetime.now(UTC)).astimezone(zone).time()
    return _DAY if time(4) <= hour < time(20) else _NIGHT


async def setup_demo_promotions(db: Database, store: str, link: BrokerLink | None) -> dict[str, Any]:
    """Create (once) and publish the promotions, the coupon template, and give the member a coupon.

    Returns what the banner and `storelink-demo.json` show.
    """
    async with db.session() as session, session.begin():
        existing = {p.name for p in await list_promotions(session)}
        for rule in _rules():
            if rule["name"] not in existing:
                await create_promotion(session, rule, actor=_ACTOR, note="demo")
        template = await session.scalar(select(CouponTemplate).where(CouponTemplate.name == _TEMPLATE))
        if template is None:
            body = TemplateIn.model_validate(
                {
                    "name": _TEMPLATE,
                    "kind": "amount_off",
                    "amount_off_fen": 300,
                    "threshold_fen": 2000,
                    "valid_days": 30,
                    "per_member_limit": 100,  # a demo re-run gives the member another one
                }
            )
            template = await create_template(session, body, actor=_ACTOR)
        member = await find_by_phone(session, PROMO_PHONE)
        if member is None:
            member = await create_member(
                session, MemberFields(PROMO_PHONE, channel="hub", name="演示领券会员")
            )
        unused = [
            coupon
            for coupon, _ in await member_coupons(session, member.id, state=CouponState.ISSUED)
            if coupon.template_id == template.id
        ]
        if not unused:
            unused = await issue(session, template.id, [member.id], source=IssueSource.ISSUE, actor=_ACTOR)
        timezone = await session.scalar(select(Store.timezone).where(Store.id == store))
        info = {
            "promo_member_id": member.id,
            "promo_member_phone": PROMO_PHONE,
            "coupon_template_id": template.id,
            "coupon_code": unused[0].code,
        }
    done = await publish(db, actor=_ACTOR, stores=[store])
    if link is not None:
        await link.publish_snapshot(store, done.snapshots[store])
    live = fresh_markdown_now(ZoneInfo(timezone or "Asia/Shanghai"))
    return info | {"fresh_markdown_now": live}


def promotions_banner(hub_url: str, edge_url: str, token: str, info: dict[str, Any]) -> None:
    """How to see the promotions at head office and use the coupon at the till (docs/promotions.md)."""
    office = f'-H "Authorization: Bearer {token}"'
    till = '-H "Authorization: Bearer $STAFF_TOKEN" -H "Content-Type: application/json"'
    orders = f"{edge_url}/api/v1/orders/$ORDER"
    print(
        f"  promotions   满50减5; fresh food {_NIGHT} 20:00-04:00 and {_DAY} 04:00-20:00"
        f" (now: {info['fresh_markdown_now']})\n"
        f"  curl {office} {hub_url}/api/v1/promotions\n"
        f"  coupon       {_TEMPLATE} {info['coupon_code']} held by member {PROMO_PHONE}"
        " (STAFF_TOKEN from POST /api/v1/sessions, docs/till.md):\n"
        f"  curl {till} {edge_url}/api/v1/members/{info['promo_member_id']}/coupons\n"
        f"  curl -X POST {till} -H 'Idempotency-Key: c1' -d '{{\"code\": \"{info['coupon_code']}\"}}'"
        f" {orders}/coupons\n"
        f"  curl -X POST {till} {orders}/reprint\n"
        f"  curl {office} {hub_url}/api/v1/coupon-templates/{info['coupon_template_id']}/stats\n",
        flush=True,
    )
