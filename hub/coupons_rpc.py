"""Till RPC methods for coupons: a member's coupons, redeem (single use) and release.

`coupon.redeem` and `coupon.release` change a coupon, so they are keyed: the RpcServer
refuses them without an idempotency key (the till sends order id + code) and a retry gets
the first outcome back. Refusals are `RpcError`s the cashier reads as they are.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub.coupon_redeem import redeem, release
from hub.coupon_tables import CouponState
from hub.coupons import CouponError, coupon_json, member_coupons
from hub.db import AsyncSession
from hub.errors import NotFound
from hub.members import get_member
from hub.rpc import Method, RpcError

__all__ = ["RPC_KEYED", "RPC_METHODS"]

_CODE = r"^[A-Za-z0-9]{4,16}$"


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class _ListParams(_Params):
    member_id: str = Field(min_length=1, max_length=36)


class _RedeemParams(_Params):
    code: str = Field(pattern=_CODE)
    order_id: str = Field(min_length=1, max_length=36)
    member_id: str | None = Field(None, min_length=1, max_length=36)


class _ReleaseParams(_Params):
    code: str = Field(pattern=_CODE)
    order_id: str = Field(min_length=1, max_length=36)


_P = TypeVar("_P", bound=_Params)


def _parse(model: type[_P], method: str, params: dict[str, Any]) -> _P:
    try:
        return model.model_validate(params)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in err.errors()
        )
        raise RpcError(f"{method} request is invalid: {problems}") from None


async def _list(session: AsyncSession, store: str, params: dict[str, Any]) -> Any:
    """{member_id} → {member_id, coupons: [...]} (unused ones, soonest expiry first)."""
    p = _parse(_ListParams, "coupon.list", params)
    try:
        member = await get_member(session, p.member_id)
    except NotFound:
        raise RpcError(f"no member {p.member_id}; look the member up again") from None
    held = await member_coupons(session, member.id, state=CouponState.ISSUED)
    coupons = [coupon_json(c, t) for c, t in held if t.stores is None or store in t.stores]
    return {"member_id": member.id, "coupons": coupons}


async def _redeem(session: AsyncSession, store: str, params: dict[str, Any]) -> Any:
    """{code, order_id, member_id?} → {coupon, rule} (rule: the engine rule the till attaches)."""
    p = _parse(_RedeemParams, "coupon.redeem", params)
    member_id = p.member_id
    if member_id is not None:
        try:
            member_id = (await get_member(session, member_id)).id  # a merged member's survivor
        except NotFound:
            raise RpcError(f"no member {member_id}; look the member up again") from None
    try:
        return await redeem(session, store, p.code, p.order_id, member_id=member_id)
    except (CouponError, NotFound) as err:
        raise RpcError(str(err)) from None


async def _release(session: AsyncSession, store: str, params: dict[str, Any]) -> Any:
    """{code, order_id} → {coupon, released}."""
    p = _parse(_ReleaseParams, "coupon.release", params)
    try:
        return await release(session, store, p.code, p.order_id)
    except (CouponError, NotFound) as err:
        raise RpcError(str(err)) from None


RPC_METHODS: dict[str, Method] = {"coupon.list": _list, "coupon.redeem": _redeem, "coupon.release": _release}
RPC_KEYED = {"coupon.redeem", "coupon.release"}
