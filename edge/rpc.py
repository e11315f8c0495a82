"""Online-only operations: requests to the hub with a deadline, and the store's offline policy.

A request goes out on `up/rpc` and its reply comes back on `down/rpc`. A call that times
out has an UNKNOWN outcome (the hub may have done the work just before the deadline), so
callers that move money retry with the same idempotency key, which makes the hub return
the first outcome instead of doing the work twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from edge.errors import EdgeError
from protocol import RpcReply, RpcRequest, new_id, utcnow

__all__ = ["HubUnreachable", "OfflinePolicy", "RpcClient", "RpcFailed"]

log = logging.getLogger(__name__)
MAX_PENDING = 100  # a till has a handful of online operations in flight, never hundreds

Rule = Literal["refuse", "allow"]


class OfflinePolicy(BaseModel):
    """What the till does with an online-only operation while the hub cannot be reached.

    `refuse` (the default for all) stops the operation with a clear message, and the
    cashier takes cash or an external payment instead; `allow` lets the feature that owns
    the operation fall back to its own offline rule (e.g. a stored-value allowance).
    The store's `settings` snapshot can override edge.toml's `[offline]` table.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    stored_value: Rule = "refuse"
    coupons: Rule = "refuse"
    points: Rule = "refuse"
    # With stored_value = "allow": the most one member may pay from stored value at this
    # till while the hub is away, also capped by the balance the member had at lookup.
    stored_value_offline_max_fen: int = Field(20_000, ge=0, le=1_000_000)
    timeout_s: float = Field(3.0, ge=0.5, le=30, description="deadline of one request to the hub")

    def allows(self, method: str) -> bool:
        """True if `method` may fall back to its offline rule; unknown families never may."""
        family = method.partition(".")[0]
        rule = {"stored_value": self.stored_value, "coupon": self.coupons, "points": self.points}.get(family)
        return rule == "allow"


class HubUnreachable(EdgeError):
    """The hub did not answer: offline now, or no reply before the deadline."""

    def __init__(self, method: str, reason: str, *, offline_allowed: bool, outcome_unknown: bool = False):
        then = (
            "the store's offline policy allows it to continue offline"
            if offline_allowed
            else "this needs the hub, so it is refused; take cash or another payment, or try again later"
        )
        super().__init__(f"{method}: {reason}; {then}")
        self.method = method
        self.offline_allowed = offline_allowed
        # A timed-out request may still have been done at the hub; retry with the same key.
        self.outcome_unknown = outcome_unknown


class RpcFailed(EdgeError):
    """The hub answered and refused (e.g. not enough balance, unknown method)."""

    def __init__(self, method: str, error: str):
        super().__init__(f"{method}: {error}")
        self.method = method
        self.error = error


class RpcClient:
    """Send requests through the hub link and match replies by request id."""

    def __init__(
        self,
        publish: Callable[[RpcRequest], Awaitable[bool]],
        policy: Callable[[], OfflinePolicy],
    ):
        self._publish = publish
        self._policy = policy
        self._pending: dict[UUID, asyncio.Future[RpcReply]] = {}

    def on_reply(self, reply: RpcReply) -> None:
        """Called by the hub link for every `down/rpc`; late and unknown replies are dropped."""
        future = self._pending.get(reply.id)
        if future is None:
            log.info("reply to request %s arrived after its deadline; dropped", reply.id)
        elif not future.done():
            future.set_result(reply)

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Any:
        """The hub's result for `method`, or HubUnreachable / RpcFailed."""
        policy = self._policy()
        timeout = policy.timeout_s
        allowed = policy.allows(method)
        if len(self._pending) >= MAX_PENDING:
            raise HubUnreachable(method, "too many requests waiting for the hub", offline_allowed=allowed)
        request = RpcRequest(
            id=new_id(),
            method=method,
            params=params or {},
            deadline=utcnow() + timedelta(seconds=timeout),
            idempotency_key=idempotency_key,
        )
        future: asyncio.Future[RpcReply] = asyncio.get_running_loop().create_future()
        self._pending[request.id] = future
        try:
            if not await self._publish(request):
                raise HubUnreachable(method, "the hub is offline", offline_allowed=allowed)
            try:
                async with asyncio.timeout(timeout):
                    reply = await future
            except TimeoutError as err:
                raise HubUnreachable(
                    method,
                    f"no answer from the hub within {timeout:g} s",
                    offline_allowed=allowed,
                    outcome_unknown=True,
                ) from err
        finally:
            del self._pending[request.id]
        if not reply.ok:
            raise RpcFailed(method, reply.error or "refused")
        return reply.result
