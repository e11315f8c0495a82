"""Capped, jittered exponential backoff for every reconnect loop."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Delays that double from `initial` up to `cap`, each drawn with full jitter.

    Full jitter (a uniform draw in [initial/2, step]) keeps a chain's hundreds of edges
    from reconnecting in lock-step after the hub's broker restarts.
    """

    def __init__(
        self, initial: float = 0.5, cap: float = 30.0, *, rng: random.Random | None = None
    ):
        if not 0 < initial <= cap:
            raise ValueError(f"backoff needs 0 < initial <= cap, got {initial=} {cap=}")
        self.initial = initial
        self.cap = cap
        self._step = initial
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.failures = 0

    def next_delay(self) -> float:
        """Return the delay before the next attempt and grow the step."""
        delay = self._rng.uniform(self.initial / 2, self._step)
        self._step = min(self._step * 2, self.cap)
        self.failures += 1
        return delay

    def reset(self) -> None:
        """Forget past failures after a successful connection."""
        self._step = self.initial
        self.failures = 0
