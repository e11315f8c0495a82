"""Promotions at the till: the snapshot applied and kept, the engine on every change at the
till's own clock (also with no hub), exact refunds of promoted lines, coupons, receipts."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import edge.till as till_module
from drivers.escpos import PrinterProfile, encode
from drivers.escpos_decode import PrintedLine, decode_escpos
from drivers.layout import display_width
from edge.access import StaffMember
from edge.daemon import EdgeDaemon
from edge.errors import TillError
from edge.orders import Order, OrderLine, OrderMember, add_line, apply_payment
from edge.printing import sales_receipt
from edge.promotions import TillPromotions, apply_promotions
from edge.receipt import receipt
from protocol import Snapshot, SnapshotKind, new_id, utcnow
from protocol.promotion_rules import PercentOffRule, RuleSet
from tests.edge.conftest import Api, edge_settings

SHANGHAI = ZoneInfo("Asia/Shanghai")
EVENING_DRINKS = {
    "kind": "percent_off",
    "id": "evening-drinks",
    "name": "晚市饮料7折",
    "off_bp": 3000,
    "scope": {"categories": ["饮料"]},
    "window": {"hours": [{"start": "20:00", "end": "00:00"}]},
}
MJ_8_1 = {
    "kind": "threshold",
    "id": "mj",
    "name": "饮料满8减1",
    "threshold_fen": 800,
    "amount_fen": 100,
    "scope": {"categories": ["饮料"]},
}


def _snapshot(version: int, rules: list[dict[str, Any]]) -> Snapshot:
    return Snapshot(
        kind=SnapshotKind.PROMOTIONS, version=version, ts=datetime.now(UTC), body={"rules": rules}
    )


def _line(sku: str, name: str, qty: int, price: int) -> OrderLine:
    return OrderLine(line_id=str(new_id()), sku=sku, name=name, qty=Fraction(qty), list_price_fen=price)


def _staff(daemon: EdgeDaemon, staff_id: str = "c1") -> StaffMember:
    staff = daemon.snapshots.staff.get(staff_id)
    assert staff is not None
    return staff


async def test_a_rule_starting_at_20_applies_at_a_till_offline_since_19(
    tmp_path: Path, seeded_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("catalog.json", "staff.json"):
        (tmp_path / name).write_bytes((seeded_state / name).read_bytes())
    clock = {"now": datetime(2026, 11, 24, 11, 0, tzinfo=UTC)}  # 19:00 in Shanghai
    monkeypatch.setattr(till_module, "_now", lambda: clock["now"])
    # No broker listens on the configured port: this till never reaches a hub.
    async with EdgeDaemon(edge_settings(tmp_path)) as daemon:
        assert await daemon.snapshots.apply(_snapshot(3, [EVENING_DRINKS]))
        clock["now"] = datetime(2026, 11, 24, 11, 30, tzinfo=UTC)  # 19:30
        staff = _staff(daemon)
        order_id = (await daemon.till.open_order(staff, idem=None)).body["order"]["id"]
        cola = _line("DRK-002", "可口可乐330ml", 2, 300)
        await daemon.till.add_line(order_id, cola, None)
        await daemon.till.add_line(order_id, _line("SNK-001", "乐事原味薯片70g", 1, 750), None)
        before = await daemon.till.get_order(order_id)
        assert (before.total_fen, before.discount_fen, before.promotions) == (1350, 0, [])

    # The Pi restarts (the snapshot comes back from disk) and the clock passes 20:00.
    clock["now"] = datetime(2026, 11, 24, 12, 1, tzinfo=UTC)  # 20:01
    async with EdgeDaemon(edge_settings(tmp_path)) as daemon:
        assert daemon.snapshots.promotions.version == 3
        await daemon.till.update_line(order_id, cola.line_id, _staff(daemon), qty=Fraction(3), idem=None)
        after = await daemon.till.get_order(order_id)
    # 3 cola 900 → 30 % off → 630; the chips are not a drink
    assert [line.total_fen for line in after.lines] == [630, 750]
    assert (after.subtotal_fen, after.discount_fen, after.total_fen) == (1650, 270, 1380)
    assert [(a.rule_id, a.amount_fen) for a in after.lines[0].promotions] == [("evening-drinks", 270)]
    assert after.promotions_version == 3
    assert [(p.name, p.saving_fen) for p in after.promotions] == [("晚市饮料7折", 270)]


async def test_refunds_of_a_promoted_order_add_up_to_what_was_paid(api: Api) -> None:
    daemon = api.daemon
    assert await daemon.snapshots.apply(_snapshot(1, [MJ_8_1]))
    status, body = await api.call("POST", "/api/v1/shifts", {"float_fen": 10_000})
    assert status == 201, body
    order = await api.open_order()
    await api.add(order["id"], sku="DRK-002", qty="3")  # 900 ≥ 800 → 100 off
    priced = await api.add(order["id"], sku="DRK-001", qty="1")
    assert priced["discount_fen"] == 100
    paid = await api.pay(order["id"], "cash", priced["total_fen"])
    assert paid["status"] == "paid"
    line_totals = [line["total_fen"] for line in paid["lines"]]
    assert sum(line_totals) == paid["total_fen"]
    cola = next(line for line in paid["lines"] if line["sku"] == "DRK-002")
    staff = _staff(daemon, "mgr")
    one = await daemon.till.refund(
        order["id"], staff, lines=[(cola["line_id"], Fraction(1))], reason="坏了", idem=None
    )
    rest = await daemon.till.refund(order["id"], staff, lines=None, reason="不要了", idem=None)
    refunds = [r["total_fen"] for r in rest.body["order"]["refunds"]]
    assert one.status == 201
    assert refunds[0] == round(cola["total_fen"] / 3)
    assert sum(refunds) == paid["total_fen"]


async def test_coupon_attach_remove_and_no_coupon_on_a_paid_order(api: Api) -> None:
    daemon = api.daemon
    assert await daemon.snapshots.apply(_snapshot(1, [MJ_8_1]))
    order = await api.open_order()
    await api.add(order["id"], sku="DRK-002", qty="3")  # 900 → 满8减1 → 800
    coupon = PercentOffRule(
        id="coupon:t1", name="九折券", code="CPN-1", off_bp=1000, priority=-1000, group="coupons"
    )
    reply = await daemon.till.attach_coupon(order["id"], coupon, None)
    with_coupon = reply.body["order"]
    # the coupon computes on what the promotion left: 10 % of 800 = 80
    assert (with_coupon["discount_fen"], with_coupon["total_fen"]) == (180, 720)
    assert [c["code"] for c in with_coupon["coupons"]] == ["CPN-1"]
    again = (await daemon.till.attach_coupon(order["id"], coupon, None)).body["order"]
    assert (again["total_fen"], len(again["coupons"])) == (720, 1)
    removed = (await daemon.till.remove_coupon(order["id"], "CPN-1", None)).body["order"]
    assert (removed["total_fen"], removed["coupons"]) == (800, [])
    with pytest.raises(TillError, match="no coupon CPN-9"):
        await daemon.till.remove_coupon(order["id"], "CPN-9", None)
    status, body = await api.call("POST", "/api/v1/shifts", {"float_fen": 0})
    assert status == 201, body
    await api.pay(order["id"], "cash", 800)
    with pytest.raises(TillError, match="is paid"):
        await daemon.till.attach_coupon(order["id"], coupon, None)
    stored = await daemon.till.get_order(order["id"])
    assert (stored.total_fen, stored.coupons) == (800, [])


async def test_an_unusable_snapshot_is_refused_and_the_current_one_kept(api: Api) -> None:
    snapshots = api.daemon.snapshots
    assert await snapshots.apply(_snapshot(1, [MJ_8_1]))
    bad = {**EVENING_DRINKS, "off_bp": 12_000}
    assert not await snapshots.apply(_snapshot(2, [bad]))
    clash = [
        {**EVENING_DRINKS, "id": "a", "stackable": False},
        {**EVENING_DRINKS, "id": "b", "stackable": False},
    ]
    assert not await snapshots.apply(_snapshot(3, clash))
    assert (snapshots.promotions.version, [r.id for r in snapshots.promotions.rules]) == (1, ["mj"])
    assert snapshots.applied.versions["promotions"] == 1


async def test_reevaluating_on_every_change_never_piles_up_gifts_or_discounts(api: Api) -> None:
    gift = {
        "kind": "gift",
        "id": "tote",
        "name": "满5送袋",
        "threshold_fen": 500,
        "gift_sku": "BAG-1",
        "gift_name": "环保袋",
    }
    assert await api.daemon.snapshots.apply(_snapshot(1, [MJ_8_1, gift]))
    order = await api.open_order()
    await api.add(order["id"], sku="DRK-002", qty="3")
    first = await api.daemon.till.get_order(order["id"])
    for note in ("a", "b", "c"):
        status, _ = await api.call("PATCH", f"/api/v1/orders/{order['id']}", {"note": note})
        assert status == 200
    again = await api.daemon.till.get_order(order["id"])
    assert len(again.lines) == len(first.lines) == 1
    assert [(g.name, g.qty) for g in again.gifts] == [("环保袋", 1)]
    assert (again.discount_fen, again.total_fen) == (first.discount_fen, first.total_fen) == (100, 800)


GB58 = PrinterProfile("front-58", paper_mm=58)
GB80 = PrinterProfile("front-80", paper_mm=80)
CUP_RULES = RuleSet.model_validate(
    {
        "version": 5,
        "rules": [
            {
                "kind": "nth_item",
                "id": "cola2",
                "name": "可乐第二件半价",
                "n": 2,
                "off_bp": 5000,
                "scope": {"skus": ["cola"]},
            },
            {
                "kind": "threshold",
                "id": "mj",
                "name": "满100减10",
                "threshold_fen": 10000,
                "amount_fen": 1000,
            },
            {
                "kind": "gift",
                "id": "g",
                "name": "满100送袋",
                "threshold_fen": 9000,
                "gift_sku": "bag",
                "gift_name": "环保袋",
            },
        ],
    }
)


def _printed(profile: PrinterProfile, document: Any) -> list[PrintedLine]:
    return [r for r in decode_escpos(encode(document, profile), profile.encoding).records if r.kind == "text"]


@pytest.mark.parametrize("profile", [GB58, GB80], ids=lambda p: p.name)
def test_receipt_names_each_promotion_its_saving_and_the_total_saved(profile: PrinterProfile) -> None:
    opened = datetime(2026, 11, 24, 4, 30, tzinfo=UTC)
    order = Order(
        id="o1", store="s-1", number=7, business_day=date(2026, 11, 24), opened_at=opened, opened_by="c1"
    )
    order = add_line(order, _line("rice", "五常稻花香大米5kg", 1, 9900))
    order = add_line(order, _line("cola", "可口可乐330ml", 2, 460))
    order = apply_promotions(order, TillPromotions(lambda: CUP_RULES, lambda: None), opened, SHANGHAI)
    # cola 920 − 230 (second half price) = 690; 9900 + 690 = 10590 ≥ 100.00 → −10.00
    assert (order.subtotal_fen, order.discount_fen, order.total_fen) == (10820, 1230, 9590)
    order = apply_payment(order, method="cash", amount_fen=10_000, reference=None, staff_id="c1", now=opened)
    data = receipt(order, store_name="好邻居便利店", zone=SHANGHAI)
    assert data["saved_text"] == "您共节省 ¥12.30"
    assert [(p["name"], p["saving_fen"]) for p in data["promotions"]] == [
        ("可乐第二件半价", 230),
        ("满100减10", 1000),
    ]
    printed = _printed(profile, sales_receipt(data, paper=profile))
    texts = [r.text.replace("￥", "¥") for r in printed]  # a GB18030 printer has the full-width sign
    assert any(t.startswith("满100减10") and t.endswith("-¥10.00") for t in texts)
    assert any(t.startswith("可乐第二件半价") and t.endswith("-¥2.30") for t in texts)
    assert any("环保袋" in t and t.endswith("×1") for t in texts)
    assert any(t.strip() == "您共节省 ¥12.30" for t in texts)
    cells = [display_width(r.text, ambiguous_wide=True, wide_non_ascii=True) * r.width for r in printed]
    assert max(cells) <= profile.columns
    money = [c for t, c in zip(texts, cells, strict=True) if t.endswith(("-¥10.00", "-¥2.30"))]
    assert len(money) == 3  # the half-price cola on its line, then each rule's saving in the totals
    assert all(c == profile.columns for c in money)  # amounts end at the right edge


def _member(member_id: str, **extra: Any) -> OrderMember:
    return OrderMember.model_validate(
        {"id": member_id, "level": "gold", "level_name": "金卡", "looked_up_at": utcnow()} | extra
    )


async def test_a_gs1_expiry_date_marks_the_scanned_line_down(api: Api) -> None:
    tiers = [{"within_days": 1, "off_bp": 5000}, {"within_days": 3, "off_bp": 2000}]
    rule = {"kind": "near_expiry", "id": "expiry", "name": "临期折扣", "tiers": tiers}
    assert await api.daemon.snapshots.apply(_snapshot(1, [rule]))
    today = datetime.now(SHANGHAI).date()
    order = await api.open_order()

    def gs1(days: int) -> str:
        return f"(01)06954767410388(17){today + timedelta(days=days):%y%m%d}(10)B42"  # cola, ¥3.00

    await api.add(order["id"], barcode=gs1(2))
    await api.add(order["id"], barcode=gs1(30))
    sold = await api.add(order["id"], barcode=gs1(2))
    # the two near ones share a line (same expiry), the fresh one stays apart at full price
    lines = [(x["qty"], x["expires_on"], x["total_fen"]) for x in sold["lines"]]
    assert lines == [
        ("2", (today + timedelta(days=2)).isoformat(), 480),
        ("1", (today + timedelta(days=30)).isoformat(), 300),
    ]
    assert sold["lines"][0]["promotions"][0]["name"] == "临期折扣"


async def test_a_daily_cap_per_member_counts_todays_orders_here_and_at_the_hub(api: Api) -> None:
    daily = {
        "kind": "percent_off",
        "id": "daily",
        "name": "会员每日一次9折",
        "off_bp": 1000,
        "members_only": True,
        "per_member_daily_limit": 1,
    }
    assert await api.daemon.snapshots.apply(_snapshot(1, [daily]))
    status, body = await api.call("POST", "/api/v1/shifts", {"float_fen": 0})
    assert status == 201, body
    till = api.daemon.till

    async def sale(member: OrderMember, pay: bool) -> dict[str, Any]:
        order = await api.open_order()
        await api.add(order["id"], sku="DRK-002", qty="1")
        priced = (await till.set_member(order["id"], member, None)).body["order"]
        if pay:
            await api.pay(order["id"], "cash", priced["total_fen"])
        return priced

    assert (await sale(_member("m-1"), pay=True))["total_fen"] == 270
    assert (await sale(_member("m-1"), pay=False))["total_fen"] == 300  # used once today already
    assert (await sale(_member("m-2"), pay=False))["total_fen"] == 270
    used_elsewhere = _member("m-3", promotion_uses_today={"daily": 1})  # the hub counted another store's
    assert (await sale(used_elsewhere, pay=False))["total_fen"] == 300


async def test_segment_promotions_follow_the_members_segments(api: Api) -> None:
    vip = {"kind": "percent_off", "id": "vip", "name": "VIP 8折", "off_bp": 2000, "member_segments": ["vip"]}
    assert await api.daemon.snapshots.apply(_snapshot(1, [vip]))
    totals = []
    for member in (_member("m-1", segments=["vip", "coffee-lover"]), _member("m-2", segments=["new"])):
        order = await api.open_order()
        await api.add(order["id"], sku="DRK-002", qty="1")
        totals.append(
            (await api.daemon.till.set_member(order["id"], member, None)).body["order"]["total_fen"]
        )
    assert totals == [240, 300]
