"""In-process event bus: till changes fan out to WebSocket clients (and later the kitchen).

Each subscriber has a bounded queue. Publishing never blocks the till: a subscriber whose
queue is full is dropped and told so, and its client reconnects and re-reads the state
(every event names the order, so a resync is one GET).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "EventBus", "Subscription"]

log = logging.getLogger(__name__)
QUEUE_SIZE = 256


@dataclass(frozen=True)
class Event:
    """`type` like "order.updated"; `order_id` lets a client follow one order."""

    type: str
    data: dict[str, Any]
    order_id: str | None = None


@dataclass(eq=False)  # identity: each subscriber is its own set member
class Subscription:
    """One listener; `overflowed` is set when it fell too far behind and was dropped."""

    order_id: str | None = None
    queue: asyncio.Queue[Event] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    overflowed: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, event: Event) -> bool:
        """True if this subscriber follows every order or this one."""
        return self.order_id is None or event.order_id == self.order_id


class EventBus:
    """Publish/subscribe with a bound per subscriber and drop-the-slow-one overflow."""

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()

    def subscribe(self, order_id: str | None = None) -> Subscription:
        """Start listening (to one order, or to all)."""
        sub = Subscription(order_id)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop listening."""
        self._subs.discard(sub)

    def publish(self, event: Event) -> None:
        """Deliver to every interested subscriber without waiting."""
        for sub in list(self._subs):
            if not sub.wants(event):
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                log.warning("dropping a WebSocket subscriber that fell %d events behind", QUEUE_SIZE)
                self._subs.discard(sub)
                sub.overflowed.set()

    def __len__(self) -> int:
        return len(self._subs)
