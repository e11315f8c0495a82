"""The store's local HTTP API for phone apps and screens (aiohttp), problem+json errors.

`GET /api/v1/status`, the OpenAPI document and pairing are open; everything else needs a
device token, and changes need a staff session token (both as `Authorization: Bearer`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib import resources
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge import access
from edge.appointments import AppointmentDesk
from edge.commands import recent_messages
from edge.config import EdgeSettings
from edge.coupons import CouponDesk
from edge.device_manager import DeviceManager
from edge.devices import UnknownDevice
from edge.errors import TillError
from edge.events import EventBus
from edge.hublink import HubLink
from edge.journal import Journal
from edge.members import MemberDesk
from edge.rpc import HubUnreachable, RpcClient, RpcFailed
from edge.snapshots import Snapshots
from edge.till import Idempotency, Reply, Till
from protocol import PROBLEM_JSON, Problem, validation_problem
from protocol.version import SOFTWARE_VERSION

__all__ = ["StatusOut", "make_app"]

log = logging.getLogger(__name__)
VERSION = SOFTWARE_VERSION

SETTINGS = web.AppKey("settings", EdgeSettings)
JOURNAL = web.AppKey("journal", Journal)
LINK = web.AppKey("link", HubLink)
TILL = web.AppKey("till", Till)
SNAPSHOTS = web.AppKey("snapshots", Snapshots)
BUS = web.AppKey("bus", EventBus)
PAIRING = web.AppKey("pairing", access.PairingGuard)
RPC = web.AppKey("rpc", RpcClient)
DEVICES = web.AppKey("devices", DeviceManager)
MEMBERS = web.AppKey("members", MemberDesk)
COUPONS = web.AppKey("coupons", CouponDesk)
APPOINTMENTS = web.AppKey("appointments", AppointmentDesk)
PRINCIPAL = web.RequestKey("principal", access.Principal)
TOKEN = web.RequestKey("token", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)
_PUBLIC = {
    ("GET", "/api/v1/status"),
    ("HEAD", "/api/v1/status"),
    ("GET", "/api/v1/openapi.json"),
    ("POST", "/api/v1/devices/pair"),
    ("GET", "/display"),  # a static page; its WebSocket needs the screen's device token
    ("GET", "/kds"),  # the kitchen screen page, likewise
    ("GET", "/queue"),  # the waiting-area queue display, likewise
}
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"


class Body(BaseModel):
    """Base of request bodies: unknown fields are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StatusOut(BaseModel):
    """`GET /api/v1/status`: the store and its sync state."""

    model_config = ConfigDict(frozen=True)

    store: str
    store_name: str | None
    hub_online: bool
    outbox_pending: int
    epoch: int
    acked_through: int
    catalog_version: int | None
    last_sync: datetime | None = None
    alarms: list[str] = []
    version: str


class PairIn(Body):
    """Pair a phone or tablet with the code `storelink-edge pair` shows."""

    code: str = Field(pattern=r"^[0-9]{6}$")
    name: str = Field(min_length=1, max_length=50, pattern=_NO_CONTROL)


class SessionIn(Body):
    """Staff sign-in on a paired device."""

    staff_id: str = Field(min_length=1, max_length=32, pattern=_NO_CONTROL)
    pin: str = Field(pattern=r"^[0-9]{4,8}$")


def problem(status: int, title: str, detail: str | None = None, **headers: str) -> web.Response:
    """An `application/problem+json` response."""
    body = Problem(title=title, status=status, detail=detail).body()
    return web.json_response(body, status=status, content_type=PROBLEM_JSON, headers=headers, dumps=_dumps)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def reply_json(body: dict[str, Any], status: int = 200) -> web.Response:
    """A JSON response that keeps Chinese readable."""
    return web.json_response(body, status=status, dumps=_dumps)


class BadRequest(Exception):
    """A request that failed validation; carries its problem."""

    def __init__(self, prob: Problem):
        super().__init__(prob.detail or prob.title)
        self.problem = prob


async def read_body(request: web.Request, model: type[M], *, optional: bool = False) -> M:
    """Parse and validate the JSON body, raising `BadRequest` for anything malformed."""
    raw = await request.read()
    if optional and not raw.strip():
        raw = b"{}"
    elif request.content_type != "application/json":
        raise BadRequest(Problem(title="Unsupported media type", status=415, detail="send application/json"))
    try:
        return model.model_validate_json(raw)
    except ValidationError as err:
        first = err.errors()[0]
        if first["type"] == "json_invalid":
            raise BadRequest(Problem(title="Malformed JSON", status=400, detail=str(first["msg"]))) from err
        raise BadRequest(validation_problem(err, instance=request.path)) from err


_TITLES = {401: "Unauthorized", 403: "Forbidden", 404: "Not found", 409: "Conflict", 422: "Unprocessable"}


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error as problem+json; never leak a traceback."""
    try:
        return await handler(request)
    except BadRequest as err:
        body = err.problem.body()
        return web.json_response(body, status=err.problem.status, content_type=PROBLEM_JSON, dumps=_dumps)
    except UnknownDevice as err:
        return problem(404, "Not found", str(err))
    except HubUnreachable as err:
        return problem(503, "Hub unreachable", str(err), **{"Retry-After": "5"})
    except RpcFailed as err:
        return problem(502, "Refused by the hub", str(err))
    except TillError as err:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else {}
        return problem(err.status, _TITLES.get(err.status, "Refused"), err.detail, **headers)
    except ValidationError as err:  # a value that passed the request model but not the order model
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return problem(422, "Unprocessable", f"{where}: {first['msg']}")
    except web.HTTPException as err:
        if err.status < 400:
            raise
        return problem(err.status, err.reason)
    except sqlite3.Error:
        log.exception("journal error on %s %s", request.method, request.path)
        return problem(503, "Journal unavailable", "the sale was not recorded; try again")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem(500, "Internal server error", "the error was logged")


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if request.path in ("/api/v1/events", "/api/v1/kds/live", "/api/v1/queue/live"):
        return request.query.get("token")  # browsers cannot set headers on a WebSocket
    return None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every route but the public ones needs a device or session token: access fails closed."""
    if (request.method, request.path) in _PUBLIC:
        return await handler(request)
    token = _bearer(request)
    if token is None:
        raise access.AccessError(
            "missing token; pair this device first (POST /api/v1/devices/pair)", status=401
        )
    snapshots = request.app[SNAPSHOTS]
    request[PRINCIPAL] = await access.resolve_token(request.app[JOURNAL], token, snapshots.staff)
    request[TOKEN] = token
    return await handler(request)


def principal(request: web.Request) -> access.Principal:
    """The caller, set by `auth_middleware`."""
    return request[PRINCIPAL]


def idempotency(request: web.Request, body: bytes) -> Idempotency | None:
    """The request's `Idempotency-Key`, scoped to its device, if it sent one."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 100 or not key.isprintable():
        raise BadRequest(
            Problem(title="Bad Idempotency-Key", status=400, detail="use 1-100 printable characters")
        )
    return Idempotency.of(principal(request).device_id, key, request.method, request.path, body)


async def status(request: web.Request) -> web.Response:
    """Store id, hub link state and journal sync counters."""
    state = await request.app[JOURNAL].state()
    settings = request.app[SETTINGS]
    catalog = request.app[SNAPSHOTS].catalog
    body = StatusOut(
        store=settings.store,
        store_name=settings.store_name,
        hub_online=request.app[LINK].connected.is_set(),
        outbox_pending=state.outbox_pending,
        epoch=state.epoch,
        acked_through=state.acked_through,
        catalog_version=catalog.version if catalog else None,
        last_sync=request.app[LINK].last_ack_at,
        alarms=request.app[LINK].alarms,
        version=VERSION,
    )
    return web.json_response(text=body.model_dump_json())


async def pair(request: web.Request) -> web.Response:
    """Trade a pairing code for a device token."""
    body = await read_body(request, PairIn)
    device_id, token = await access.pair_device(
        request.app[JOURNAL], body.code, body.name, guard=request.app[PAIRING], address=request.remote or "?"
    )
    response = reply_json({"device_id": device_id, "token": token}, 201)
    response.headers["Cache-Control"] = "no-store"
    return response


async def sign_in(request: web.Request) -> web.Response:
    """Staff PIN sign-in on this device → session token."""
    body = await read_body(request, SessionIn)
    token, expires, member = await access.sign_in(
        request.app[JOURNAL],
        request.app[SNAPSHOTS].staff,
        principal(request).device_id,
        body.staff_id,
        body.pin,
    )
    staff = {"id": member.id, "name": member.name, "role": member.role.value}
    response = reply_json({"token": token, "expires_at": _iso(expires), "staff": staff}, 201)
    response.headers["Cache-Control"] = "no-store"
    return response


async def sign_out(request: web.Request) -> web.Response:
    """End the session used for this request."""
    await access.sign_out(request.app[JOURNAL], request[TOKEN])
    return web.Response(status=204)


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


async def hub_check(request: web.Request) -> web.Response:
    """Round trip to the hub (RPC `ping`) and the snapshot versions it holds for this store."""
    rpc = request.app[RPC]
    loop = asyncio.get_running_loop()
    start = loop.time()
    await rpc.call("ping")
    rtt_ms = round((loop.time() - start) * 1000, 1)
    hub_versions: dict[str, int] = (await rpc.call("catalog.version"))["versions"]
    local = request.app[SNAPSHOTS].applied.versions
    behind = sorted(kind for kind, version in hub_versions.items() if local.get(kind, 0) < version)
    return reply_json(
        {"rtt_ms": rtt_ms, "hub_versions": hub_versions, "local_versions": local, "behind": behind}
    )


async def messages(request: web.Request) -> web.Response:
    """Head office's latest messages to this store, newest first."""
    found = await request.app[JOURNAL].read(recent_messages)
    return reply_json({"messages": found})


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document of the local API."""
    from edge.openapi import openapi_document  # noqa: PLC0415 - built on demand

    return reply_json(openapi_document(VERSION, request.app.router))


async def staff_command(
    request: web.Request, model: type[M], permission: str, *, optional: bool = False
) -> tuple[M, access.StaffMember, Idempotency | None]:
    """Validate the body, check the permission, take the idempotency key: before any write."""
    body = await read_body(request, model, optional=optional)
    staff = principal(request).require(permission)
    return body, staff, idempotency(request, await request.read())


def answer(reply: Reply) -> web.Response:
    """A till `Reply` as JSON."""
    return reply_json(reply.body, reply.status)


@functools.cache
def _static_text(name: str) -> str:
    return resources.files("edge").joinpath("static", name).read_text(encoding="utf-8")


def static_page(name: str) -> web.Response:
    """One of the edge's own pages (`edge/static/`), read from the package once, never cached by browsers.

    Screens keep these pages open for days; "no-cache" makes a reload after an upgrade fetch the new one.
    """
    return web.Response(
        text=_static_text(name),
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


def make_app(
    settings: EdgeSettings,
    *,
    journal: Journal,
    link: HubLink,
    snapshots: Snapshots,
    till: Till,
    bus: EventBus,
    rpc: RpcClient,
    devices: DeviceManager,
) -> web.Application:
    """Build the local API around the daemon's shared parts."""
    from edge import (  # noqa: PLC0415 - they import helpers from this module
        api_appointments,
        api_coupons,
        api_devices,
        api_kds,
        api_members,
        api_queue,
        api_stock,
        api_tables,
        api_till,
    )

    app = web.Application(middlewares=[problem_middleware, auth_middleware], client_max_size=1024**2)
    app[SETTINGS] = settings
    app[JOURNAL] = journal
    app[LINK] = link
    app[SNAPSHOTS] = snapshots
    app[TILL] = till
    app[BUS] = bus
    app[RPC] = rpc
    app[DEVICES] = devices
    app[MEMBERS] = MemberDesk(till, rpc, lambda: snapshots.offline_policy(settings.offline))
    app[APPOINTMENTS] = AppointmentDesk(till, rpc)
    app[COUPONS] = CouponDesk(till, rpc)
    app[PAIRING] = access.PairingGuard()
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_post("/api/v1/devices/pair", pair)
    app.router.add_post("/api/v1/sessions", sign_in)
    app.router.add_delete("/api/v1/sessions", sign_out)
    app.router.add_get("/api/v1/hub/check", hub_check)
    app.router.add_get("/api/v1/messages", messages)
    api_till.add_routes(app)
    api_devices.add_routes(app)
    api_members.add_routes(app)
    api_coupons.add_routes(app)
    api_stock.add_routes(app)
    api_kds.add_routes(app)
    api_queue.add_routes(app)
    api_appointments.add_routes(app)
    api_tables.add_routes(app)
    return app
