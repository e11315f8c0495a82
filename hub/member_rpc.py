"""Till RPC for members: look a member up by phone or member code, register one at the till.

Neither moves money, so neither needs an idempotency key; a till that sends one anyway
(recommended for lookups by code: a code works once) gets the first answer on a retry.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import select

from hub import points
from hub.db import AsyncSession
from hub.errors import NotFound
from hub.levels import level_of
from hub.member_codes import MemberCodeRefused, redeem_code
from hub.member_promo_facts import member_segments, promotion_uses_today
from hub.member_search import birthday_in_year
from hub.members import (
    Gender,
    InvalidMember,
    Member,
    MemberExists,
    MemberFields,
    check_birthday,
    check_name,
    create_member,
    find_by_phone,
    get_member,
    mask_phone,
    normalize_phone,
    parse_gender,
)
from hub.models import Store
from hub.passes import passes_of
from hub.referral_tables import ReferralLink
from hub.referrals import ReferralError, attribute_registration, resolve_code
from hub.rpc import Method, RpcError
from hub.stored_value import stored_value_balances

__all__ = ["RPC_METHODS", "member_view"]

_DEFAULT_TZ = "Asia/Shanghai"
P = TypeVar("P", bound="_Params")


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Lookup(_Params):
    phone: str | None = Field(None, max_length=32)
    code: str | None = Field(None, max_length=64)

    @model_validator(mode="after")
    def _one_of(self) -> _Lookup:
        if (self.phone is None) == (self.code is None):
            raise ValueError("give either phone or code")
        return self


class _Register(_Params):
    phone: str = Field(max_length=32)
    name: str = Field("", max_length=200)
    gender: str = "unknown"
    birthday: date | None = None
    referrer_phone: str | None = Field(None, max_length=32)
    referral_code: str | None = Field(None, min_length=4, max_length=16)  # a promoter's share code
    consent_marketing: bool = False
    consent_sms: bool = False

    @field_validator("phone", "referrer_phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        return None if value is None else normalize_phone(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value)

    @field_validator("gender")
    @classmethod
    def _gender(cls, value: str) -> str:
        return parse_gender(value).value

    @field_validator("birthday")
    @classmethod
    def _birthday(cls, value: date | None) -> date | None:
        return check_birthday(value)


def _parse(model: type[P], params: dict[str, Any]) -> P:
    try:
        return model.model_validate(params)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise RpcError(f"{field}: {message}" if field else message) from None


async def _store_zone(session: AsyncSession, store: str) -> ZoneInfo:
    timezone = await session.scalar(select(Store.timezone).where(Store.id == store))
    try:
        return ZoneInfo(timezone or _DEFAULT_TZ)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(_DEFAULT_TZ)


async def member_view(session: AsyncSession, member: Member, store: str) -> dict[str, Any]:
    """What the till shows and prices with: level, spendable points, balances, usable passes,
    and the promotion facts (`segments`, `promotion_uses_today`, see hub.member_promo_facts).

    The phone is masked (the cashier confirms the last four digits with the member);
    `birthday_today` uses the store's calendar date (29 February on 28 February in
    common years).
    """
    zone = await _store_zone(session, store)
    today = datetime.now(UTC).astimezone(zone).date()
    principal_fen, bonus_fen = await stored_value_balances(session, member.id)
    birthday_today = member.birthday is not None and birthday_in_year(member.birthday, today.year) == today
    return {
        "id": member.id,
        "phone_masked": mask_phone(member.phone),
        "name": member.name,
        "gender": member.gender,
        "level": await level_of(session, member.id),
        "points": await points.spendable(session, member.id, datetime.now(UTC)),
        "stored_value": {
            "principal_fen": principal_fen,
            "bonus_fen": bonus_fen,
            "total_fen": principal_fen + bonus_fen,
        },
        "passes": await passes_of(session, member.id),
        "birthday_today": birthday_today,
        "segments": await member_segments(session, member.id),
        "promotion_uses_today": await promotion_uses_today(session, member.id, zone),
    }


async def lookup(session: AsyncSession, store: str, params: dict[str, Any]) -> Any:
    """`member.lookup` {phone} or {code} -> the member view; a code is used up by the lookup."""
    query = _parse(_Lookup, params)
    if query.code is not None:
        try:
            member_id = await redeem_code(session, query.code, store=store)
        except MemberCodeRefused as err:
            raise RpcError(str(err)) from None
        return await member_view(session, await get_member(session, member_id), store)
    assert query.phone is not None  # noqa: S101 - checked by _Lookup
    try:
        phone = normalize_phone(query.phone)
    except InvalidMember as err:
        raise RpcError(str(err)) from None
    found = await find_by_phone(session, phone)
    if found is None:
        raise RpcError(f"{phone} is not a member yet; register them with member.register")
    return await member_view(session, await get_member(session, found.id), store)


async def register(session: AsyncSession, store: str, params: dict[str, Any]) -> Any:
    """`member.register` -> the new member's view, or the existing one's with `existing: true`."""
    body = _parse(_Register, params)
    link = await _share_link(session, body)
    existing = await find_by_phone(session, body.phone)
    if existing is None:
        referrer_id = None
        if body.referrer_phone is not None:
            if body.referrer_phone == body.phone:
                raise RpcError("a member cannot refer themselves; leave the referrer out")
            referrer = await find_by_phone(session, body.referrer_phone)
            if referrer is None:
                raise RpcError(
                    f"referrer {body.referrer_phone} is not a member;"
                    " leave the referrer out or register them first"
                )
            referrer_id = referrer.id
        fields = MemberFields(
            body.phone,
            channel="till",
            name=body.name,
            gender=Gender(body.gender),
            birthday=body.birthday,
            source_store=store,
            referrer_id=referrer_id,
            consent_marketing=body.consent_marketing,
            consent_sms=body.consent_sms,
        )
        try:
            member = await create_member(session, fields)
        except MemberExists:  # registered at another till a moment ago
            existing = await find_by_phone(session, body.phone)
            if existing is None:
                raise RpcError("the member could not be registered; try again") from None
        else:
            answer = {**await member_view(session, member, store), "existing": False}
            if link is not None:
                done, refused = await attribute_registration(session, member.id, link)
                answer["referral"] = {"attributed": done is not None, "refused": refused}
            return answer
    return {**await member_view(session, await get_member(session, existing.id), store), "existing": True}


async def _share_link(session: AsyncSession, body: _Register) -> ReferralLink | None:
    """The promoter's link a registration carries (`referral_code`), or None."""
    if body.referral_code is None:
        return None
    if body.referrer_phone is not None:
        raise RpcError("give referrer_phone or referral_code, not both")
    try:
        return await resolve_code(session, body.referral_code)
    except (NotFound, ReferralError) as err:
        raise RpcError(f"{err}; register without the code or check it") from None


RPC_METHODS: dict[str, Method] = {"member.lookup": lookup, "member.register": register}
