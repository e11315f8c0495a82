"""Orders as pure data: the `Order` document and the rules that change it.

Every function here takes an order and returns a new one (or raises `TillError` and
changes nothing); the till persists the result. Keeping the rules free of I/O makes
them testable to the fen and keeps the journal transaction short.
"""

from __future__ import annotations

from datetime import date, datetime
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.errors import TillError
from protocol import UtcDatetime
from protocol.pricing import (
    Counted,
    MemberPricing,
    PriceLine,
    Quantity,
    line_refund_fen,
    price_cart,
    refund_split,
)
from protocol.promotion_rules import AppliedRule, Gift, LineAllocation, Rule

__all__ = [
    "MAX_QTY",
    "Order",
    "OrderLine",
    "OrderMember",
    "OrderStatus",
    "Refund",
    "RefundLine",
    "Tender",
    "TenderMethod",
    "add_line",
    "apply_payment",
    "plan_refund",
    "reprice",
]

MAX_QTY = Fraction(9999)
OrderStatus = Literal["open", "held", "paid", "voided"]
TenderMethod = Literal["cash", "wechat", "alipay", "unionpay", "stored_value", "points"]
METHOD_NAMES = {
    "cash": "现金",
    "wechat": "微信支付",
    "alipay": "支付宝",
    "unionpay": "银联卡",
    "stored_value": "会员储值",
    "points": "积分抵现",
}
# Paid from the member's account at the hub: the till takes them only through the hub's RPC.
MEMBER_METHODS = frozenset({"stored_value", "points"})


class _Doc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OrderLine(_Doc):
    """One line; prices are per piece or per kg, totals in fen."""

    line_id: str
    sku: str
    name: str
    unit: Literal["piece", "kg"] = "piece"
    qty: Quantity
    barcode: str | None = None
    note: str = ""
    list_price_fen: int
    store_price_fen: int | None = None
    member_price_fen: int | None = None
    override_price_fen: int | None = None
    override_by: str | None = None
    label_price_fen: int | None = None
    unit_price_fen: int = 0
    total_fen: int = 0
    price_source: str = "list"
    explanation: str = ""
    refunded_qty: Counted = Fraction(0)
    refunded_fen: int = 0
    expires_on: date | None = None  # from a scanned GS1 code's (17): near-expiry promotions read it
    # total_fen is after promotions (what the line is paid and refunded at); each rule's share:
    promo_discount_fen: int = 0
    promotions: list[LineAllocation] = Field(default_factory=list)


class Tender(_Doc):
    """A payment applied to the order; for cash, what was handed over and the change."""

    index: int
    method: TenderMethod
    amount_fen: int
    tendered_fen: int
    change_fen: int = 0
    reference: str | None = None
    ts: UtcDatetime
    staff_id: str
    refunded_fen: int = 0


class RefundLine(_Doc):
    """Part of a line given back."""

    line_id: str
    qty: Quantity
    amount_fen: int


class Refund(_Doc):
    """A refund of a paid order, back to its original tenders."""

    id: str
    ts: UtcDatetime
    staff_id: str
    reason: str
    lines: list[RefundLine]
    tenders: dict[int, int]
    total_fen: int


class OrderMember(_Doc):
    """The member attached to an order, as the hub described them at lookup.

    The level's benefits price the order (`MemberPricing`); points and the stored-value
    balance are what the member had at lookup, for the cashier's screen (the hub checks
    the real balance on every debit).
    """

    id: str
    phone_masked: str = ""
    name: str = ""
    level: str | None = None
    level_name: str = ""
    segments: list[str] = Field(default_factory=list)  # RFM segment and tags, for promotions
    promotion_uses_today: dict[str, int] = Field(default_factory=dict)  # rule id -> orders today
    discount_bp: int = Field(10_000, ge=1, le=10_000)
    member_prices: bool = False
    points: int = 0
    stored_value_fen: int = 0
    looked_up_at: UtcDatetime

    @property
    def pricing(self) -> MemberPricing:
        """The level's benefits as the pricing function takes them."""
        return MemberPricing(
            level=self.level_name or self.level or "",
            discount_bp=self.discount_bp,
            member_prices=self.member_prices,
        )


class Order(_Doc):
    """A till order from opening to paid (or voided), plus its refunds."""

    id: str
    store: str
    number: int
    business_day: date
    status: OrderStatus = "open"
    opened_at: UtcDatetime
    opened_by: str
    closed_at: UtcDatetime | None = None
    shift_id: str | None = None
    note: str = ""
    member_id: str | None = None
    member: OrderMember | None = None
    lines: list[OrderLine] = Field(default_factory=list)
    subtotal_fen: int = 0
    discount_fen: int = 0
    total_fen: int = 0
    tenders: list[Tender] = Field(default_factory=list)
    refunds: list[Refund] = Field(default_factory=list)
    void_reason: str | None = None
    voided_by: str | None = None
    version: int = 1
    # subtotal_fen is before promotions, discount_fen what they took, total_fen what is due.
    coupons: list[Rule] = Field(default_factory=list)
    promotions: list[AppliedRule] = Field(default_factory=list)
    gifts: list[Gift] = Field(default_factory=list)
    promotions_version: int | None = None

    @property
    def paid_fen(self) -> int:
        """Sum applied by all tenders."""
        return sum(t.amount_fen for t in self.tenders)

    @property
    def due_fen(self) -> int:
        """What the customer still owes."""
        return self.total_fen - self.paid_fen

    @property
    def refunded_fen(self) -> int:
        """Sum of all refunds."""
        return sum(r.total_fen for r in self.refunds)

    def line(self, line_id: str) -> OrderLine:
        """The line with this id, or a 404-style `TillError`."""
        for line in self.lines:
            if line.line_id == line_id:
                return line
        raise TillError(f"order {self.number:04d} has no line {line_id}", status=404)

    def require_editable(self) -> None:
        """Refuse changes to lines once paying started or the order is closed."""
        if self.status != "open":
            raise TillError(f"order {self.number:04d} is {self.status}; it cannot be changed")
        if self.tenders:
            raise TillError(f"order {self.number:04d} is partly paid; lines cannot change now", status=409)


def check_qty(qty: Fraction, unit: str = "kg") -> Fraction:
    """Refuse zero, negative, absurd and (for pieces) fractional quantities."""
    if unit == "piece" and qty.denominator != 1:
        raise TillError(f"quantity {qty} is not a whole number of pieces", status=422)
    if qty <= 0:
        raise TillError(f"quantity must be above 0, got {qty}", status=422)
    if qty > MAX_QTY:
        raise TillError(f"quantity {qty} is above the limit of {MAX_QTY}", status=422)
    return qty


def reprice(order: Order) -> Order:
    """Recompute every line and the totals through the one pricing function.

    Promotions are cleared (the till runs the engine on the result again, see
    edge.promotions); coupons presented stay on the order.
    """
    cart = price_cart(
        [
            PriceLine(
                line_id=line.line_id,
                sku=line.sku,
                qty=line.qty,
                list_price_fen=line.list_price_fen,
                store_price_fen=line.store_price_fen,
                member_price_fen=line.member_price_fen,
                override_price_fen=line.override_price_fen,
                fixed_total_fen=line.label_price_fen,
            )
            for line in order.lines
        ],
        order.member.pricing if order.member is not None else None,
    )
    priced = {p.line_id: p for p in cart.lines}
    lines = [
        line.model_copy(
            update={
                "unit_price_fen": priced[line.line_id].unit_price_fen,
                "total_fen": priced[line.line_id].total_fen,
                "price_source": priced[line.line_id].price_source,
                "explanation": priced[line.line_id].explanation,
                "promo_discount_fen": 0,
                "promotions": [],
            }
        )
        for line in order.lines
    ]
    return order.model_copy(
        update={
            "lines": lines,
            "subtotal_fen": cart.subtotal_fen,
            "discount_fen": cart.discount_fen,
            "total_fen": cart.total_fen,
            "promotions": [],
            "gifts": [],
            "promotions_version": None,
        }
    )


def add_line(order: Order, line: OrderLine) -> Order:
    """Add a line, merging with an identical plain line (same sku, no label, no override)."""
    order.require_editable()
    if line.label_price_fen is None:  # a label's weight is informational, whatever it is
        check_qty(line.qty, line.unit)
    mergeable = line.label_price_fen is None and line.unit == "piece" and not line.note
    if mergeable:
        for existing in order.lines:
            same = (
                existing.sku == line.sku
                and existing.expires_on == line.expires_on
                and existing.label_price_fen is None
                and existing.override_price_fen is None
                and existing.unit == "piece"
                and not existing.note
            )
            if same:
                merged = existing.model_copy(update={"qty": check_qty(existing.qty + line.qty, line.unit)})
                lines = [merged if x is existing else x for x in order.lines]
                return reprice(order.model_copy(update={"lines": lines}))
    return reprice(order.model_copy(update={"lines": [*order.lines, line]}))


def apply_payment(
    order: Order,
    *,
    method: TenderMethod,
    amount_fen: int,
    reference: str | None,
    staff_id: str,
    now: datetime,
) -> Order:
    """Apply a tender; cash may exceed what is due (change), other methods may not."""
    if order.status != "open":
        raise TillError(f"order {order.number:04d} is {order.status}; it cannot take payments")
    if not order.lines:
        raise TillError(f"order {order.number:04d} has no lines to pay for", status=422)
    if amount_fen <= 0:
        raise TillError("amount_fen must be above 0", status=422)
    due = order.due_fen
    if method == "cash":
        applied, change = min(amount_fen, due), max(0, amount_fen - due)
    else:
        if amount_fen > due:
            raise TillError(
                f"{METHOD_NAMES[method]} amount {amount_fen} fen is more than the {due} fen due; "
                "only cash can be overpaid",
                status=422,
            )
        if not reference:
            raise TillError(f"{METHOD_NAMES[method]} needs the payment reference", status=422)
        applied, change = amount_fen, 0
    tender = Tender(
        index=len(order.tenders),
        method=method,
        amount_fen=applied,
        tendered_fen=amount_fen,
        change_fen=change,
        reference=reference,
        ts=now,
        staff_id=staff_id,
    )
    paid = order.model_copy(update={"tenders": [*order.tenders, tender]})
    if paid.due_fen == 0:
        paid = paid.model_copy(update={"status": "paid", "closed_at": now})
    return paid


def plan_refund(
    order: Order,
    wanted: list[tuple[str, Fraction]] | None,
    *,
    refund_id: str,
    reason: str,
    staff_id: str,
    now: datetime,
) -> Order:
    """Refund chosen line quantities (or everything left), back to the original tenders.

    Amounts come from `line_refund_fen` (cumulative, so partial refunds of a line add up
    to its total exactly) and are spread over tenders with `refund_split`.
    """
    if order.status != "paid":
        raise TillError(f"order {order.number:04d} is {order.status}; only paid orders refund")
    if not reason.strip():
        raise TillError("a refund needs a reason", status=422)
    if wanted is None:
        wanted = [(x.line_id, x.qty - x.refunded_qty) for x in order.lines if x.qty > x.refunded_qty]
    if not wanted:
        raise TillError(f"order {order.number:04d} is already fully refunded", status=409)
    updated = {x.line_id: x for x in order.lines}
    refund_lines: list[RefundLine] = []
    for line_id, qty in wanted:
        line = updated.get(line_id) or order.line(line_id)
        left = line.qty - line.refunded_qty
        if qty <= 0 or qty > left:
            raise TillError(f"line {line.name}: cannot refund {qty}, only {left} left to refund", status=422)
        amount = line_refund_fen(line.total_fen, line.qty, qty, line.refunded_fen, line.refunded_qty)
        refund_lines.append(RefundLine(line_id=line_id, qty=qty, amount_fen=amount))
        updated[line_id] = line.model_copy(
            update={
                "refunded_qty": line.refunded_qty + qty,
                "refunded_fen": line.refunded_fen + amount,
            }
        )
    total = sum(r.amount_fen for r in refund_lines)
    remaining = [t.amount_fen - t.refunded_fen for t in order.tenders]
    split = refund_split(sum(remaining), remaining, total)
    tenders = [
        t.model_copy(update={"refunded_fen": t.refunded_fen + part})
        for t, part in zip(order.tenders, split, strict=True)
    ]
    refund = Refund(
        id=refund_id,
        ts=now,
        staff_id=staff_id,
        reason=reason.strip(),
        lines=refund_lines,
        tenders={t.index: part for t, part in zip(order.tenders, split, strict=True) if part},
        total_fen=total,
    )
    return order.model_copy(
        update={
            "lines": [updated[x.line_id] for x in order.lines],
            "tenders": tenders,
            "refunds": [*order.refunds, refund],
        }
    )
