"""Appointments at the store's desk: the day's bookings and check-in, both asked of the hub.

The hub owns the schedule (`hub.appointments`), so this is thin: a read of the day and a
keyed check-in RPC (`appointment.checkin`), whose reply is kept with the request's
Idempotency-Key and audited at the till. A retry of the same check-in gets the same
answer; the hub takes a punch-card use at most once.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from edge.access import StaffMember
from edge.errors import TillError
from edge.rpc import HubUnreachable, RpcClient, RpcFailed
from edge.till import Idempotency, Reply, Till

__all__ = ["AppointmentDesk"]


class AppointmentDesk:
    """The desk's appointment operations."""

    def __init__(self, till: Till, rpc: RpcClient):
        self._till = till
        self._rpc = rpc

    async def _call(self, method: str, params: dict[str, Any], what: str, key: str | None = None) -> Any:
        try:
            return await self._rpc.call(method, params, idempotency_key=key)
        except HubUnreachable as err:
            if err.outcome_unknown:
                raise TillError(
                    f"{what}: the hub did not answer in time and may have done it; "
                    "send the same request again (same Idempotency-Key) to find out",
                    status=503,
                ) from None
            raise TillError(
                f"{what}: {err}; appointments need the hub, try again when it is back", status=503
            ) from None
        except RpcFailed as err:
            raise TillError(err.error, status=409) from None

    async def day(self, day: date | None = None) -> dict[str, Any]:
        """The store's bookings of a local day (today by default), with member names and masked phones."""
        params = {"day": day.isoformat()} if day is not None else {}
        return dict(await self._call("appointment.today", params, "reading the appointments"))

    async def check_in(
        self, staff: StaffMember, appointment_id: str, *, use_pass: bool, idem: Idempotency | None
    ) -> Reply:
        """Check a member in; the hub takes a punch-card use if one covers the service."""
        if idem is None:
            raise TillError(
                "checking in needs an Idempotency-Key header, so that a retry never takes two pass uses",
                status=428,
            )
        stored = await self._till.stored_reply(idem)
        if stored is not None:
            return stored
        params = {"appointment_id": appointment_id, "use_pass": use_pass}
        result = dict(await self._call("appointment.checkin", params, "checking in", idem.key))
        used = result.get("pass_use") or {}
        paid = (
            f"pass {used.get('pass_id')} ({used.get('remaining')} left)"
            if used
            else f"to pay {result.get('to_pay_fen')} fen"
        )
        detail = f"appointment {appointment_id} checked in: {paid}"
        return await self._till.record_hub_action(
            staff, "appointment.checkin", detail, {"check_in": result}, idem
        )
