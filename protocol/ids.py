"""UUIDv7 ids and store ids."""

from __future__ import annotations

import re
import secrets
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator

from protocol.errors import InvalidStoreId

__all__ = [
    "STORE_ID_PATTERN",
    "StoreId",
    "id_timestamp",
    "new_id",
    "validate_store_id",
]

STORE_ID_PATTERN = r"[a-z0-9][a-z0-9-]{0,31}"

_STORE_ID_RE = re.compile(STORE_ID_PATTERN, re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_MS = (1 << 48) - 1
_COUNTER_MAX = (1 << 12) - 1
# The counter restarts at a random value below half its range each millisecond, which
# leaves at least 2048 ids per millisecond before it has to borrow the next millisecond.
_COUNTER_SEED_BITS = 11

_lock = threading.Lock()
_last_ms = -1
_counter = 0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _next_stamp() -> tuple[int, int]:
    global _last_ms, _counter  # noqa: PLW0603 - process-wide state is the point of a monotonic id
    now = _now_ms()
    with _lock:
        if now > _last_ms:
            _last_ms = now
            _counter = secrets.randbits(_COUNTER_SEED_BITS)
        else:
            # Same millisecond, or the wall clock stepped back: keep counting from the
            # last stamp so ids stay strictly increasing (RFC 9562 §6.2, method 1).
            _counter += 1
            if _counter > _COUNTER_MAX:
                _last_ms += 1
                _counter = 0
        return _last_ms, _counter


def new_id() -> uuid.UUID:
    """Return a new UUIDv7 (RFC 9562), strictly increasing within this process."""
    ms, counter = _next_stamp()
    value = (ms & _MAX_MS) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | secrets.randbits(62)
    return uuid.UUID(int=value)


def id_timestamp(value: uuid.UUID) -> datetime:
    """Return the UTC creation time embedded in a UUIDv7."""
    if not isinstance(value, uuid.UUID):
        raise TypeError(f"expected a UUID, not {type(value).__name__}")
    if value.variant != uuid.RFC_4122 or value.version != 7:
        raise ValueError(f"{value} is not a version 7 UUID, so it carries no timestamp")
    return _EPOCH + timedelta(milliseconds=value.int >> 80)


def validate_store_id(value: str) -> str:
    """Return value if it is a valid store id, else raise InvalidStoreId."""
    if not isinstance(value, str) or _STORE_ID_RE.fullmatch(value) is None:
        raise InvalidStoreId(value)
    return value


StoreId = Annotated[str, AfterValidator(validate_store_id)]
"""A store id as a pydantic field type: 1-32 of a-z, 0-9 and '-', not starting with '-'."""
