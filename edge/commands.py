"""Commands from head office (`down/cmd`): each runs at most once, whatever the broker redelivers.

A command's effect and its record are written in ONE journal transaction, keyed by the
command id. A redelivered command (QoS 1, the hub re-sending until it hears a result, a
restart between commit and reply) finds its record and gets the stored result again
instead of running twice.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.events import Event, EventBus
from edge.journal import Journal
from protocol import Command, CommandResult, utcnow

__all__ = ["CommandRunner", "HubMessage", "recent_messages"]

log = logging.getLogger(__name__)
KEEP_MESSAGES = 50

# A handler runs inside the journal transaction that records the command, so its effect
# and the "done" mark commit together. It returns the result detail or raises ValueError
# (refused: recorded as failed, never retried).
Handler = Callable[[sqlite3.Connection, Command], str]


class HubMessage(BaseModel):
    """Body of a `message` command: a notice from head office for the store's screens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(min_length=1, max_length=500)
    level: str = Field("info", pattern=r"^(info|warning|urgent)$")


def _message(conn: sqlite3.Connection, command: Command) -> str:
    try:
        HubMessage.model_validate(command.body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ValueError(f"{where}: {first['msg']}") from err
    return "shown on the store's screens"


@dataclass(frozen=True)
class _Outcome:
    result: CommandResult
    new: bool


class CommandRunner:
    """Run hub commands exactly once and remember their results in the journal."""

    def __init__(self, journal: Journal, bus: EventBus | None = None):
        self._journal = journal
        self._bus = bus
        self._handlers: dict[str, Handler] = {"message": _message}

    def register(self, command_type: str, handler: Handler) -> None:
        """Add a command type (devices, transfers and kitchens register theirs)."""
        self._handlers[command_type] = handler

    def _run(self, conn: sqlite3.Connection, command: Command) -> _Outcome:
        row = conn.execute("SELECT ok, detail FROM commands WHERE id = ?", (str(command.id),)).fetchone()
        if row is not None:
            return _Outcome(CommandResult(cmd_id=command.id, ok=bool(row[0]), detail=row[1]), new=False)
        now = utcnow()
        handler = self._handlers.get(command.type)
        if command.expires_at is not None and command.expires_at <= now:
            ok, detail = False, f"expired at {command.expires_at.isoformat()} before it reached the store"
        elif handler is None:
            known = ", ".join(sorted(self._handlers))
            ok, detail = False, f"this store does not know the command type {command.type!r} (knows: {known})"
        else:
            conn.execute("SAVEPOINT command")
            try:
                ok, detail = True, handler(conn, command)
                conn.execute("RELEASE command")
            except ValueError as err:
                # Undo whatever the handler wrote, but still record the refusal.
                conn.execute("ROLLBACK TO command")
                conn.execute("RELEASE command")
                ok, detail = False, str(err)
        conn.execute(
            "INSERT INTO commands (id, type, body, received_at, ok, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (
                str(command.id),
                command.type,
                json.dumps(command.body, ensure_ascii=False),
                now.isoformat(),
                int(ok),
                detail[:1000],
            ),
        )
        return _Outcome(CommandResult(cmd_id=command.id, ok=ok, detail=detail[:1000]), new=True)

    async def run(self, command: Command) -> CommandResult:
        """Run `command` once; a repeat gets the first run's result."""
        outcome = await self._journal.transaction(lambda conn: self._run(conn, command))
        if outcome.new:
            log.info(
                "command %s (%s): %s",
                command.id,
                command.type,
                "done" if outcome.result.ok else f"refused: {outcome.result.detail}",
            )
            if outcome.result.ok and self._bus is not None:
                self._bus.publish(Event(f"hub.{command.type}", {"id": str(command.id), **command.body}))
        else:
            log.info("command %s arrived again; sending its recorded result", command.id)
        return outcome.result


def recent_messages(conn: sqlite3.Connection, limit: int = KEEP_MESSAGES) -> list[dict[str, object]]:
    """The newest head-office messages, newest first (for till screens that just started)."""
    rows = conn.execute(
        "SELECT id, body, received_at FROM commands WHERE type = 'message' AND ok = 1 "
        "ORDER BY received_at DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [{"id": row[0], **json.loads(row[1]), "received_at": row[2]} for row in rows]
