"""Outbox reads and acknowledgements, run inside journal transactions.

Rows leave the outbox only when the hub's `down/ack` covers them: a PUBACK proves only
that the broker has the message, not that the hub committed it.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from protocol import Event, EventBatch

__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_EVENTS", "apply_ack", "read_batch"]

MAX_BATCH_EVENTS = 200
# Below the codec's 256 KiB limit with room for the envelope, so a batch always decodes.
MAX_BATCH_BYTES = 200 * 1024


@dataclass(frozen=True)
class Ack:
    """Outcome of applying a `down/ack`."""

    acked_through: int
    deleted: int


def read_batch(
    conn: sqlite3.Connection,
    store: str,
    after_seq: int,
    *,
    max_events: int = MAX_BATCH_EVENTS,
    max_bytes: int = MAX_BATCH_BYTES,
) -> EventBatch | None:
    """The next contiguous run of events above `after_seq` in the current epoch, or None."""
    epoch = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0]
    rows = conn.execute(
        "SELECT seq, event_id, type, ts, body FROM outbox WHERE epoch = ? AND seq > ? ORDER BY seq LIMIT ?",
        (epoch, after_seq, max_events),
    ).fetchall()
    events: list[Event] = []
    size = 0
    for seq, event_id, kind, ts, body in rows:
        length = len(body.encode())
        if events and (seq != events[-1].seq + 1 or size + length > max_bytes):
            break
        size += length + 200
        events.append(
            Event(id=event_id, seq=seq, type=kind, ts=datetime.fromisoformat(ts), body=json.loads(body))
        )
    if not events:
        return None
    return EventBatch(store=store, epoch=epoch, seq_from=events[0].seq, seq_to=events[-1].seq, events=events)


def apply_ack(conn: sqlite3.Connection, epoch: int, acked_through: int) -> Ack | None:
    """Delete outbox rows the hub has committed; None if the ack is for another epoch or old."""
    meta = dict(
        conn.execute("SELECT key, value FROM meta WHERE key IN ('epoch', 'acked_through', 'next_seq')")
    )
    if epoch != meta["epoch"] or acked_through <= meta["acked_through"]:
        return None
    if acked_through >= meta["next_seq"]:
        raise ValueError(
            f"hub acked seq {acked_through}, but this store has only written up to {meta['next_seq'] - 1}"
        )
    deleted = conn.execute("DELETE FROM outbox WHERE epoch = ? AND seq <= ?", (epoch, acked_through)).rowcount
    conn.execute("UPDATE meta SET value = ? WHERE key = 'acked_through'", (acked_through,))
    return Ack(acked_through=acked_through, deleted=deleted)
