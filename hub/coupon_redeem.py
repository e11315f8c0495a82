"""Using a coupon: redemption at a till (single use), release from an unpaid order, the engine
rule a coupon becomes, and the return of a coupon when its order is voided or fully refunded.

Single use holds across tills and hub instances: redeeming is one conditional UPDATE
(`state = 'used' WHERE code = :code AND state = 'issued'`). On PostgreSQL a second UPDATE
of the same row waits for the first transaction, re-reads the row and no longer matches;
on SQLite writers are serialised. The loser is refused with where and when it was used.
Redeeming again for the same order answers as the first time (a till that lost the reply
and retries under another key still gets its coupon, and no one else does).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update

from hub.coupon_tables import Coupon, CouponKind, CouponState, CouponTemplate
from hub.coupons import CouponError, coupon_json
from hub.db import AsyncSession
from hub.errors import NotFound
from hub.models import HubOrder, HubRefund
from protocol.promotion_rules import PercentOffRule, Rule, Scope, ThresholdRule

__all__ = ["COUPON_GROUP", "COUPON_PRIORITY", "coupon_rule", "coupons_from_sales", "redeem", "release"]

log = logging.getLogger(__name__)
# Coupons apply after the store's promotions (on the price they left) and never two on one line.
COUPON_PRIORITY = -1000
COUPON_GROUP = "coupons"


def coupon_rule(template: CouponTemplate, code: str) -> Rule:
    """The engine rule instance a coupon of `template` becomes when presented at a till.

    amount_off → 满减 (`threshold`; with no threshold, orders above the amount: a coupon never
    makes an order free), percent_off → `percent_off`
    capped by `max_discount_fen`, free_item → 100 % off one unit of the product.
    """
    common: dict[str, Any] = {
        "id": f"coupon:{template.id}",
        "name": template.name,
        "code": code,
        "priority": COUPON_PRIORITY,
        "group": COUPON_GROUP,
        "scope": Scope(skus=list(template.skus)),
    }
    kind = CouponKind(template.kind)
    if kind is CouponKind.AMOUNT_OFF:
        assert template.amount_off_fen is not None  # noqa: S101 - TemplateIn requires it
        return ThresholdRule(
            threshold_fen=max(template.threshold_fen, template.amount_off_fen + 1),
            amount_fen=template.amount_off_fen,
            **common,
        )
    if kind is CouponKind.PERCENT_OFF:
        assert template.percent_off_bp is not None  # noqa: S101 - TemplateIn requires it
        return PercentOffRule(off_bp=template.percent_off_bp, max_discount_fen=template.cap_fen, **common)
    assert template.free_sku is not None  # noqa: S101 - TemplateIn requires it
    common["scope"] = Scope(skus=[template.free_sku])
    return PercentOffRule(off_bp=10_000, max_applications=1, **common)


def _redeemed(coupon: Coupon, template: CouponTemplate) -> dict[str, Any]:
    return {
        "coupon": coupon_json(coupon, template),
        "rule": coupon_rule(template, coupon.code).model_dump(mode="json"),
    }


async def _load(session: AsyncSession, code: str) -> tuple[Coupon, CouponTemplate]:
    found = (
        await session.execute(
            select(Coupon, CouponTemplate)
            .join(CouponTemplate, CouponTemplate.id == Coupon.template_id)
            .where(Coupon.code == code)
            .execution_options(populate_existing=True)
        )
    ).first()
    if found is None:
        raise NotFound(f"no coupon {code}")
    return found[0], found[1]


def _when(ts: datetime | None) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if ts else "?"


async def redeem(
    session: AsyncSession,
    store: str,
    code: str,
    order_id: str,
    *,
    member_id: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Mark the coupon used for `order_id` at `store`; answers the coupon and its engine rule.

    `CouponError` when it is used, revoked, not yet valid, expired, not for this store, or
    belongs to another member than the order's (`member_id`, when the order has one).
    """
    now = now or datetime.now(UTC)
    code = code.strip().upper()
    coupon, template = await _load(session, code)
    if coupon.state == CouponState.USED.value and coupon.used_order_id == order_id:
        return _redeemed(coupon, template)
    if template.stores is not None and store not in template.stores:
        raise CouponError(f"coupon {code} ('{template.name}') is not valid at store {store}")
    if member_id is not None and coupon.member_id != member_id:
        raise CouponError(f"coupon {code} belongs to another member than this order's")
    if coupon.valid_from > now:
        raise CouponError(f"coupon {code} is valid from {_when(coupon.valid_from)}")
    if coupon.valid_until <= now:
        raise CouponError(f"coupon {code} expired at {_when(coupon.valid_until)}")
    taken = await session.execute(
        update(Coupon)
        .where(Coupon.code == code, Coupon.state == CouponState.ISSUED.value)
        .values(state=CouponState.USED.value, used_at=now, used_store=store, used_order_id=order_id)
        .execution_options(synchronize_session=False)
    )
    coupon, template = await _load(session, code)
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        if coupon.state == CouponState.USED.value and coupon.used_order_id == order_id:
            return _redeemed(coupon, template)
        if coupon.state == CouponState.USED.value:
            raise CouponError(
                f"coupon {code} was already used at store {coupon.used_store} at {_when(coupon.used_at)}"
            )
        raise CouponError(f"coupon {code} is {coupon.state} and cannot be used")
    return _redeemed(coupon, template)


async def release(session: AsyncSession, store: str, code: str, order_id: str) -> dict[str, Any]:
    """Give back a coupon taken off an order that was not paid (the cashier removed it).

    Refused once the hub holds the order as paid: a paid order gives its coupon back by a
    void or a full refund instead.
    """
    code = code.strip().upper()
    coupon, template = await _load(session, code)
    if coupon.state == CouponState.ISSUED.value:
        return {"coupon": coupon_json(coupon, template), "released": False}
    if coupon.used_order_id != order_id or coupon.used_store != store:
        raise CouponError(f"coupon {code} was not used by order {order_id} of store {store}")
    if await session.scalar(select(HubOrder.status).where(HubOrder.id == order_id)) == "paid":
        raise CouponError(f"order {order_id} is paid; refund or void it to give coupon {code} back")
    await _give_back(session, [code])
    coupon, template = await _load(session, code)
    return {"coupon": coupon_json(coupon, template), "released": True}


async def _give_back(session: AsyncSession, codes: list[str]) -> None:
    await session.execute(
        update(Coupon)
        .where(Coupon.code.in_(codes), Coupon.state == CouponState.USED.value)
        .values(
            state=CouponState.ISSUED.value,
            used_at=None,
            used_store=None,
            used_order_id=None,
            order_total_fen=None,
            returned=Coupon.returned + 1,
        )
        .execution_options(synchronize_session=False)
    )


async def _return_for_orders(session: AsyncSession, order_ids: set[str], why: str) -> None:
    """Coupons used by these orders go back to their members if still valid; expired ones stay used."""
    if not order_ids:
        return
    now = datetime.now(UTC)
    rows = (
        await session.execute(
            select(Coupon.code, Coupon.valid_until).where(
                Coupon.used_order_id.in_(sorted(order_ids)), Coupon.state == CouponState.USED.value
            )
        )
    ).all()
    back = [code for code, until in rows if until > now]
    if back:
        await _give_back(session, sorted(back))
        log.info("%d coupons returned (%s)", len(back), why)


async def coupons_from_sales(
    session: AsyncSession, store: str, orders: list[dict[str, Any]], refunds: list[dict[str, Any]]
) -> None:
    """Sale listener: record a paid order's total on its coupons; a void or full refund returns them."""
    voided = {str(o.get("id")) for o in orders if o.get("status") == "voided"}
    paid = {str(o.get("id")): o for o in orders if o.get("status") == "paid"}
    for order_id, order in paid.items():
        total = order.get("total_fen")
        if isinstance(total, int):
            await session.execute(
                update(Coupon)
                .where(Coupon.used_order_id == order_id, Coupon.state == CouponState.USED.value)
                .values(order_total_fen=total)
                .execution_options(synchronize_session=False)
            )
    await _return_for_orders(session, voided, "order voided")
    # A refund may arrive before or after its order; whichever comes second finds both.
    touched = set(paid) | {str(r.get("order_id")) for r in refunds}
    if not touched:
        return
    refunded = dict(
        (
            await session.execute(
                select(HubRefund.order_id, func.sum(HubRefund.total_fen))
                .where(HubRefund.order_id.in_(sorted(touched)))
                .group_by(HubRefund.order_id)
            )
        ).all()
    )
    totals = dict(
        (
            await session.execute(
                select(HubOrder.id, HubOrder.total_fen).where(
                    HubOrder.id.in_(sorted(refunded)), HubOrder.status == "paid"
                )
            )
        ).all()
    )
    full = {order_id for order_id, total in totals.items() if int(refunded[order_id] or 0) >= total}
    await _return_for_orders(session, full, "order fully refunded")
