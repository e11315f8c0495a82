"""Coupons at the till: redeem a presented coupon at the hub, attach it to the open order, or
take it off again.

A coupon is single use chain-wide, so redeeming needs the hub (RPC `coupon.redeem`): the
hub marks it used for this order and answers the engine rule it becomes, which the till
attaches to the order (the engine reprices it at once). While the hub is out of reach a
coupon is refused with a clear message (the store's offline policy cannot allow it: only
the hub knows whether the coupon is still unused). Taking a coupon off an unpaid order
releases it at the hub first (`coupon.release`), so the member keeps it.

The RPC idempotency key is order id + code + the request's Idempotency-Key: a retried
request replays the hub's first answer, while a new request after a release runs again
(the hub answers a repeat for the same order with the same coupon, never a second use).
"""

from __future__ import annotations

import contextlib
from typing import Any

from pydantic import TypeAdapter, ValidationError

from edge.errors import TillError
from edge.rpc import HubUnreachable, RpcClient, RpcFailed
from edge.till import Idempotency, Reply, Till
from protocol import new_id
from protocol.promotion_rules import Rule

__all__ = ["CouponDesk"]

_RULE: TypeAdapter[Rule] = TypeAdapter(Rule)


def _key(order_id: str, code: str, idem: Idempotency | None, verb: str) -> str:
    return f"{order_id}:{code}:{verb}:{idem.key if idem is not None else new_id()}"


class CouponDesk:
    """The till's coupon operations, each an RPC to the hub plus a change of the order."""

    def __init__(self, till: Till, rpc: RpcClient):
        self._till = till
        self._rpc = rpc

    async def _call(self, method: str, params: dict[str, Any], key: str, what: str) -> Any:
        try:
            return await self._rpc.call(method, params, idempotency_key=key)
        except HubUnreachable as err:
            if err.outcome_unknown:
                raise TillError(
                    f"{what}: the hub did not answer in time and may have done it; "
                    "send the same request again (same Idempotency-Key) to find out",
                    status=503,
                ) from None
            raise TillError(
                f"{what}: coupons need the hub, which cannot be reached now; "
                "the coupon is not used and the customer keeps it — sell without it or try again later",
                status=503,
            ) from None
        except RpcFailed as err:
            raise TillError(f"{what}: {err.error}", status=409) from None

    async def list_for_member(self, member_id: str) -> dict[str, Any]:
        """The member's unused coupons valid at this store."""
        try:
            return dict(await self._rpc.call("coupon.list", {"member_id": member_id}))
        except HubUnreachable as err:
            raise TillError(f"listing coupons: {err}", status=503) from None
        except RpcFailed as err:
            raise TillError(err.error, status=409) from None

    async def redeem(self, order_id: str, code: str, idem: Idempotency | None) -> Reply:
        """Use the coupon for this order at the hub, then attach its rule; the order is repriced."""
        stored = await self._till.stored_reply(idem)
        if stored is not None:
            return stored
        code = code.strip().upper()
        order = await self._till.get_order(order_id)
        order.require_editable()
        held = next((c for c in order.coupons if c.code == code), None)
        if held is not None:  # already on the order: attaching again changes nothing
            return await self._till.attach_coupon(order_id, held, idem)
        params: dict[str, Any] = {"code": code, "order_id": order_id}
        if order.member is not None:
            params["member_id"] = order.member.id
        answer = await self._call(
            "coupon.redeem", params, _key(order_id, code, idem, "redeem"), f"coupon {code}"
        )
        try:
            rule = _RULE.validate_python(answer["rule"])
        except (ValidationError, KeyError, TypeError) as err:
            await self._release_quietly(order_id, code)
            raise TillError(
                f"coupon {code}: the hub answered a rule this till cannot read ({err})", status=502
            ) from None
        try:
            return await self._till.attach_coupon(order_id, rule, idem)
        except TillError:
            # The order changed meanwhile (paid, voided, too many coupons): give the coupon back.
            await self._release_quietly(order_id, code)
            raise

    async def _release_quietly(self, order_id: str, code: str) -> None:
        # If this fails the hub keeps the coupon used until a person releases it: never used twice.
        with contextlib.suppress(HubUnreachable, RpcFailed):
            await self._rpc.call(
                "coupon.release",
                {"code": code, "order_id": order_id},
                idempotency_key=_key(order_id, code, None, "release"),
            )

    async def release(self, order_id: str, code: str, idem: Idempotency | None) -> Reply:
        """Take the coupon off an unpaid order and give it back to the member at the hub."""
        stored = await self._till.stored_reply(idem)
        if stored is not None:
            return stored
        code = code.strip().upper()
        order = await self._till.get_order(order_id)
        order.require_editable()
        if not any(c.code == code for c in order.coupons):
            raise TillError(f"order {order.number:04d} has no coupon {code}", status=404)
        await self._call(
            "coupon.release",
            {"code": code, "order_id": order_id},
            _key(order_id, code, idem, "release"),
            f"coupon {code}",
        )
        return await self._till.remove_coupon(order_id, code, idem)
