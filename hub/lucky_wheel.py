"""Lucky wheel (大转盘): weighted prizes with stock, a daily spin limit, an optional points cost, an audit.

A spin draws one integer in [0, total weight) from `secrets` (tests pass their own source)
and maps it to a prize by the cumulative weights in position order (`pick`). The spin row
keeps the draw and the weights it was drawn against, so anyone can check from the audit
alone that every draw gave the prize it should (`odds_report`), and compare the observed
frequencies with the configured odds. A drawn prize that is out of stock (or a coupon that
can no longer be issued) gives the wheel's consolation prize instead; the audit says why.

A spin locks the member's points row first, so the daily limit, the cost and the
idempotency key are decided with nothing of the member's changing underneath; prize
stock is taken by one conditional UPDATE, so it is never overgiven.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import func, or_, select, update

from hub import points
from hub.coupon_tables import IssueSource
from hub.coupons import CouponError, get_template, issue
from hub.db import AsyncSession
from hub.errors import HubError, NotFound
from hub.loyalty_rules import LOYALTY_ZONE, load_points_rules
from hub.mall_tables import PrizeKind, Spin, Wheel, WheelPrize
from hub.members import get_member
from hub.messaging import lock_for_write
from protocol import new_id

__all__ = [
    "PrizeChange",
    "PrizeIn",
    "RandomSource",
    "SpinResult",
    "WheelError",
    "WheelIn",
    "collect_prize",
    "create_wheel",
    "get_wheel",
    "odds_report",
    "pick",
    "spin",
    "spin_json",
    "update_prize",
    "wheel_json",
]

# randbelow(n) -> an integer in [0, n); `secrets.randbelow` unless a test injects one.
RandomSource = Callable[[int], int]
_MAX_WEIGHT = 1_000_000


class WheelError(HubError):
    """A wheel request was refused; nothing was written."""


class PrizeIn(BaseModel):
    """One slice: what it gives, its weight (odds = weight / total) and its stock (None: unlimited)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100)
    kind: PrizeKind
    points: int = Field(0, strict=True, ge=0, le=1_000_000)
    coupon_template: str | None = Field(None, min_length=1, max_length=36)
    sku: str | None = Field(None, min_length=1, max_length=64)
    weight: int = Field(strict=True, ge=0, le=_MAX_WEIGHT)
    stock: int | None = Field(None, strict=True, ge=0, le=10_000_000)
    consolation: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> PrizeIn:
        if (self.kind == PrizeKind.POINTS) != (self.points > 0):
            raise ValueError("points (above 0) go with kind points only")
        if (self.kind == PrizeKind.COUPON) != (self.coupon_template is not None):
            raise ValueError("coupon_template goes with kind coupon only, and kind coupon needs it")
        if self.sku is not None and self.kind != PrizeKind.ITEM:
            raise ValueError("sku goes with kind item only")
        return self


class WheelIn(BaseModel):
    """A new wheel; exactly one prize is the consolation, unlimited and never a coupon."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=100)
    spin_cost_points: int = Field(0, strict=True, ge=0, le=1_000_000)
    daily_spins: int = Field(1, strict=True, ge=1, le=100)
    prizes: list[PrizeIn] = Field(min_length=2, max_length=24)

    @model_validator(mode="after")
    def _consistent(self) -> WheelIn:
        consolation = [p for p in self.prizes if p.consolation]
        if len(consolation) != 1:
            raise ValueError("mark exactly one prize as the consolation (what an out-of-stock prize gives)")
        if consolation[0].stock is not None or consolation[0].kind not in (
            PrizeKind.NOTHING,
            PrizeKind.POINTS,
        ):
            raise ValueError("the consolation prize must be nothing or points, with unlimited stock")
        if sum(p.weight for p in self.prizes) == 0:
            raise ValueError("at least one prize needs a weight above 0")
        return self


class PrizeChange(BaseModel):
    """New odds or stock for a prize; spins already made keep the weights they were drawn with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: int | None = Field(None, strict=True, ge=0, le=_MAX_WEIGHT)
    stock: int | None = Field(None, strict=True, ge=0, le=10_000_000)


@dataclass(frozen=True)
class SpinResult:
    """The spin's audit row, the prize given, and whether this call made it (False: a replay)."""

    spin: Spin
    prize: WheelPrize
    created: bool


def pick(weights: Sequence[Sequence[Any]], draw: int) -> str:
    """The prize id whose range holds `draw`: ranges are the cumulative weights in the given order."""
    edge = 0
    for prize_id, weight in weights:
        edge += int(weight)
        if draw < edge:
            return str(prize_id)
    raise ValueError(f"draw {draw} is outside [0, {edge})")


def wheel_json(wheel: Wheel, prizes: Sequence[WheelPrize]) -> dict[str, Any]:
    """A wheel and its prizes, with each prize's configured probability."""
    total = sum(p.weight for p in prizes)
    return {
        "id": wheel.id,
        "name": wheel.name,
        "spin_cost_points": wheel.spin_cost_points,
        "daily_spins": wheel.daily_spins,
        "active": wheel.active,
        "created_by": wheel.created_by,
        "prizes": [
            {
                "id": p.id,
                "position": p.position,
                "name": p.name,
                "kind": p.kind,
                "points": p.points,
                "coupon_template": p.coupon_template,
                "sku": p.sku,
                "weight": p.weight,
                "probability": p.weight / total if total else 0.0,
                "stock": p.stock,
                "given": p.given,
                "consolation": p.consolation,
            }
            for p in prizes
        ],
    }


def spin_json(s: Spin, prize: WheelPrize | None = None) -> dict[str, Any]:
    """A spin's audit row as the API shows it."""
    out: dict[str, Any] = {
        "id": s.id,
        "wheel_id": s.wheel_id,
        "member_id": s.member_id,
        "spun_at": s.spun_at.isoformat(),
        "day": s.day.isoformat(),
        "draw": s.draw,
        "total_weight": s.total_weight,
        "weights": s.weights,
        "drawn_prize_id": s.drawn_prize_id,
        "prize_id": s.prize_id,
        "fallback_reason": s.fallback_reason,
        "points_cost": s.points_cost,
        "reference": s.reference,
        "collected_at": s.collected_at.isoformat() if s.collected_at else None,
        "collected_store": s.collected_store,
    }
    if prize is not None:
        out["prize"] = {"name": prize.name, "kind": prize.kind, "points": prize.points, "sku": prize.sku}
    return out


async def create_wheel(session: AsyncSession, body: WheelIn, *, actor: str) -> tuple[Wheel, list[WheelPrize]]:
    """Add a wheel (active at once) with its prizes in the given order; coupon templates must exist."""
    for prize in body.prizes:
        if prize.coupon_template is not None:
            try:
                await get_template(session, prize.coupon_template)
            except NotFound:
                raise WheelError(
                    f"prize '{prize.name}': no coupon template {prize.coupon_template}"
                ) from None
    now = datetime.now(UTC)
    wheel = Wheel(
        id=str(new_id()),
        name=body.name,
        spin_cost_points=body.spin_cost_points,
        daily_spins=body.daily_spins,
        active=True,
        created_by=actor[:80],
        created_at=now,
        updated_at=now,
    )
    session.add(wheel)
    await session.flush()
    prizes = [
        WheelPrize(id=str(new_id()), wheel_id=wheel.id, position=n, given=0, **p.model_dump())
        for n, p in enumerate(body.prizes)
    ]
    session.add_all(prizes)
    await session.flush()
    return wheel, prizes


async def get_wheel(session: AsyncSession, wheel_id: str) -> tuple[Wheel, list[WheelPrize]]:
    """The wheel and its prizes in position order, or `NotFound`."""
    wheel = await session.get(Wheel, wheel_id, populate_existing=True)
    if wheel is None:
        raise NotFound(f"no lucky wheel {wheel_id}")
    prizes = (
        await session.scalars(
            select(WheelPrize)
            .where(WheelPrize.wheel_id == wheel_id)
            .order_by(WheelPrize.position)
            .execution_options(populate_existing=True)
        )
    ).all()
    return wheel, list(prizes)


async def update_prize(
    session: AsyncSession, wheel_id: str, prize_id: str, change: PrizeChange
) -> WheelPrize:
    """Change a prize's weight or stock (never below what was given; the consolation stays unlimited)."""
    await lock_for_write(session)
    prize = await session.get(WheelPrize, prize_id, with_for_update=True, populate_existing=True)
    if prize is None or prize.wheel_id != wheel_id:
        raise NotFound(f"no prize {prize_id} on wheel {wheel_id}")
    if change.stock is not None:
        if prize.consolation:
            raise WheelError("the consolation prize has unlimited stock")
        if change.stock < prize.given:
            raise WheelError(f"stock {change.stock} is below the {prize.given} already given")
        prize.stock = change.stock
    if change.weight is not None:
        others = await session.scalar(
            select(func.coalesce(func.sum(WheelPrize.weight), 0)).where(
                WheelPrize.wheel_id == wheel_id, WheelPrize.id != prize_id
            )
        )
        if int(others or 0) + change.weight == 0:
            raise WheelError("at least one prize needs a weight above 0")
        prize.weight = change.weight
    await session.flush()
    return prize


async def collect_prize(session: AsyncSession, wheel_id: str, spin_id: str, *, store: str) -> Spin:
    """An item prize handed over at `store`, once: the spin id is the voucher."""
    await lock_for_write(session)
    found = await session.get(Spin, spin_id, with_for_update=True, populate_existing=True)
    if found is None or found.wheel_id != wheel_id:
        raise NotFound(f"no spin {spin_id} on wheel {wheel_id}")
    prize = await session.get(WheelPrize, found.prize_id)
    if prize is None or prize.kind != PrizeKind.ITEM:
        raise WheelError(f"spin {spin_id} won no item to collect")
    if found.collected_at is not None:
        raise WheelError(
            f"the prize of spin {spin_id} was collected at {found.collected_store} "
            f"on {found.collected_at.isoformat()}"
        )
    found.collected_at, found.collected_store = datetime.now(UTC), store
    await session.flush()
    return found


class _OutOfStock(Exception):
    """The drawn prize has no stock left."""


async def _take_prize(session: AsyncSession, prize: WheelPrize) -> bool:
    taken = await session.execute(
        update(WheelPrize)
        .where(
            WheelPrize.id == prize.id,
            or_(WheelPrize.stock.is_(None), WheelPrize.given < WheelPrize.stock),
        )
        .values(given=WheelPrize.given + 1)
        .execution_options(synchronize_session=False)
    )
    return bool(taken.rowcount == 1)  # type: ignore[attr-defined]


async def _award(
    session: AsyncSession, prize: WheelPrize, member_id: str, spin_id: str, now: datetime
) -> str | None:
    """Give the prize; the coupon code or points lot id. `CouponError` if the coupon cannot be issued."""
    if prize.kind == PrizeKind.POINTS:
        rules = await load_points_rules(session)
        lot = await points.credit(
            session,
            member_id,
            prize.points,
            kind="reward",
            source=f"wheel:{spin_id}",
            expires_at=rules.expiry.expires_at(now),
            now=now,
            note=f"lucky wheel: {prize.name}",
        )
        return f"lot:{lot}"
    if prize.kind == PrizeKind.COUPON:
        assert prize.coupon_template is not None  # noqa: S101 - PrizeIn requires it
        (coupon,) = await issue(
            session, prize.coupon_template, [member_id], source=IssueSource.CAMPAIGN, actor=f"wheel:{spin_id}"
        )
        return coupon.code
    if prize.kind == PrizeKind.ITEM:
        return f"collect:{spin_id}"  # the spin id is the voucher a store checks
    return None


async def _replay(session: AsyncSession, wheel_id: str, member_id: str, key: str) -> SpinResult | None:
    done = await session.scalar(select(Spin).where(Spin.idempotency_key == key))
    if done is None:
        return None
    if done.wheel_id != wheel_id or done.member_id != member_id:
        raise WheelError(f"idempotency key {key} was used for another spin")
    prize = await session.get(WheelPrize, done.prize_id)
    assert prize is not None  # noqa: S101 - the foreign key holds it
    return SpinResult(done, prize, created=False)


async def spin(
    session: AsyncSession,
    wheel_id: str,
    member_id: str,
    *,
    idempotency_key: str,
    rng: RandomSource = secrets.randbelow,
    now: datetime | None = None,
) -> SpinResult:
    """Spin the wheel once for a member in the caller's transaction."""
    now = now or datetime.now(UTC)
    await lock_for_write(session)
    member_id = (await get_member(session, member_id)).id
    balance = await points.prepare(session, member_id, now)  # the member's lock, and their balance
    done = await _replay(session, wheel_id, member_id, idempotency_key)
    if done is not None:
        return done
    wheel, prizes = await get_wheel(session, wheel_id)
    if not wheel.active:
        raise WheelError(f"'{wheel.name}' is not running")
    day = now.astimezone(LOYALTY_ZONE).date()
    spun = await session.scalar(
        select(func.count()).where(Spin.wheel_id == wheel.id, Spin.member_id == member_id, Spin.day == day)
    )
    if int(spun or 0) >= wheel.daily_spins:
        raise WheelError(f"'{wheel.name}' allows {wheel.daily_spins} spin(s) a day; come back tomorrow")
    spin_id = str(new_id())
    if wheel.spin_cost_points:
        if balance < wheel.spin_cost_points:
            raise WheelError(f"a spin costs {wheel.spin_cost_points} points; the member has {balance}")
        await points.debit(
            session,
            member_id,
            wheel.spin_cost_points,
            kind="redeem",
            source=f"wheel:{spin_id}",
            now=now,
            note=f"lucky wheel: {wheel.name}",
            prepared=True,
        )
    weights = [[p.id, p.weight] for p in prizes]
    total = sum(p.weight for p in prizes)
    draw = rng(total)
    if not 0 <= draw < total:
        raise RuntimeError(f"the random source gave {draw}, outside [0, {total})")
    drawn = next(p for p in prizes if p.id == pick(weights, draw))
    given, reason, reference = drawn, "", None
    try:
        async with session.begin_nested():  # a coupon that cannot be issued gives its stock back
            if not await _take_prize(session, drawn):
                raise _OutOfStock
            reference = await _award(session, drawn, member_id, spin_id, now)
    except _OutOfStock:
        reason = f"'{drawn.name}' was out of stock"
    except CouponError as err:
        reason = f"'{drawn.name}' could not be given: {err}"
    if reason:
        given = next(p for p in prizes if p.consolation)
        await _take_prize(session, given)  # unlimited (WheelIn), so always taken
        reference = await _award(session, given, member_id, spin_id, now)
    row = Spin(
        id=spin_id,
        wheel_id=wheel.id,
        member_id=member_id,
        idempotency_key=idempotency_key,
        spun_at=now,
        day=day,
        draw=draw,
        total_weight=total,
        weights=weights,
        drawn_prize_id=drawn.id,
        prize_id=given.id,
        fallback_reason=reason[:200],
        points_cost=wheel.spin_cost_points,
        reference=reference,
    )
    session.add(row)
    await session.flush()
    return SpinResult(row, given, created=True)


def _chi_square_p(statistic: float, df: int) -> float:
    """Upper-tail p-value of a chi-square statistic (Wilson-Hilferty; good to ~0.01 for df >= 1)."""
    if df <= 0:
        return 1.0
    mean = 1 - 2 / (9 * df)
    z = ((statistic / df) ** (1 / 3) - mean) / math.sqrt(2 / (9 * df))
    return 0.5 * math.erfc(z / math.sqrt(2))


async def odds_report(session: AsyncSession, wheel_id: str) -> dict[str, Any]:
    """Recompute the odds from the audit: each draw re-mapped under its recorded weights, observed
    counts against the expected ones (the sum of each spin's recorded probability), a chi-square
    test, and the spins whose audit does not hold up (`mismatches`, which should be empty)."""
    _wheel, prizes = await get_wheel(session, wheel_id)
    consolation = {p.id for p in prizes if p.consolation}
    observed = dict.fromkeys((p.id for p in prizes), 0)
    expected = dict.fromkeys((p.id for p in prizes), 0.0)
    given = dict.fromkeys((p.id for p in prizes), 0)
    mismatches: list[dict[str, Any]] = []
    spins = 0
    rows = await session.stream(
        select(Spin.id, Spin.draw, Spin.total_weight, Spin.weights, Spin.drawn_prize_id, Spin.prize_id)
        .where(Spin.wheel_id == wheel_id)
        .order_by(Spin.spun_at, Spin.id)
        .execution_options(yield_per=1000)
    )
    async for spin_id, draw, total, weights, drawn_id, prize_id in rows:
        spins += 1
        problem = None
        if sum(int(w) for _, w in weights) != total:
            problem = "the recorded weights do not add up to the recorded total"
        else:
            try:
                if pick(weights, draw) != drawn_id:
                    problem = "the draw maps to another prize under the recorded weights"
            except ValueError as err:
                problem = str(err)
        if problem is None and prize_id != drawn_id and prize_id not in consolation:
            problem = "the prize given is neither the one drawn nor the consolation"
        if problem is not None:
            mismatches.append({"spin_id": spin_id, "problem": problem})
            continue
        observed[drawn_id] = observed.get(drawn_id, 0) + 1
        given[prize_id] = given.get(prize_id, 0) + 1
        for pid, weight in weights:
            expected[pid] = expected.get(pid, 0.0) + int(weight) / total
    tested = [pid for pid, e in expected.items() if e > 0]
    statistic = sum((observed[pid] - expected[pid]) ** 2 / expected[pid] for pid in tested)
    df = len(tested) - 1
    total_weight = sum(p.weight for p in prizes)
    verified = spins - len(mismatches)
    return {
        "wheel_id": wheel_id,
        "spins": spins,
        "verified": verified,
        "mismatches": mismatches,
        "prizes": [
            {
                "id": p.id,
                "name": p.name,
                "configured_probability": p.weight / total_weight if total_weight else 0.0,
                "drawn": observed.get(p.id, 0),
                "given": given.get(p.id, 0),
                "expected": round(expected.get(p.id, 0.0), 6),
                "observed_probability": observed.get(p.id, 0) / verified if verified else 0.0,
            }
            for p in prizes
        ],
        "chi_square": round(statistic, 6),
        "degrees_of_freedom": df,
        "p_value": round(_chi_square_p(statistic, df), 6) if verified else None,
    }
