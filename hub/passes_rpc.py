"""Till RPC methods for passes: list a member's passes, take a use, reverse a mistaken use.

`pass.consume` and `pass.reverse` change state, so they are keyed: the RpcServer refuses
them without an idempotency key and a retry gets the first outcome back.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from hub.db import AsyncSession
from hub.errors import NotFound
from hub.members import get_member
from hub.passes import PassError, passes_of
from hub.passes_consume import consume, reverse_use
from hub.rpc import Method, RpcError

__all__ = ["RPC_KEYED", "RPC_METHODS"]

P = TypeVar("P", bound=BaseModel)


class _ListParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    member_id: str = Field(min_length=1, max_length=64)


class _ConsumeParams(BaseModel):
    # A misspelt "pass_id" must not silently punch another card: unknown fields are refused.
    model_config = ConfigDict(extra="forbid")

    member_id: str = Field(min_length=1, max_length=64)
    pass_id: str | None = Field(None, min_length=1, max_length=36)
    service_sku: str = Field(min_length=1, max_length=64)
    order_id: str | None = Field(None, min_length=1, max_length=36)
    uses: StrictInt = Field(1, ge=1, le=100)


class _ReverseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    txn_id: str = Field(min_length=1, max_length=36)


def _parse(model: type[P], method: str, params: dict[str, Any]) -> P:
    try:
        return model.model_validate(params)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "params"
        raise RpcError(f"{method}: {field}: {first['msg']}") from None


async def _list(session: AsyncSession, store: str, params: dict[str, Any]) -> Any:
    p = _parse(_ListParams, "pass.list", params)
    try:
        member = await get_member(session, p.member_id)
        return {"member_id": member.id, "passes": await passes_of(session, member.id)}
    except NotFound as err:
        raise RpcError(f"会员不存在 ({err})") from None


async def _consume(session: AsyncSession, store: str, params: dict[str, Any]) -> Any:
    p = _parse(_ConsumeParams, "pass.consume", params)
    try:
        return await consume(
            session, store, p.member_id, p.service_sku, pass_id=p.pass_id, uses=p.uses, order_id=p.order_id
        )
    except (PassError, NotFound) as err:
        raise RpcError(str(err)) from None


async def _reverse(session: AsyncSession, store: str, params: dict[str, Any]) -> Any:
    p = _parse(_ReverseParams, "pass.reverse", params)
    try:
        return await reverse_use(
            session, p.txn_id, actor=f"store:{store}", reason="cashier reversal", store=store
        )
    except (PassError, NotFound) as err:
        raise RpcError(str(err)) from None


RPC_METHODS: dict[str, Method] = {"pass.list": _list, "pass.consume": _consume, "pass.reverse": _reverse}
RPC_KEYED = {"pass.consume", "pass.reverse"}
