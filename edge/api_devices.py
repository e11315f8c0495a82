"""Device routes of the local API: the registry and health, tests, previews, scans, the scale,
the cash drawer and the customer display page."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from drivers import DriverError
from edge.api import (
    DEVICES,
    JOURNAL,
    TILL,
    BadRequest,
    Body,
    answer,
    principal,
    reply_json,
    staff_command,
    static_page,
)
from edge.device_manager import preview
from edge.inputs import InputManager
from protocol import Problem

__all__ = ["add_routes"]

_TEXT = r"^[^\x00-\x1f\x7f]*$"


class ScanIn(Body):
    """A code read by something other than a registered scanner: a phone camera, a file, a test."""

    code: str = Field(min_length=1, max_length=512, pattern=r"^[^\x00-\x1c\x1e-\x1f\x7f]*$")
    source: str = Field("camera", pattern=r"^(camera|api|file)$")


class DrawerIn(Body):
    """Why the drawer is opened without a sale; goes into the audit with the staff member."""

    reason: str = Field(min_length=1, max_length=100, pattern=_TEXT)


async def list_devices(request: web.Request) -> web.Response:
    """Every registered device with its kind, role and health."""
    return reply_json({"devices": request.app[DEVICES].health()})


async def device_test(request: web.Request) -> web.Response:
    """Try a device (manager): test page, weight reading, display test screen, last scan."""
    principal(request).require("devices.test")
    try:
        result = await request.app[DEVICES].test(request.match_info["device"])
    except DriverError as err:
        raise BadRequest(Problem(title="Device not ready", status=503, detail=str(err))) from err
    return reply_json(result, 202 if "job" in result else 200)


async def device_preview(request: web.Request) -> web.Response:
    """What the device's newest jobs print, decoded from the bytes sent (`limit`, default 3)."""
    limit = request.query.get("limit", "3")
    if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= 20:
        raise BadRequest(Problem(title="Bad query", status=400, detail="limit must be 1-20"))
    registry = request.app[DEVICES].registry
    jobs = await preview(request.app[JOURNAL], registry, request.match_info["device"], int(limit))
    return reply_json({"jobs": jobs})


async def discovered(request: web.Request) -> web.Response:
    """What discovery sees plugged in or on the LAN now, and whether each is registered."""
    devices = request.app[DEVICES]
    found = devices.discovery.describe(devices.registry) if devices.discovery is not None else []
    return reply_json({"devices": found})


def _inputs(request: web.Request) -> InputManager:
    inputs = request.app[DEVICES].inputs
    if inputs is None:
        raise BadRequest(Problem(title="No input devices", status=503, detail="this edge runs no inputs"))
    return inputs


async def post_scan(request: web.Request) -> web.Response:
    """A camera scan from a phone: published to every till client as the same `scan` event."""
    body, _, _ = await staff_command(request, ScanIn, "order.sell")
    return reply_json(_inputs(request).submit(body.code, source=body.source), 201)


async def list_scans(request: web.Request) -> web.Response:
    """The latest scans (newest last), for a till client that reconnected."""
    return reply_json({"scans": list(_inputs(request).scans)})


async def scale_weight(request: web.Request) -> web.Response:
    """A stable weight from the scale (`?device=` id, name or role; default the `scale` role)."""
    principal(request).require("order.sell")
    try:
        reading = await _inputs(request).read_weight(request.query.get("device", "scale"))
    except DriverError as err:
        raise BadRequest(Problem(title="Scale not ready", status=503, detail=str(err))) from err
    return reply_json({"grams": reading.grams, "net": reading.net, "stable": reading.stable})


async def open_drawer(request: web.Request) -> web.Response:
    """Open the cash drawer without a sale (manager); audited with the staff member and reason."""
    body, staff, idem = await staff_command(request, DrawerIn, "drawer.open")
    return answer(await request.app[TILL].open_drawer(staff, body.reason, idem))


async def display_page(request: web.Request) -> web.Response:
    """The customer-facing second screen: the current line and total, live over the WebSocket."""
    return static_page("display.html")


def add_routes(app: web.Application) -> None:
    """Register the device routes."""
    r = app.router
    r.add_get("/api/v1/devices", list_devices)
    r.add_get("/api/v1/devices/discovered", discovered)
    r.add_post("/api/v1/devices/{device}/test", device_test)
    r.add_get("/api/v1/devices/{device}/preview", device_preview)
    r.add_post("/api/v1/scans", post_scan)
    r.add_get("/api/v1/scans", list_scans)
    r.add_get("/api/v1/scale/weight", scale_weight)
    r.add_post("/api/v1/drawer/open", open_drawer)
    r.add_get("/display", display_page)
