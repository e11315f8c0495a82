"""Wire models of the edge ↔ hub protocol (see DESIGN.md, "Edge ↔ hub protocol")."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Self
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    model_validator,
)

from protocol.ids import StoreId
from protocol.timeutil import UtcDatetime, to_utc
from protocol.topics import SnapshotKind

__all__ = [
    "Ack",
    "Command",
    "CommandResult",
    "Count",
    "DeviceHealth",
    "Envelope",
    "Epoch",
    "Event",
    "EventBatch",
    "Fen",
    "JsonObject",
    "Resend",
    "RpcReply",
    "RpcRequest",
    "Seq",
    "Snapshot",
    "Status",
    "WireModel",
    "offline_will",
]

# Ints are stored as BIGINT by the hub, so anything wider is refused at the boundary.
_INT64_MAX = 2**63 - 1

Fen = Annotated[StrictInt, Field(ge=-_INT64_MAX, le=_INT64_MAX)]
"""An amount of money in fen: a JSON integer, never a float or a string."""
Seq = Annotated[StrictInt, Field(ge=1, le=_INT64_MAX)]
"""A per-store event sequence number (starts at 1, never wraps)."""
Epoch = Annotated[StrictInt, Field(ge=1, le=_INT64_MAX)]
"""A journal epoch, bumped when a store's journal is restored or re-imaged."""
Count = Annotated[StrictInt, Field(ge=0, le=_INT64_MAX)]
"""A non-negative counter."""
_Name = Annotated[str, Field(min_length=1, max_length=64)]


def _require_finite(value: dict[str, Any]) -> dict[str, Any]:
    # NaN and Infinity are not JSON; accepting them would let one bad payload poison
    # storage (PostgreSQL JSONB refuses them) and they would re-encode as null.
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("NaN and Infinity are not allowed in JSON")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_require_finite)]
"""A free-form JSON object (message body, RPC params)."""


class WireModel(BaseModel):
    """Base of all wire models: immutable, and tolerant of fields added by newer peers."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Envelope(WireModel):
    """The generic {id, type, body} message shape."""

    id: UUID
    type: _Name
    body: JsonObject = Field(default_factory=dict)


class Command(Envelope):
    """A command from the hub to a store (down/cmd); the edge dedupes by id."""

    # A command that reaches a store after this (it was offline for days) is refused, not run.
    expires_at: UtcDatetime | None = None


class CommandResult(WireModel):
    """The outcome of a command, sent on up/cmd-result."""

    cmd_id: UUID
    ok: StrictBool
    detail: str = ""


class Event(WireModel):
    """One outbox event of a store."""

    id: UUID
    seq: Seq
    type: _Name
    ts: UtcDatetime
    body: JsonObject


class EventBatch(WireModel):
    """A contiguous run of outbox events, sent on up/events."""

    store: StoreId
    epoch: Epoch
    seq_from: Seq
    seq_to: Seq
    events: list[Event] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_contiguous(self) -> Self:
        if self.seq_to < self.seq_from:
            raise ValueError(f"seq_to {self.seq_to} is below seq_from {self.seq_from}")
        expected_count = self.seq_to - self.seq_from + 1
        if len(self.events) != expected_count:
            raise ValueError(
                f"seq_from {self.seq_from} to seq_to {self.seq_to} needs {expected_count}"
                f" events, got {len(self.events)}"
            )
        seen: set[UUID] = set()
        for index, event in enumerate(self.events):
            if event.seq != self.seq_from + index:
                raise ValueError(
                    f"events must run from seq {self.seq_from} without gaps:"
                    f" events[{index}] has seq {event.seq}, expected {self.seq_from + index}"
                )
            if event.id in seen:
                raise ValueError(f"event id {event.id} appears twice in the batch")
            seen.add(event.id)
        return self


class Ack(WireModel):
    """The hub has committed every event of this epoch up to acked_through."""

    epoch: Epoch
    acked_through: Count


class Resend(WireModel):
    """The hub asks a store to resend events of this epoch from from_seq on."""

    epoch: Epoch
    from_seq: Seq


class DeviceHealth(WireModel):
    """Health of one device attached to a store's edge."""

    id: str
    kind: str
    ok: StrictBool
    detail: str = ""


class Status(WireModel):
    """A store's retained status; the Last Will is just {"online": false}."""

    online: StrictBool
    store: StoreId | None = None
    epoch: Epoch | None = None
    acked_through: Count | None = None
    outbox_depth: Count = 0
    versions: dict[str, Count] = Field(default_factory=dict)
    devices: list[DeviceHealth] = Field(default_factory=list)
    software: str | None = None
    ts: UtcDatetime | None = None
    alarms: list[str] = Field(default_factory=list)


class Snapshot(WireModel):
    """A versioned full snapshot published retained on down/snapshot/{kind}."""

    kind: SnapshotKind
    version: Count
    ts: UtcDatetime
    body: JsonObject = Field(default_factory=dict)


class RpcRequest(WireModel):
    """An online-only operation with a deadline, on up/rpc or down/rpc."""

    id: UUID
    method: _Name
    params: JsonObject = Field(default_factory=dict)
    deadline: UtcDatetime
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)

    def expired(self, now: datetime) -> bool:
        """True if the deadline has passed at now (an aware datetime)."""
        return to_utc(now) >= self.deadline


class RpcReply(WireModel):
    """The reply to an RpcRequest: a result when ok, an error message otherwise."""

    id: UUID
    ok: StrictBool
    result: Any = None
    error: str | None = None

    @model_validator(mode="after")
    def _check_outcome(self) -> Self:
        if self.ok and self.error is not None:
            raise ValueError("a successful reply must not carry an error")
        if not self.ok and not self.error:
            raise ValueError("a failed reply must carry a non-empty error")
        if self.result is not None:
            _require_finite({"result": self.result})
        return self

    @classmethod
    def success(cls, request_id: UUID, result: Any = None) -> Self:
        """Build a successful reply."""
        return cls(id=request_id, ok=True, result=result)

    @classmethod
    def failure(cls, request_id: UUID, error: str) -> Self:
        """Build a failed reply."""
        return cls(id=request_id, ok=False, error=error)


def offline_will() -> Status:
    """Return the Last Will status a store's edge registers with the broker."""
    return Status(online=False)
