"""Members at the till: look up, register, attach to an order, pay from the account, top up.

The member's account (level, points, stored value) lives at the hub, so every step here
is an RPC first and a journal transaction second:

- Paying with stored value or points asks the hub to debit (`stored_value.debit`,
  `points.redeem`) with the request's Idempotency-Key, then records the tender with the
  hub's txn id as reference. A retry of the same request gets the till's stored reply
  or, if the till never recorded it, the hub's first outcome: the member is charged once.
- A debit whose reply did not arrive in time may have happened at the hub; it is never
  replaced by an offline payment, the cashier retries the same request instead.
- Offline, stored value is refused unless the store's policy allows it; then the till
  takes up to the policy's allowance (and the balance seen at lookup) with an
  `offline:` reference, and the hub charges it when the order syncs, flagging a shortfall.
- Points always need the hub: balance, lots and expiry live there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge.access import StaffMember
from edge.errors import TillError
from edge.orders import MEMBER_METHODS, Order, OrderMember, TenderMethod
from edge.rpc import HubUnreachable, OfflinePolicy, RpcClient, RpcFailed
from edge.till import OFFLINE_PREFIX, Idempotency, Reply, Till
from protocol import format_yuan, new_id, utcnow

__all__ = ["MemberDesk"]


def _need_key(idem: Idempotency | None, what: str) -> Idempotency:
    if idem is None:
        raise TillError(
            f"{what} needs an Idempotency-Key header, so that a retry never charges the member twice",
            status=428,
        )
    return idem


def _unreachable(err: HubUnreachable, what: str) -> TillError:
    if err.outcome_unknown:
        return TillError(
            f"{what}: the hub did not answer in time and may have done it; "
            "send the same request again (same Idempotency-Key) to find out",
            status=503,
        )
    return TillError(f"{what}: {err}", status=503)


def order_member(view: dict[str, Any]) -> OrderMember:
    """The hub's member view (`member.lookup`) as the order keeps it."""
    level = view.get("level") or {}
    stored = view.get("stored_value") or {}
    return OrderMember(
        id=str(view["id"]),
        phone_masked=str(view.get("phone_masked", "")),
        name=str(view.get("name", "")),
        level=level.get("code"),
        level_name=str(level.get("name", "")),
        # Sent by hubs that know them; promotions for segments and daily caps read them.
        segments=[str(s) for s in view.get("segments") or ()],
        promotion_uses_today={str(k): int(v) for k, v in (view.get("promotion_uses_today") or {}).items()},
        discount_bp=int(level.get("discount_bp", 10_000)),
        member_prices=bool(level.get("member_prices", False)),
        points=int(view.get("points", 0)),
        stored_value_fen=int(stored.get("total_fen", 0)),
        looked_up_at=utcnow(),
    )


class MemberDesk:
    """The till's member operations, each an RPC to the hub plus a journal transaction."""

    def __init__(self, till: Till, rpc: RpcClient, policy: Callable[[], OfflinePolicy]):
        self._till = till
        self._rpc = rpc
        self._policy = policy

    async def _call(self, method: str, params: dict[str, Any], what: str, key: str | None = None) -> Any:
        try:
            return await self._rpc.call(method, params, idempotency_key=key)
        except HubUnreachable as err:
            raise _unreachable(err, what) from None
        except RpcFailed as err:
            raise TillError(err.error, status=409) from None

    # ------------------------------------------------------------------ look up and register

    async def lookup(
        self, *, phone: str | None = None, code: str | None = None, idem: Idempotency | None = None
    ) -> dict[str, Any]:
        """The member by phone or by the code on their phone.

        A code works once, so a lookup by code passes the request's key to the hub: a
        retry after a lost answer gets the member again instead of "code already used".
        """
        params = {"phone": phone} if phone is not None else {"code": code}
        key = idem.key if idem is not None and code is not None else None
        return dict(await self._call("member.lookup", params, "looking up a member", key))

    async def register(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Register at this store (the hub answers with the existing member for a known phone)."""
        return dict(await self._call("member.register", fields, "registering a member"))

    async def attach(
        self, order_id: str, *, phone: str | None, code: str | None, idem: Idempotency | None
    ) -> Reply:
        """Look the member up and attach them: the order is repriced at their level."""
        stored = await self._till.stored_reply(idem)
        if stored is not None:
            return stored
        view = await self.lookup(phone=phone, code=code, idem=idem)
        return await self._till.set_member(order_id, order_member(view), idem)

    # ------------------------------------------------------------------ pay from the account

    async def points_quote(self, order_id: str) -> dict[str, Any]:
        """How many points the attached member may use on this order now, and what they pay."""
        order = await self._till.get_order(order_id)
        member = self._member(order)
        quote = dict(
            await self._call(
                "points.quote",
                {"member_id": member.id, "order_total_fen": order.total_fen},
                "paying with points",
            )
        )
        rate_points, rate_fen = quote["rate"]["points"], quote["rate"]["fen"]
        step = max(1, int(quote.get("step", 1)))
        by_due = order.due_fen * rate_points // rate_fen
        most = min(int(quote["max_points"]), by_due - by_due % step)
        if most < int(quote.get("min_points", 0)):
            most = 0
        return {**quote, "max_points": most, "max_amount_fen": most * rate_fen // rate_points}

    async def pay(
        self,
        order_id: str,
        staff: StaffMember,
        *,
        method: TenderMethod,
        amount_fen: int | None,
        points: int | None,
        idem: Idempotency | None,
    ) -> Reply:
        """Pay from the member's stored value (`amount_fen`) or with `points`."""
        key = _need_key(idem, "paying from a member account")
        stored = await self._till.stored_reply(key)
        if stored is not None:
            return stored
        order = await self._till.get_order(order_id)
        member = self._member(order)
        if order.status != "open":
            raise TillError(f"order {order.number:04d} is {order.status}; it cannot take payments")
        if await self._till.current_shift() is None:
            raise TillError("no shift is open; open one (POST /api/v1/shifts) before taking money")
        if method == "stored_value":
            if amount_fen is None:
                raise TillError("a stored-value payment needs amount_fen", status=422)
            reference = await self._debit_stored_value(order, member, amount_fen, key)
        else:
            if points is None:
                raise TillError("a points payment needs points", status=422)
            amount_fen, reference = await self._redeem_points(order, member, points, key)
        return await self._till.pay(
            order_id, staff, method=method, amount_fen=amount_fen, reference=reference, idem=key
        )

    @staticmethod
    def _member(order: Order) -> OrderMember:
        if order.member is None:
            raise TillError(
                f"order {order.number:04d} has no member; look them up first"
                " (POST /api/v1/orders/{id}/member)",
                status=409,
            )
        return order.member

    async def _debit_stored_value(
        self, order: Order, member: OrderMember, amount: int, key: Idempotency
    ) -> str:
        if amount > order.due_fen:
            raise TillError(
                f"stored value {format_yuan(amount)} is more than the {format_yuan(order.due_fen)} due",
                status=422,
            )
        params = {"member_id": member.id, "order_id": order.id, "amount_fen": amount}
        try:
            result = await self._rpc.call("stored_value.debit", params, idempotency_key=key.key)
        except RpcFailed as err:
            raise TillError(err.error, status=409) from None
        except HubUnreachable as err:
            if err.outcome_unknown or not err.offline_allowed:
                raise _unreachable(err, "paying with stored value") from None
            return await self._offline_stored_value(member, amount)
        return str(result["txn_id"])

    async def _offline_stored_value(self, member: OrderMember, amount: int) -> str:
        """Take stored value without the hub, within the store's allowance; the hub charges it later."""
        allowance = self._policy().stored_value_offline_max_fen
        taken = await self._till.offline_stored_value_fen(member.id)
        left = max(0, min(allowance, member.stored_value_fen) - taken)
        if amount > left:
            raise TillError(
                f"the hub cannot be reached; offline, this member may pay at most {format_yuan(left)} "
                f"from stored value (allowance {format_yuan(allowance)}, balance at lookup "
                f"{format_yuan(member.stored_value_fen)}, already taken offline {format_yuan(taken)})",
                status=503,
            )
        return f"{OFFLINE_PREFIX}{new_id()}"

    async def _redeem_points(
        self, order: Order, member: OrderMember, points: int, key: Idempotency
    ) -> tuple[int, str]:
        quote = await self.points_quote(order.id)
        rate = quote["rate"]
        amount = points * rate["fen"] // rate["points"]
        if amount > order.due_fen:
            raise TillError(
                f"{points} points pay {format_yuan(amount)}, more than the {format_yuan(order.due_fen)} due; "
                f"use at most {quote['max_points']} points",
                status=422,
            )
        params = {
            "member_id": member.id,
            "order_id": order.id,
            "points": points,
            "order_total_fen": order.total_fen,
        }
        result = await self._call("points.redeem", params, "paying with points", key.key)
        return int(result["amount_fen"]), str(result["txn_id"])

    # ------------------------------------------------------------------ top up

    async def topup(
        self,
        staff: StaffMember,
        member_id: str,
        *,
        amount_fen: int,
        method: TenderMethod,
        reference: str | None,
        idem: Idempotency | None,
    ) -> Reply:
        """Top up at the hub (bonus rules apply there), then record the money in the shift."""
        key = _need_key(idem, "a top-up")
        stored = await self._till.stored_reply(key)
        if stored is not None:
            return stored
        if method in MEMBER_METHODS:
            raise TillError("a top-up is paid with cash, WeChat, Alipay or UnionPay", status=422)
        if method != "cash" and not reference:
            raise TillError("a non-cash top-up needs the payment reference", status=422)
        if await self._till.current_shift() is None:
            raise TillError("no shift is open; open one (POST /api/v1/shifts) before taking money")
        params = {
            "member_id": member_id,
            "amount_fen": amount_fen,
            "payment_method": method,
            "payment_reference": reference,
        }
        result = await self._call("stored_value.topup", params, "a top-up", key.key)
        return await self._till.record_topup(
            staff,
            member_id=member_id,
            method=method,
            amount_fen=amount_fen,
            reference=reference,
            hub_result=result,
            idem=key,
        )

    # ------------------------------------------------------------------ punch cards and passes

    async def use_pass(
        self,
        staff: StaffMember,
        member_id: str,
        *,
        service_sku: str,
        pass_id: str | None,
        order_id: str | None,
        uses: int,
        idem: Idempotency | None,
    ) -> Reply:
        """Take uses of the member's pass for a service (次卡 check-in); audited at the till."""
        key = _need_key(idem, "using a pass")
        stored = await self._till.stored_reply(key)
        if stored is not None:
            return stored
        params: dict[str, Any] = {"member_id": member_id, "service_sku": service_sku, "uses": uses}
        if pass_id is not None:
            params["pass_id"] = pass_id
        if order_id is not None:
            params["order_id"] = order_id
        result = dict(await self._call("pass.consume", params, "using a pass", key.key))
        used = f"{uses} × {service_sku} on pass {result.get('pass_id')}"
        detail = f"member {member_id}: {used} (txn {result.get('txn_id')})"
        return await self._till.record_hub_action(
            staff, "pass.use", detail, {"use": result}, key, order_id=order_id
        )

    async def reverse_pass_use(
        self, staff: StaffMember, txn_id: str, reason: str, idem: Idempotency | None
    ) -> Reply:
        """Give back a pass use taken by mistake (same store, same business day; the hub checks)."""
        key = _need_key(idem, "reversing a pass use")
        stored = await self._till.stored_reply(key)
        if stored is not None:
            return stored
        result = dict(await self._call("pass.reverse", {"txn_id": txn_id}, "reversing a pass use", key.key))
        return await self._till.record_hub_action(
            staff, "pass.reverse", f"pass use {txn_id} given back: {reason}", {"reversal": result}, key
        )
