"""Small asyncio helpers shared by edge and hub loops."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from protocol.backoff import Backoff

__all__ = ["cancel_and_wait", "retry_forever", "wait_for_stop_signal"]


async def cancel_and_wait(task: asyncio.Task[Any] | None, log: logging.Logger) -> None:
    """Cancel a background task and wait for it, re-raising only a cancel aimed at us.

    A task that already died is not silent: its exception is logged here.
    """
    if task is None:
        return
    if task.done():
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s had failed", task.get_name(), exc_info=task.exception())
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


async def retry_forever(
    attempt: Callable[[], Awaitable[None]],
    *,
    backoff: Backoff,
    what: str,
    log: logging.Logger,
    expected: tuple[type[Exception], ...],
) -> None:
    """Run `attempt` again and again with backoff; it ends when its connection ends.

    `expected` errors (the transport's) log one warning per state change; anything else
    is logged with its traceback, and the loop still goes on, so no dependency can kill it.
    """
    first = True
    while True:
        try:
            await attempt()
        except* expected as group:
            if first or backoff.was_connected:
                log.warning("%s unreachable (%s); retrying", what, group.exceptions[0])
        except* Exception as group:
            log.error("%s failed; retrying", what, exc_info=group.exceptions[0])
        first = False
        await asyncio.sleep(backoff.next_delay())


async def wait_for_stop_signal() -> None:
    """Return on SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
