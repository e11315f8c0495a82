"""Promotion authoring: create and change promotions (every change a new version, all kept),
check them with the engine's own validation, preview them on a sample cart with the same
engine, and publish each store's `promotions` snapshot.

A promotion is one engine rule (`protocol.promotion_rules.Rule`) whose id is the
promotion's id. Its schedule is the rule's `window` (dates, weekdays, hours) and its
scope the rule's `stores`, `channels`, `member_levels` and `member_segments`, so the hub
stores and publishes exactly what the till evaluates.

Publishing puts every active promotion in a store's scope into its rule set, including
ones that start later: the till evaluates `window` against its own clock at every cart
change, so a promotion starting at 20:00 applies at 20:00 at a till that went offline at
19:00. Only promotions whose end has passed are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import select, update

from hub.db import AsyncSession, Database
from hub.errors import HubError, NotFound
from hub.loyalty_rules import load_levels
from hub.member_segments import SEGMENTS
from hub.member_tag_tables import MemberTag
from hub.models import Store
from hub.promotion_tables import Promotion, PromotionPublication, PromotionStatus, PromotionVersion
from hub.snapshots import save_snapshot
from protocol import Snapshot, SnapshotKind
from protocol.ids import new_id
from protocol.problem import FieldError
from protocol.promotion_rules import Cart, PromotionResult, Rule, RuleSet
from protocol.promotions import evaluate, validate_rules

__all__ = [
    "InvalidPromotion",
    "PromotionConflict",
    "Published",
    "create_promotion",
    "get_promotion",
    "list_promotions",
    "list_versions",
    "preview",
    "promotion_json",
    "publish",
    "rule_set_for",
    "set_status",
    "update_promotion",
]

_RULE: TypeAdapter[Rule] = TypeAdapter(Rule)


class InvalidPromotion(ValueError):
    """A promotion the engine or the chain's data refuses; `errors` carry field paths."""

    def __init__(self, errors: list[FieldError]):
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


class PromotionConflict(HubError):
    """The promotion changed since the caller read it (another version was saved)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _active(rule: Rule, now: datetime) -> bool:
    return rule.window.ends_at is None or rule.window.ends_at > now


async def _active_rules(session: AsyncSession, *, except_id: str | None = None) -> list[Rule]:
    rows = await session.scalars(
        select(Promotion.rule).where(Promotion.status == PromotionStatus.ACTIVE.value).order_by(Promotion.id)
    )
    rules = [_RULE.validate_python(rule) for rule in rows.all()]
    return [rule for rule in rules if rule.id != except_id]


async def _scope_errors(session: AsyncSession, rule: Rule, prefix: str) -> list[FieldError]:
    """Stores, levels and segments/tags the rule names must exist in the chain."""
    errors: list[FieldError] = []
    if rule.stores:
        known = set((await session.scalars(select(Store.id).where(Store.id.in_(rule.stores)))).all())
        errors += [
            FieldError(field=f"{prefix}.stores.{n}", message=f"no store {s!r}")
            for n, s in enumerate(rule.stores)
            if s not in known
        ]
    if rule.member_levels:
        levels = {level.code for level in (await load_levels(session)).levels}
        errors += [
            FieldError(
                field=f"{prefix}.member_levels.{n}", message=f"no level {code!r} in the levels configuration"
            )
            for n, code in enumerate(rule.member_levels)
            if code not in levels
        ]
    if rule.member_segments:
        tags = set(
            (
                await session.scalars(select(MemberTag.code).where(MemberTag.code.in_(rule.member_segments)))
            ).all()
        )
        errors += [
            FieldError(
                field=f"{prefix}.member_segments.{n}",
                message=f"{name!r} is neither an RFM segment ({', '.join(SEGMENTS)}) nor a tag code",
            )
            for n, name in enumerate(rule.member_segments)
            if name not in SEGMENTS and name not in tags
        ]
    return errors


async def _checked(session: AsyncSession, raw: dict[str, Any], promotion_id: str, prefix: str) -> Rule:
    """The rule with the promotion's id, checked alone and against every other active promotion.

    The candidate goes last so that an exclusive-overlap error names its `priority`.
    """
    candidate = {**raw, "id": promotion_id}
    others = await _active_rules(session, except_id=promotion_id)
    last = len(others)
    found = validate_rules([*others, candidate], path="rules")
    errors: list[FieldError] = []
    for error in found:
        field = error.field
        mine = f"rules.{last}"
        if field == mine or field.startswith(mine + "."):
            field = prefix + field[len(mine) :]
        errors.append(FieldError(field=field, message=error.message))
    if errors:
        raise InvalidPromotion(errors)
    rule = _RULE.validate_python(candidate)
    scope = await _scope_errors(session, rule, prefix)
    if scope:
        raise InvalidPromotion(scope)
    return rule


def _version_row(promotion: Promotion, note: str) -> PromotionVersion:
    return PromotionVersion(
        promotion_id=promotion.id,
        version=promotion.version,
        status=promotion.status,
        rule=promotion.rule,
        note=note[:500],
        created_by=promotion.updated_by,
        created_at=promotion.updated_at,
    )


async def create_promotion(
    session: AsyncSession, raw: dict[str, Any], *, actor: str, note: str = "", prefix: str = "rule"
) -> Promotion:
    """A new promotion at version 1 (active; it reaches the stores at the next publish)."""
    if "id" in raw:
        raise InvalidPromotion(
            [FieldError(field=f"{prefix}.id", message="the hub gives the promotion its id")]
        )
    promotion_id = str(new_id())
    rule = await _checked(session, raw, promotion_id, prefix)
    now = _now()
    promotion = Promotion(
        id=promotion_id,
        name=rule.name,
        kind=rule.kind,
        version=1,
        status=PromotionStatus.ACTIVE.value,
        rule=rule.model_dump(mode="json"),
        created_by=actor,
        created_at=now,
        updated_by=actor,
        updated_at=now,
    )
    session.add(promotion)
    session.add(_version_row(promotion, note))
    await session.flush()
    return promotion


async def get_promotion(session: AsyncSession, promotion_id: str) -> Promotion:
    """The promotion, or `NotFound`."""
    promotion = await session.get(Promotion, promotion_id, populate_existing=True)
    if promotion is None:
        raise NotFound(f"no promotion {promotion_id}")
    return promotion


async def list_promotions(
    session: AsyncSession, *, status: PromotionStatus | None = None
) -> Sequence[Promotion]:
    """Promotions, newest first."""
    query = select(Promotion).order_by(Promotion.id.desc())
    if status is not None:
        query = query.where(Promotion.status == status.value)
    return (await session.scalars(query)).all()


async def list_versions(session: AsyncSession, promotion_id: str) -> Sequence[PromotionVersion]:
    """Every version of a promotion, oldest first."""
    await get_promotion(session, promotion_id)
    return (
        await session.scalars(
            select(PromotionVersion)
            .where(PromotionVersion.promotion_id == promotion_id)
            .order_by(PromotionVersion.version)
        )
    ).all()


async def _next_version(
    session: AsyncSession, promotion_id: str, expected: int | None, actor: str, **values: Any
) -> Promotion:
    """Move to version+1 if still at `expected` (None: whatever it is now); `PromotionConflict` otherwise."""
    current = await get_promotion(session, promotion_id)
    seen = current.version if expected is None else expected
    moved = await session.execute(
        update(Promotion)
        .where(Promotion.id == promotion_id, Promotion.version == seen)
        .values(version=seen + 1, updated_by=actor, updated_at=_now(), **values)
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        now_at = (await get_promotion(session, promotion_id)).version
        raise PromotionConflict(
            f"promotion {promotion_id} is at version {now_at}, not {seen}; reload it and change it again"
        )
    return await get_promotion(session, promotion_id)


async def update_promotion(
    session: AsyncSession,
    promotion_id: str,
    raw: dict[str, Any],
    *,
    expected_version: int | None,
    actor: str,
    note: str = "",
    prefix: str = "rule",
) -> Promotion:
    """Replace the rule (schedule, scope, values): a new version; the old ones stay readable."""
    if raw.get("id", promotion_id) != promotion_id:
        raise InvalidPromotion([FieldError(field=f"{prefix}.id", message="a promotion keeps its id")])
    await get_promotion(session, promotion_id)
    rule = await _checked(session, raw, promotion_id, prefix)
    promotion = await _next_version(
        session,
        promotion_id,
        expected_version,
        actor,
        name=rule.name,
        kind=rule.kind,
        rule=rule.model_dump(mode="json"),
    )
    session.add(_version_row(promotion, note))
    return promotion


async def set_status(
    session: AsyncSession, promotion_id: str, status: PromotionStatus, *, actor: str, note: str = ""
) -> Promotion:
    """Archive (left out of the next publish) or reactivate (checked again against the others)."""
    promotion = await get_promotion(session, promotion_id)
    if promotion.status == status.value:
        return promotion
    if status is PromotionStatus.ACTIVE:
        await _checked(session, {k: v for k, v in promotion.rule.items() if k != "id"}, promotion_id, "rule")
    promotion = await _next_version(session, promotion_id, promotion.version, actor, status=status.value)
    session.add(_version_row(promotion, note))
    return promotion


def _in_store(rule: Rule, store: str) -> bool:
    return not rule.stores or store in rule.stores


async def rule_set_for(
    session: AsyncSession, store: str, *, version: int = 0, now: datetime | None = None
) -> RuleSet:
    """The rule set a publish gives `store`: active promotions in its scope that have not ended."""
    now = now or _now()
    rules = [r for r in await _active_rules(session) if _in_store(r, store) and _active(r, now)]
    return RuleSet(version=version, rules=rules)


async def preview(
    session: AsyncSession, cart: Cart, *, draft: dict[str, Any] | None = None
) -> PromotionResult:
    """Evaluate a sample cart with the engine the tills run, on the rule set its store would get.

    `draft` is a rule not saved yet (no id), checked as a new promotion and added to the set.
    """
    rules = await rule_set_for(session, cart.store)
    if draft is not None:
        rule = await _checked(session, draft, "draft", "draft")
        rules = RuleSet(version=rules.version, rules=[*rules.rules, rule])
    return evaluate(rules, cart)


@dataclass(frozen=True)
class Published:
    """A publish: its rule set version and, per store, the snapshot sent (or queued)."""

    version: int
    snapshots: dict[str, Snapshot]
    rule_counts: dict[str, int]


async def publish(db: Database, *, actor: str, stores: Sequence[str] | None = None) -> Published:
    """Build each store's rule set and save it as the store's next `promotions` snapshot.

    The caller sends the snapshots (retained) through the broker link; a store that is
    offline gets the retained one when it reconnects.
    """
    now = _now()
    async with db.session() as session, session.begin():
        all_stores = list((await session.scalars(select(Store.id).order_by(Store.id))).all())
        targets = list(stores) if stores else all_stores
        missing = [s for s in targets if s not in all_stores]
        if missing:
            raise NotFound(f"unknown store(s): {', '.join(missing)}")
        active = await _active_rules(session)
        versions = dict(
            (
                await session.execute(
                    select(Promotion.id, Promotion.version).where(
                        Promotion.status == PromotionStatus.ACTIVE.value
                    )
                )
            ).all()
        )
        publication = PromotionPublication(
            published_by=actor,
            published_at=now,
            promotions={r.id: versions.get(r.id) for r in active},
            stores={},
        )
        session.add(publication)
        await session.flush()
        bodies = {
            store: RuleSet(
                version=publication.id,
                rules=[r for r in active if _in_store(r, store) and _active(r, now)],
            )
            for store in targets
        }
    snapshots: dict[str, Snapshot] = {}
    for store, body in bodies.items():
        snapshots[store] = await save_snapshot(
            db, store, SnapshotKind.PROMOTIONS, body.model_dump(mode="json")
        )
    async with db.session() as session, session.begin():
        row = await session.get(PromotionPublication, publication.id)
        if row is not None:
            row.stores = {
                store: {"snapshot_version": snap.version, "rules": [r.id for r in bodies[store].rules]}
                for store, snap in snapshots.items()
            }
    return Published(publication.id, snapshots, {store: len(body.rules) for store, body in bodies.items()})


def promotion_json(promotion: Promotion) -> dict[str, Any]:
    """A promotion as the API shows it."""
    return {
        "id": promotion.id,
        "name": promotion.name,
        "kind": promotion.kind,
        "version": promotion.version,
        "status": promotion.status,
        "rule": promotion.rule,
        "created_by": promotion.created_by,
        "created_at": promotion.created_at.isoformat(),
        "updated_by": promotion.updated_by,
        "updated_at": promotion.updated_at.isoformat(),
    }
