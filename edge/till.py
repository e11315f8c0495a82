"""The till: every order, payment, refund and shift action as one journal transaction.

A command looks up what it needs in memory (catalog, staff) on the event loop, then runs
one transaction on the journal thread that loads the order, applies a pure rule from
`edge.orders`, saves the order, appends outbox events and stores the reply under the
request's idempotency key. A refused command raises `TillError` inside the transaction,
so it rolls back and nothing is written. A retried request with the same key gets the
stored reply and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from edge.access import PERMISSIONS, StaffMember
from edge.config import EdgeSettings
from edge.errors import TillError
from edge.events import Event, EventBus
from edge.journal import Journal, append_event
from edge.orders import (
    Order,
    OrderLine,
    OrderMember,
    TenderMethod,
    add_line,
    apply_payment,
    check_qty,
    plan_refund,
    reprice,
)
from edge.promotions import (
    TillPromotions,
    apply_promotions,
    attach_coupon,
    detach_coupon,
    member_uses_today,
    needs_member_uses,
)
from edge.shifts import Shift, add_to, load_open_shift, save_shift
from edge.stock_tasks import refuse_blocked
from protocol import business_day, new_id
from protocol.promotion_rules import Rule

__all__ = [
    "OFFLINE_PREFIX",
    "Change",
    "Idempotency",
    "QueuePrint",
    "Reply",
    "Till",
    "load_order",
    "new_order",
    "save_order",
    "write_audit",
]


@dataclass(frozen=True)
class Idempotency:
    """A request's `Idempotency-Key` (scoped to the device) and a hash of the request."""

    key: str
    request_hash: str

    @classmethod
    def of(cls, device_id: str, key: str, method: str, path: str, body: bytes) -> Idempotency:
        """Scope the key to the device and fingerprint the request it came with."""
        digest = hashlib.sha256(f"{method} {path}\n".encode() + body).hexdigest()
        return cls(key=f"{device_id}:{key}", request_hash=digest)


# (connection inside the transaction, printer role, job kind, order id) -> job id or None
QueuePrint = Callable[[sqlite3.Connection, str, str, str | None], str | None]


@dataclass(frozen=True)
class Change:
    """One order change inside its transaction; `doc` is the JSON just saved (reused for events)."""

    before: Order
    order: Order
    doc: str
    now: datetime


@dataclass(frozen=True)
class Reply:
    """What the API answers: HTTP status and JSON body."""

    status: int
    body: dict[str, Any]


def _now() -> datetime:
    return datetime.now(UTC)


def load_order(conn: sqlite3.Connection, order_id: str) -> Order:
    row = conn.execute("SELECT doc FROM orders WHERE id = ?", (order_id,)).fetchone()
    if row is None:
        raise TillError(f"no order {order_id}", status=404)
    return Order.model_validate_json(row[0])


def _save_order(conn: sqlite3.Connection, order: Order, now: datetime) -> str:
    """Upsert the order row; return the JSON written (reused as the outbox body)."""
    doc = order.model_dump_json()
    conn.execute(
        "INSERT INTO orders (id, number, business_day, status, doc, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET status = excluded.status, doc = excluded.doc,"
        " updated_at = excluded.updated_at",
        (
            order.id,
            order.number,
            order.business_day.isoformat(),
            order.status,
            doc,
            now.isoformat(),
        ),
    )
    return doc


def write_audit(
    conn: sqlite3.Connection, staff_id: str, action: str, order_id: str | None, detail: str
) -> None:
    """Record who did what, in the caller's transaction."""
    conn.execute(
        "INSERT INTO audit (ts, staff_id, action, order_id, detail) VALUES (?, ?, ?, ?, ?)",
        (_now().isoformat(), staff_id, action, order_id, detail),
    )


def save_order(conn: sqlite3.Connection, order: Order, now: datetime) -> str:
    """Save an order another part changed (tables: splits, merges) in the caller's transaction."""
    return _save_order(conn, order, now)


def new_order(
    conn: sqlite3.Connection, settings: EdgeSettings, staff_id: str, now: datetime, *, note: str = ""
) -> Order:
    """Number (per business day) and save a new open order in the caller's transaction."""
    day = business_day(now, ZoneInfo(settings.timezone), settings.cutover_hour)
    number = conn.execute(
        "INSERT INTO day_counters (business_day, last_number) VALUES (?, 1)"
        " ON CONFLICT (business_day) DO UPDATE SET last_number = last_number + 1"
        " RETURNING last_number",
        (day.isoformat(),),
    ).fetchone()[0]
    order = Order(
        id=str(new_id()),
        store=settings.store,
        number=number,
        business_day=day,
        opened_at=now,
        opened_by=staff_id,
        note=note,
    )
    _save_order(conn, order, now)
    return order


OFFLINE_PREFIX = "offline:"  # reference of a stored-value tender taken while the hub was away
OFFLINE_WINDOW = timedelta(days=2)  # how far back offline payments count against the allowance


class Till:
    """Order, payment, refund and shift commands over the journal."""

    def __init__(
        self,
        settings: EdgeSettings,
        journal: Journal,
        bus: EventBus,
        *,
        on_outbox: Callable[[], None] | None = None,
        queue_print: QueuePrint | None = None,
        promotions: TillPromotions | None = None,
    ):
        self._settings = settings
        self._promotions = promotions
        self._journal = journal
        self._bus = bus
        self._on_outbox = on_outbox
        self._queue_print = queue_print
        self._zone = ZoneInfo(settings.timezone)

    # ------------------------------------------------------------------ plumbing

    async def _run(
        self,
        work: Callable[[sqlite3.Connection], Reply],
        idem: Idempotency | None,
        *,
        durable: bool = False,
    ) -> Reply:
        def tx(conn: sqlite3.Connection) -> tuple[Reply, bool]:
            if idem is not None:
                row = conn.execute(
                    "SELECT request_hash, status, response FROM idempotency WHERE key = ?", (idem.key,)
                ).fetchone()
                if row is not None:
                    if row[0] != idem.request_hash:
                        raise TillError(
                            "this Idempotency-Key was already used for a different request", status=422
                        )
                    return Reply(row[1], json.loads(row[2])), True
            reply = work(conn)
            if idem is not None:
                conn.execute(
                    "INSERT INTO idempotency (key, request_hash, status, response, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (idem.key, idem.request_hash, reply.status, json.dumps(reply.body), _now().isoformat()),
                )
            return reply, False

        reply, replayed = await self._journal.transaction(tx, durable=durable)
        if durable and not replayed and self._on_outbox is not None:
            self._on_outbox()  # durable commands are the ones that append outbox events
        if not replayed and "order" in reply.body:
            order = reply.body["order"]
            self._bus.publish(Event("order.updated", order, order_id=order["id"]))
        return reply

    async def _change(
        self,
        order_id: str,
        rule: Callable[[sqlite3.Connection, Order, datetime], Order],
        idem: Idempotency | None,
        *,
        after: Callable[[sqlite3.Connection, Change], None] | None = None,
        status: int = 200,
        durable: bool = False,
    ) -> Reply:
        def work(conn: sqlite3.Connection) -> Reply:
            now = _now()
            before = load_order(conn, order_id)
            order = rule(conn, before, now)
            if self._promotions is not None and order.status in ("open", "held") and not order.tenders:
                # Every change re-evaluates at the till's own time: a rule that started since applies.
                uses = self._member_uses(conn, order) if needs_member_uses(order, self._promotions) else {}
                order = apply_promotions(order, self._promotions, now, self._zone, uses)
            order = order.model_copy(update={"version": before.version + 1})
            doc = _save_order(conn, order, now)
            if after is not None:
                after(conn, Change(before, order, doc, now))
            return Reply(status, {"order": order.model_dump(mode="json")})

        return await self._run(work, idem, durable=durable)

    async def change(
        self,
        order_id: str,
        rule: Callable[[sqlite3.Connection, Order, datetime], Order],
        idem: Idempotency | None,
        *,
        after: Callable[[sqlite3.Connection, Change], None] | None = None,
        status: int = 200,
        durable: bool = False,
    ) -> Reply:
        """Run another part's order change (tables: rounds, merges) exactly as the till's own run."""
        return await self._change(order_id, rule, idem, after=after, status=status, durable=durable)

    @staticmethod
    def _member_uses(conn: sqlite3.Connection, order: Order) -> dict[str, int]:
        """The member's promotion uses today: this till's paid orders of the business day."""
        rows = conn.execute(
            "SELECT doc FROM orders WHERE business_day = ? AND status = 'paid'"
            " AND json_extract(doc, '$.member_id') = ?",
            (order.business_day.isoformat(), order.member_id),
        )
        return member_uses_today(order, [Order.model_validate_json(row[0]) for row in rows])

    async def command(self, work: Callable[[sqlite3.Connection], Reply], idem: Idempotency | None) -> Reply:
        """Run another part's command (kitchen, queue) as one transaction with the till's idempotency."""
        return await self._run(work, idem)

    # ------------------------------------------------------------------ reads

    async def get_order(self, order_id: str) -> Order:
        """One order (404 `TillError` if unknown)."""
        return await self._journal.read(lambda conn: load_order(conn, order_id))

    async def list_orders(self, status: str | None, limit: int = 50) -> list[Order]:
        """Newest orders first, optionally by status."""

        def work(conn: sqlite3.Connection) -> list[Order]:
            if status is None:
                rows = conn.execute(
                    "SELECT doc FROM orders ORDER BY business_day DESC, number DESC LIMIT ?", (limit,)
                )
            else:
                rows = conn.execute(
                    "SELECT doc FROM orders WHERE status = ? ORDER BY business_day DESC, number DESC LIMIT ?",
                    (status, limit),
                )
            return [Order.model_validate_json(r[0]) for r in rows]

        return await self._journal.read(work)

    async def current_shift(self) -> Shift | None:
        """The open shift, if any."""
        return await self._journal.read(load_open_shift)

    async def stored_reply(self, idem: Idempotency | None) -> Reply | None:
        """The reply already given to this request, if any (before asking the hub again)."""
        if idem is None:
            return None

        def work(conn: sqlite3.Connection) -> Reply | None:
            row = conn.execute(
                "SELECT request_hash, status, response FROM idempotency WHERE key = ?", (idem.key,)
            ).fetchone()
            if row is None:
                return None
            if row[0] != idem.request_hash:
                raise TillError("this Idempotency-Key was already used for a different request", status=422)
            return Reply(row[1], json.loads(row[2]))

        return await self._journal.read(work)

    async def offline_stored_value_fen(self, member_id: str) -> int:
        """Stored value this till took from the member offline and the hub has not confirmed yet.

        Counted from the orders still waiting in the outbox, so the offline allowance holds
        across several sales while the hub is away.
        """

        def work(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "SELECT doc FROM orders WHERE status IN ('open', 'held', 'paid') AND updated_at >= ?",
                ((_now() - OFFLINE_WINDOW).isoformat(),),
            )
            total = 0
            for (doc,) in rows:
                order = Order.model_validate_json(doc)
                if order.member_id == member_id:
                    total += sum(
                        t.amount_fen - t.refunded_fen
                        for t in order.tenders
                        if t.method == "stored_value" and (t.reference or "").startswith(OFFLINE_PREFIX)
                    )
            return total

        return await self._journal.read(work)

    # ------------------------------------------------------------------ orders

    async def open_order(
        self, staff: StaffMember, *, note: str = "", member_id: str | None = None, idem: Idempotency | None
    ) -> Reply:
        """Open an order numbered per business day (store time zone and cut-over hour)."""
        now = _now()
        day = business_day(now, self._zone, self._settings.cutover_hour)

        def work(conn: sqlite3.Connection) -> Reply:
            number = conn.execute(
                "INSERT INTO day_counters (business_day, last_number) VALUES (?, 1)"
                " ON CONFLICT (business_day) DO UPDATE SET last_number = last_number + 1"
                " RETURNING last_number",
                (day.isoformat(),),
            ).fetchone()[0]
            order = Order(
                id=str(new_id()),
                store=self._settings.store,
                number=number,
                business_day=day,
                opened_at=now,
                opened_by=staff.id,
                note=note,
                member_id=member_id,
            )
            _save_order(conn, order, now)
            return Reply(201, {"order": order.model_dump(mode="json")})

        return await self._run(work, idem)

    async def add_line(self, order_id: str, line: OrderLine, idem: Idempotency | None) -> Reply:
        """Add a priced line (built by the caller from the catalog)."""

        def rule(conn: sqlite3.Connection, order: Order, now: datetime) -> Order:
            refuse_blocked(conn, line.sku, line.name)  # head office's stock.block (expired batch, recall)
            return add_line(order, line)

        return await self._change(order_id, rule, idem, status=201)

    async def update_line(
        self,
        order_id: str,
        line_id: str,
        staff: StaffMember,
        *,
        qty: Fraction | None = None,
        note: str | None = None,
        override_price_fen: int | None = None,
        reason: str | None = None,
        idem: Idempotency | None,
    ) -> Reply:
        """Change a line's quantity, note or (with permission, audited) its unit price."""

        def rule(conn: sqlite3.Connection, order: Order, now: datetime) -> Order:
            order.require_editable()
            line = order.line(line_id)
            changes: dict[str, Any] = {}
            if qty is not None:
                if line.label_price_fen is not None:
                    raise TillError("a weighed label's quantity cannot change; scan it again", status=422)
                if line.override_price_fen is not None and staff.role not in PERMISSIONS["price.override"]:
                    raise TillError(
                        "this line has a manager's price; only a manager may change its quantity", status=403
                    )
                changes["qty"] = check_qty(qty, line.unit)
            if note is not None:
                changes["note"] = note
            if override_price_fen is not None:
                changes["override_price_fen"] = override_price_fen
                changes["override_by"] = staff.id
            updated = line.model_copy(update=changes)
            lines = [updated if x.line_id == line_id else x for x in order.lines]
            return reprice(order.model_copy(update={"lines": lines}))

        def audit(conn: sqlite3.Connection, change: Change) -> None:
            before = change.before
            if qty is not None and before.line(line_id).override_price_fen is not None:
                write_audit(conn, staff.id, "price.override.qty", order_id, f"line {line_id}: qty -> {qty}")
            if override_price_fen is not None:
                old = before.line(line_id).unit_price_fen
                write_audit(
                    conn,
                    staff.id,
                    "price.override",
                    order_id,
                    f"line {line_id}: {old} -> {override_price_fen} fen; reason: {reason}",
                )

        return await self._change(order_id, rule, idem, after=audit)

    async def remove_line(self, order_id: str, line_id: str, idem: Idempotency | None) -> Reply:
        """Remove a line from an open order."""

        def rule(conn: sqlite3.Connection, order: Order, now: datetime) -> Order:
            order.require_editable()
            order.line(line_id)
            return reprice(
                order.model_copy(update={"lines": [x for x in order.lines if x.line_id != line_id]})
            )

        return await self._change(order_id, rule, idem)

    async def annotate(
        self, order_id: str, *, note: str | None, member_id: str | None, idem: Idempotency | None
    ) -> Reply:
        """Set the order note or attach a member."""

        def rule(conn: sqlite3.Connection, order: Order, now: datetime) -> Order:
            if order.status not in ("open", "held"):
                raise TillError(f"order {order.number:04d} is {order.status}; it cannot be changed")
            changes: dict[str, Any] = {}
            if note is not None:
                changes["note"] = note
            if member_id is not None:
                if order.member is not None and order.member.id != member_id:
                    raise TillError(
                        f"order {order.number:04d} has member {order.member.phone_masked} with their prices;"
                        " remove them first (DELETE /api/v1/orders/{id}/member)",
                        status=409,
                    )
                changes["member_id"] = member_id
            return order.model_copy(update=changes)

        return await self._change(order_id, rule, idem)

    async def set_member(self, order_id: str, member: OrderMember | None, idem: Idempotency | None) -> Reply:
        """Attach a looked-up member (their level prices the order) or take them off again."""

        def rule(conn: sqlite3.Connection, order: Order, now: datetime) -> Order:
            if order.status not in ("open", "held"):
                raise TillError(f"order {order.number:04d} is {order.status}; it cannot be changed")
            if order.tenders:
                raise TillError(
                    f"order {order.number:04d} is partly paid; the member must be attached before paying",
                    status=409,
                )
            member_id = member.id if member is not None else None
            return reprice(order.model_copy(update={"member": member, "member_id": member_id}))

        return await self._change(order_id, rule, idem)

    async def attach_coupon(self, order_id: str, coupon: Rule, idem: Idempotency | None) -> Reply:
        """Put a redeemed coupon (the engine rule the hub answered, with its code) on an open order."""
        return await self._change(order_id, lambda _conn, order, _now: attach_coupon(order, coupon), idem)

    async def remove_coupon(self, order_id: str, code: str, idem: Idempotency | None) -> Reply:
        """Take a coupon off an open, unpaid order; its discount goes with it."""
        return await self._change(order_id, lambda _conn, order, _now: detach_coupon(order, code), idem)

    async def hold(self, order_id: str, hold: bool, idem: Idempotency | None) -> Reply:
        """Park an order (挂单) or take it back."""
        want_from, want_to = ("open", "held") if hold else ("held", "open")

        def rule(conn: sqlite3.Connection, order: Order, now: datetime) -> Order:
            if order.status != want_from:
                raise TillError(f"order {order.number:04d} is {order.status}, not {want_from}")
            if hold and order.tenders:
                raise TillError(f"order {order.number:04d} is partly paid; finish or refund it first")
            return order.model_copy(update={"status": want_to})

        return await self._change(order_id, rule, idem)

    async def void(self, order_id: str, staff: StaffMember, reason: str, idem: Idempotency | None) -> Reply:
        """Void an unpaid or partly paid order, with a reason; partial payments go back.

        Tenders already taken are marked returned and count as refunds in the shift, so
        the drawer and the hub both see the money leave again.
        """
        if not reason.strip():
            raise TillError("voiding needs a reason", status=422)

        def rule(conn: sqlite3.Connection, order: Order, now: datetime) -> Order:
            if order.status not in ("open", "held"):
                raise TillError(
                    f"order {order.number:04d} is {order.status}; only unfinished orders are voided"
                )
            returned = [t.model_copy(update={"refunded_fen": t.amount_fen}) for t in order.tenders]
            return order.model_copy(
                update={"status": "voided", "void_reason": reason, "voided_by": staff.id, "tenders": returned}
            )

        def report(conn: sqlite3.Connection, change: Change) -> None:
            order = change.order
            if order.tenders:
                shift = self._require_shift(conn)
                refunds = shift.refunds
                for tender in order.tenders:
                    refunds = add_to(refunds, tender.method, tender.amount_fen)
                save_shift(conn, shift.model_copy(update={"refunds": refunds}))
            write_audit(conn, staff.id, "order.void", order_id, reason)
            append_event(conn, "order.voided", change.doc, change.now.isoformat())
            if self._queue_print is not None:
                # What the kitchen was already sent of a voided order comes out as cancellations.
                self._queue_print(conn, "kitchen", "kitchen", order_id)

        return await self._change(order_id, rule, idem, after=report, durable=True)

    # ------------------------------------------------------------------ money

    async def pay(
        self,
        order_id: str,
        staff: StaffMember,
        *,
        method: TenderMethod,
        amount_fen: int,
        reference: str | None,
        idem: Idempotency | None,
    ) -> Reply:
        """Apply a tender; the order closes, durably and with its outbox event, when fully paid."""
        shift: Shift | None = None

        def rule(conn: sqlite3.Connection, order: Order, now: datetime) -> Order:
            nonlocal shift
            shift = self._require_shift(conn)
            paid = apply_payment(
                order, method=method, amount_fen=amount_fen, reference=reference, staff_id=staff.id, now=now
            )
            return paid.model_copy(update={"shift_id": shift.id}) if paid.status == "paid" else paid

        def after(conn: sqlite3.Connection, change: Change) -> None:
            order = change.order
            assert shift is not None  # noqa: S101 - set by rule() in this same transaction
            tender = order.tenders[-1]
            sales = add_to(shift.sales, tender.method, tender.amount_fen)
            orders = shift.orders + (order.status == "paid")
            save_shift(conn, shift.model_copy(update={"sales": sales, "orders": orders}))
            if tender.method == "cash":
                self._kick_drawer(conn, staff, f"cash payment, order {order.number:04d}", order.id)
            if order.status == "paid":
                append_event(conn, "order.paid", change.doc, change.now.isoformat())
                self._print(conn, "receipt", order.id)
                if self._queue_print is not None:
                    self._queue_print(conn, "kitchen", "kitchen", order.id)

        return await self._change(order_id, rule, idem, after=after, status=201, durable=True)

    def _print(self, conn: sqlite3.Connection, kind: str, order_id: str) -> None:
        # In the sale's own transaction: a paid order always has its receipt job.
        if self._queue_print is not None:
            self._queue_print(conn, "receipt", kind, order_id)

    def _kick_drawer(
        self, conn: sqlite3.Connection, staff: StaffMember, reason: str, order_id: str | None
    ) -> str | None:
        """Queue a drawer kick on the receipt printer and audit who opened it and why."""
        job = self._queue_print(conn, "receipt", "drawer", order_id) if self._queue_print else None
        if job is not None:
            write_audit(conn, staff.id, "drawer.open", order_id, reason)
        return job

    async def open_drawer(self, staff: StaffMember, reason: str, idem: Idempotency | None) -> Reply:
        """Open the cash drawer without a sale (change for a customer, a count); always audited."""
        if not reason.strip():
            raise TillError("say why the drawer is opened (e.g. 'change for a customer')", status=422)

        def work(conn: sqlite3.Connection) -> Reply:
            job = self._kick_drawer(conn, staff, reason.strip(), None)
            if job is None:
                raise TillError("this store has no receipt printer; the drawer opens through it")
            return Reply(202, {"job": job, "staff": staff.id, "reason": reason.strip()})

        return await self._run(work, idem)

    async def record_topup(
        self,
        staff: StaffMember,
        *,
        member_id: str,
        method: TenderMethod,
        amount_fen: int,
        reference: str | None,
        hub_result: dict[str, Any],
        idem: Idempotency | None,
    ) -> Reply:
        """Record a top-up the hub has made: the money goes into the shift, the slip prints.

        Cash opens the drawer (audited). If no shift is open any more, nothing is recorded
        and the cashier retries with the same Idempotency-Key after opening one; the hub
        answers that retry with the same top-up instead of making a second.
        """
        txn_id = str(hub_result["txn_id"])

        def work(conn: sqlite3.Connection) -> Reply:
            open_shift = load_open_shift(conn)
            if open_shift is None:
                raise TillError(
                    f"the hub took top-up {txn_id}, but no shift is open to record the money in;"
                    " open a shift and send the same request again (same Idempotency-Key)"
                )
            now = _now()
            topup = {
                "id": txn_id,
                "member_id": member_id,
                "amount_fen": amount_fen,
                "bonus_fen": hub_result.get("bonus_fen", 0),
                "method": method,
                "reference": reference,
                "balance": hub_result.get("balance"),
                "staff_id": staff.id,
                "shift_id": open_shift.id,
                "ts": now.isoformat(),
            }
            conn.execute(
                "INSERT INTO topups (id, shift_id, ts, doc) VALUES (?, ?, ?, ?)",
                (txn_id, open_shift.id, now.isoformat(), json.dumps(topup, ensure_ascii=False)),
            )
            topups = add_to(open_shift.topups, method, amount_fen)
            save_shift(conn, open_shift.model_copy(update={"topups": topups}))
            write_audit(
                conn, staff.id, "member.topup", None, f"member {member_id}: {amount_fen} fen {method}"
            )
            if method == "cash":
                self._kick_drawer(conn, staff, f"cash top-up, member {member_id}", None)
            if self._queue_print is not None:
                self._queue_print(conn, "receipt", "topup", txn_id)
            return Reply(201, {"topup": topup})

        return await self._run(work, idem)

    async def record_hub_action(
        self,
        staff: StaffMember,
        action: str,
        detail: str,
        body: dict[str, Any],
        idem: Idempotency | None,
        *,
        order_id: str | None = None,
    ) -> Reply:
        """Audit something the hub did at this till's request (a pass use) and keep the reply."""

        def work(conn: sqlite3.Connection) -> Reply:
            write_audit(conn, staff.id, action, order_id, detail)
            return Reply(201, body)

        return await self._run(work, idem)

    @staticmethod
    def _require_shift(conn: sqlite3.Connection) -> Shift:
        shift = load_open_shift(conn)
        if shift is None:
            raise TillError("no shift is open; open one (POST /api/v1/shifts) before taking money")
        return shift

    async def refund(
        self,
        order_id: str,
        staff: StaffMember,
        *,
        lines: list[tuple[str, Fraction]] | None,
        reason: str,
        idem: Idempotency | None,
    ) -> Reply:
        """Refund chosen lines/quantities, or all that is left, to the original tenders."""
        refund_id = str(new_id())

        def work(conn: sqlite3.Connection) -> Reply:
            shift = self._require_shift(conn)
            now = _now()
            before = load_order(conn, order_id)
            order = plan_refund(before, lines, refund_id=refund_id, reason=reason, staff_id=staff.id, now=now)
            order = order.model_copy(update={"version": before.version + 1})
            _save_order(conn, order, now)
            refund = order.refunds[-1]
            refunds = shift.refunds
            for index, amount in refund.tenders.items():
                refunds = add_to(refunds, order.tenders[index].method, amount)
            save_shift(conn, shift.model_copy(update={"refunds": refunds}))
            write_audit(conn, staff.id, "order.refund", order_id, f"{refund.total_fen} fen: {reason}")
            event = {
                "order_id": order.id,
                "store": order.store,
                # the refund counts on the business day it was given, not the sale's
                "business_day": business_day(now, self._zone, self._settings.cutover_hour).isoformat(),
                "refund": refund.model_dump(mode="json"),
            }
            append_event(conn, "order.refunded", json.dumps(event), now.isoformat())
            cash = [i for i in refund.tenders if order.tenders[i].method == "cash"]
            if cash:
                self._kick_drawer(conn, staff, f"cash refund, order {order.number:04d}", order.id)
            self._print(conn, "refund", order.id)
            if self._queue_print is not None:
                # Refunded lines the kitchen already has come out as cancellations at their station.
                self._queue_print(conn, "kitchen", "kitchen", order.id)
            return Reply(
                201, {"order": order.model_dump(mode="json"), "refund": refund.model_dump(mode="json")}
            )

        return await self._run(work, idem, durable=True)

    # ------------------------------------------------------------------ shifts

    async def open_shift(self, staff: StaffMember, float_fen: int, idem: Idempotency | None) -> Reply:
        """Open the store's shift with a cash float."""
        if float_fen < 0:
            raise TillError("float_fen cannot be negative", status=422)

        def work(conn: sqlite3.Connection) -> Reply:
            if load_open_shift(conn) is not None:
                raise TillError("a shift is already open; close it first")
            now = _now()
            shift = Shift(id=str(new_id()), opened_at=now, opened_by=staff.id, float_fen=float_fen)
            save_shift(conn, shift)
            append_event(conn, "shift.opened", shift.model_dump_json(), now.isoformat())
            return Reply(201, {"shift": shift.view()})

        return await self._run(work, idem, durable=True)

    async def close_shift(self, staff: StaffMember, counted_cash_fen: int, idem: Idempotency | None) -> Reply:
        """Close the shift with the counted cash; the reply shows expected vs counted."""
        if counted_cash_fen < 0:
            raise TillError("counted_cash_fen cannot be negative", status=422)

        def work(conn: sqlite3.Connection) -> Reply:
            shift = self._require_shift(conn)
            now = _now()
            closed = shift.model_copy(
                update={
                    "status": "closed",
                    "closed_at": now,
                    "closed_by": staff.id,
                    "counted_cash_fen": counted_cash_fen,
                }
            )
            save_shift(conn, closed)
            body = closed.view()
            append_event(conn, "shift.closed", json.dumps(body), now.isoformat())
            if self._queue_print is not None:
                self._queue_print(conn, "receipt", "shift", closed.id)  # the 交班 report to sign
            return Reply(200, {"shift": body})

        return await self._run(work, idem, durable=True)

    async def audit_reprint(self, order_id: str, staff: StaffMember) -> Order:
        """Record a re-print (who, when) and return the order."""

        def work(conn: sqlite3.Connection) -> Order:
            order = load_order(conn, order_id)
            write_audit(conn, staff.id, "receipt.reprint", order_id, f"order {order.number:04d}")
            self._print(conn, "reprint", order_id)
            return order

        return await self._journal.transaction(work)
