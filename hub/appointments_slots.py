"""Which resources are free when: a pure board of holds and shifts, no database.

The booking path loads a board for the resources it has locked and asks it whether a
start fits; on a conflict the same board, loaded over the next days, lists the next
free starts. Availability for the member app reads the same board without locks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

__all__ = ["Board", "Need", "Span"]

Span = tuple[datetime, datetime]


@dataclass(frozen=True)
class Need:
    """One thing a service needs, and the resources (ids, in order of preference) that can fill it."""

    label: str  # "staff with skill 'facial'", for refusals
    candidates: tuple[str, ...]


@dataclass
class Board:
    """Holds (buffer included) and staff shifts of the candidate resources over a window.

    A resource in `staff` can take a booking only inside one of its shifts (the service
    itself must fit; the buffer after it may run past the shift's end). Rooms and
    machines have no shifts and are free whenever nothing holds them.
    """

    duration: timedelta
    buffer: timedelta
    needs: list[Need]
    staff: set[str]
    busy: dict[str, list[Span]] = field(default_factory=dict)
    shifts: dict[str, list[Span]] = field(default_factory=dict)

    def add_hold(self, resource_id: str, span: Span) -> None:
        """Mark a resource busy for `span`."""
        self.busy.setdefault(resource_id, []).append(span)

    def add_shift(self, resource_id: str, span: Span) -> None:
        """Let a staff member work during `span`."""
        self.shifts.setdefault(resource_id, []).append(span)

    def is_free(self, resource_id: str, start: datetime) -> bool:
        """True if the resource can take a booking starting at `start`."""
        end = start + self.duration
        block_end = end + self.buffer
        if any(s < block_end and e > start for s, e in self.busy.get(resource_id, ())):
            return False
        if resource_id in self.staff:
            return any(s <= start and e >= end for s, e in self.shifts.get(resource_id, ()))
        return True

    def assign(self, start: datetime) -> list[str] | None:
        """One free resource per need (none twice), most constrained need first; None if any is missing."""
        picked: list[str] = []
        for need in self.needs:
            choice = next((r for r in need.candidates if r not in picked and self.is_free(r, start)), None)
            if choice is None:
                return None
            picked.append(choice)
        return picked

    def missing(self, start: datetime) -> str:
        """Which need cannot be filled at `start`, in words."""
        picked: list[str] = []
        for need in self.needs:
            choice = next((r for r in need.candidates if r not in picked and self.is_free(r, start)), None)
            if choice is None:
                return need.label
            picked.append(choice)
        return "nothing"

    def free_starts(
        self, after: datetime, until: datetime, *, step: timedelta, count: int
    ) -> list[tuple[datetime, list[str]]]:
        """The first `count` starts from `after` (rounded up to the `step` grid) before `until` that fit."""
        grid = int(step.total_seconds())
        epoch = int(after.timestamp())
        t = datetime.fromtimestamp(-(-epoch // grid) * grid, UTC)
        found: list[tuple[datetime, list[str]]] = []
        while t < until and len(found) < count:
            picked = self.assign(t)
            if picked is not None:
                found.append((t, picked))
            t += step
        return found

    def resources(self) -> Iterable[str]:
        """Every candidate resource id, sorted (the order rows are locked in)."""
        return sorted({r for need in self.needs for r in need.candidates})
