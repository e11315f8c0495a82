"""Stored-value RPC methods for tills: balance, debit (pay) and top-up.

`stored_value.debit` and `stored_value.topup` move money, so they are in `RPC_KEYED`: the
RpcServer refuses them without an idempotency key (the till uses order id + tender index)
and stores the first outcome with the method's writes, so a retry never applies twice.
Refusals are `RpcError`s whose message the cashier reads as is.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub.db import AsyncSession
from hub.errors import NotFound
from hub.rpc import Method, RpcError
from hub.stored_value import (
    Balance,
    Source,
    StoredValueError,
    debit,
    resolve_member,
    stored_value_balances,
    topup,
)
from hub.stored_value_rules import MAX_TOPUP_FEN

__all__ = ["RPC_KEYED", "RPC_METHODS"]

_MAX_DEBIT_FEN = 10**12


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    member_id: str = Field(min_length=1, max_length=36)


class _DebitParams(_Params):
    order_id: str = Field(min_length=1, max_length=36)
    amount_fen: int = Field(strict=True, ge=1, le=_MAX_DEBIT_FEN)


class _TopupParams(_Params):
    amount_fen: int = Field(strict=True, ge=1, le=MAX_TOPUP_FEN)
    payment_method: str = Field(pattern=r"^[a-z][a-z0-9_]{0,15}$")
    payment_reference: str | None = Field(None, max_length=64)


_P = TypeVar("_P", bound=_Params)


def _parse(model: type[_P], method: str, params: dict[str, Any]) -> _P:
    try:
        return model.model_validate(params)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in err.errors()
        )
        raise RpcError(f"{method} request is invalid: {problems}") from None


async def _member(session: AsyncSession, member_id: str) -> str:
    try:
        return await resolve_member(session, member_id)
    except NotFound:
        raise RpcError(f"no member {member_id}; look the member up again") from None


async def _balance(session: AsyncSession, store: str, params: dict[str, Any]) -> Any:
    """{member_id} → {member_id, principal_fen, bonus_fen, total_fen} (member_id: the survivor of a merge)."""
    member_id = await _member(session, _parse(_Params, "stored_value.balance", params).member_id)
    balance = Balance(*await stored_value_balances(session, member_id))
    return {"member_id": member_id, **balance.as_json()}


async def _debit(session: AsyncSession, store: str, params: dict[str, Any]) -> Any:
    """{member_id, order_id, amount_fen} → {txn_id, principal_fen, bonus_fen, balance}."""
    p = _parse(_DebitParams, "stored_value.debit", params)
    source = Source(actor=f"store:{store}", store=store, order_id=p.order_id)
    try:
        # `debit` resolves a merged member itself; resolving here too cost a second SELECT.
        done = await debit(session, p.member_id, p.amount_fen, source)
    except NotFound:
        raise RpcError(f"no member {p.member_id}; look the member up again") from None
    except StoredValueError as err:
        raise RpcError(str(err)) from None
    return {
        "txn_id": done.entry.id,
        "principal_fen": -done.entry.principal_delta_fen,
        "bonus_fen": -done.entry.bonus_delta_fen,
        "balance": done.balance.as_json(),
    }


async def _topup(session: AsyncSession, store: str, params: dict[str, Any]) -> Any:
    """{member_id, amount_fen, payment_method, payment_reference} → {txn_id, bonus_fen, balance}."""
    p = _parse(_TopupParams, "stored_value.topup", params)
    member_id = await _member(session, p.member_id)
    try:
        done = await topup(
            session,
            member_id,
            p.amount_fen,
            payment_method=p.payment_method,
            payment_reference=p.payment_reference or None,
            source=Source(actor=f"store:{store}", store=store),
        )
    except StoredValueError as err:
        raise RpcError(str(err)) from None
    return {"txn_id": done.topup.id, "bonus_fen": done.topup.bonus_fen, "balance": done.balance.as_json()}


RPC_METHODS: dict[str, Method] = {
    "stored_value.balance": _balance,
    "stored_value.debit": _debit,
    "stored_value.topup": _topup,
}
RPC_KEYED = {"stored_value.debit", "stored_value.topup"}
