"""Commands to stores: created by head office, re-sent until the store reports a result.

A store may be offline for hours and MQTT keeps nothing for a store that is not
connected, so the hub owns delivery: a pending command is published again on every
re-send round until `up/cmd-result` arrives or it expires. The edge runs each command id
once and answers repeats with the recorded result, so re-sending is always safe.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from sqlalchemy import or_, select, update

from hub.db import AsyncSession, Database
from hub.errors import NotFound
from hub.models import Store, StoreCommand
from protocol import Command, CommandResult, new_id

__all__ = [
    "add_command",
    "create_command",
    "due_commands",
    "get_command",
    "list_commands",
    "mark_sent",
    "record_result",
]

log = logging.getLogger(__name__)
RESEND_AFTER = timedelta(seconds=15)
MAX_PER_ROUND = 500


def to_wire(row: StoreCommand) -> Command:
    """The `down/cmd` message for a stored command."""
    return Command(id=UUID(row.id), type=row.type, body=row.body, expires_at=row.expires_at)


async def create_command(
    db: Database,
    store: str,
    command_type: str,
    body: dict[str, Any],
    *,
    created_by: str,
    expires_in: timedelta | None = None,
) -> StoreCommand:
    """Record a new pending command for `store`."""
    async with db.session() as session, session.begin():
        if await session.get(Store, store) is None:
            raise NotFound(f"no store '{store}'")
        return add_command(session, store, command_type, body, created_by=created_by, expires_in=expires_in)


def add_command(
    session: AsyncSession,
    store: str,
    command_type: str,
    body: dict[str, Any],
    *,
    created_by: str,
    expires_in: timedelta | None = None,
) -> StoreCommand:
    """Add a pending command to the caller's transaction: it is sent only if that commits
    (a transfer approved and its shipping task for the store are one decision)."""
    now = datetime.now(UTC)
    # Validates type and body exactly as the store will decode them.
    expires_at = now + expires_in if expires_in else None
    wire = Command(id=new_id(), type=command_type, body=body, expires_at=expires_at)
    row = StoreCommand(
        id=str(wire.id),
        store=store,
        type=wire.type,
        body=wire.body,
        created_by=created_by[:64],
        created_at=now,
        expires_at=wire.expires_at,
        state="pending",
        detail="",
        sent_count=0,
    )
    session.add(row)
    return row


async def get_command(db: Database, store: str, command_id: str) -> StoreCommand:
    """One command of `store`."""
    async with db.session() as session:
        row = await session.get(StoreCommand, command_id)
    if row is None or row.store != store:
        raise NotFound(f"store '{store}' has no command {command_id}")
    return row


async def list_commands(db: Database, store: str, *, limit: int = 50) -> list[StoreCommand]:
    """The newest commands of `store`."""
    async with db.session() as session:
        query = (
            select(StoreCommand)
            .where(StoreCommand.store == store)
            .order_by(StoreCommand.created_at.desc())
            .limit(limit)
        )
        return list((await session.scalars(query)).all())


async def due_commands(db: Database, now: datetime, store: str | None = None) -> list[tuple[str, Command]]:
    """Pending commands of online stores not sent within RESEND_AFTER; expired ones are closed.

    With `store` (it has just come online), all of that store's pending commands.
    """
    async with db.session() as session, session.begin():
        await session.execute(
            update(StoreCommand)
            .where(StoreCommand.state == "pending", StoreCommand.expires_at <= now)
            .values(state="expired", detail="expired before the store reported a result", completed_at=now)
        )
        query = select(StoreCommand).where(StoreCommand.state == "pending")
        if store is not None:
            query = query.where(StoreCommand.store == store)
        else:
            query = query.join(Store, Store.id == StoreCommand.store).where(
                Store.online.is_(True),
                or_(StoreCommand.last_sent_at.is_(None), StoreCommand.last_sent_at <= now - RESEND_AFTER),
            )
        query = query.order_by(StoreCommand.created_at).limit(MAX_PER_ROUND)
        rows = (await session.scalars(query)).all()
        return [(row.store, to_wire(row)) for row in rows]


async def mark_sent(db: Database, command_ids: list[str], now: datetime) -> None:
    """Note that these commands were published."""
    if not command_ids:
        return
    async with db.session() as session, session.begin():
        await session.execute(
            update(StoreCommand)
            .where(StoreCommand.id.in_(command_ids))
            .values(sent_count=StoreCommand.sent_count + 1, last_sent_at=now)
        )


async def record_result(db: Database, store: str, result: CommandResult) -> bool:
    """Store a store's result; False if it is not that store's pending command (logged)."""
    async with db.session() as session, session.begin():
        row = await session.get(StoreCommand, str(result.cmd_id), with_for_update=True)
        if row is None or row.store != store:
            log.warning("store %s reported a result for command %s, not its own", store, result.cmd_id)
            return False
        if row.state != "pending":
            return False  # a repeat of a result we already have
        row.state = "done" if result.ok else "failed"
        row.detail = result.detail[:1000]
        row.completed_at = datetime.now(UTC)
    log.info("store %s command %s (%s): %s %s", store, row.id, row.type, row.state, row.detail)
    return True
