"""Capped, jittered exponential backoff for every reconnect loop."""

from __future__ import annotations

import random
import time

__all__ = ["Backoff"]


class Backoff:
    """Delays that double from `initial` up to `cap`, each drawn at random below the step.

    The random draw keeps a chain's hundreds of edges from reconnecting in lock-step
    after the hub's broker restarts. The step only goes back to `initial` once a
    connection has stayed up for `stable_after` seconds, so a link that is accepted and
    then dropped at once (duplicate client, ACL kick) does not spin in a tight loop.
    """

    def __init__(
        self,
        initial: float = 0.5,
        cap: float = 30.0,
        *,
        stable_after: float = 10.0,
        rng: random.Random | None = None,
    ):
        if not 0 < initial <= cap:
            raise ValueError(f"backoff needs 0 < initial <= cap, got {initial=} {cap=}")
        self.initial = initial
        self.cap = cap
        self.stable_after = stable_after
        self._step = initial
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._connected_at: float | None = None

    def connected(self) -> None:
        """Note that a connection was just established."""
        self._connected_at = time.monotonic()

    @property
    def was_connected(self) -> bool:
        """True if the attempt that just ended had connected."""
        return self._connected_at is not None

    def next_delay(self) -> float:
        """Return the delay before the next attempt and grow the step."""
        if self._connected_at is not None:
            if time.monotonic() - self._connected_at >= self.stable_after:
                self._step = self.initial
            self._connected_at = None
        delay = self._rng.uniform(self.initial / 2, self._step)
        self._step = min(self._step * 2, self.cap)
        return delay
