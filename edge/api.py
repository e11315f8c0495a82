"""The store's local HTTP API for phone apps and screens (aiohttp), problem+json errors."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from edge.config import EdgeSettings
from edge.hublink import HubLink
from edge.journal import Journal
from protocol import PROBLEM_JSON, Problem
from protocol.version import SOFTWARE_VERSION

__all__ = ["StatusOut", "make_app"]

log = logging.getLogger(__name__)
VERSION = SOFTWARE_VERSION

SETTINGS = web.AppKey("settings", EdgeSettings)
JOURNAL = web.AppKey("journal", Journal)
LINK = web.AppKey("link", HubLink)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StatusOut(BaseModel):
    """`GET /api/v1/status`: the store and its sync state."""

    model_config = ConfigDict(frozen=True)

    store: str
    store_name: str | None
    hub_online: bool
    outbox_pending: int
    epoch: int
    acked_through: int
    version: str


def _problem(status: int, title: str, detail: str | None = None) -> web.Response:
    body = Problem(title=title, status=status, detail=detail).body()
    return web.json_response(body, status=status, content_type=PROBLEM_JSON)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error as problem+json; never leak a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        return _problem(err.status, err.reason)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _problem(500, "Internal server error", "the error was logged")


async def status(request: web.Request) -> web.Response:
    """Store id, hub link state and journal sync counters."""
    state = await request.app[JOURNAL].state()
    settings = request.app[SETTINGS]
    body = StatusOut(
        store=settings.store,
        store_name=settings.store_name,
        hub_online=request.app[LINK].connected.is_set(),
        outbox_pending=state.outbox_pending,
        epoch=state.epoch,
        acked_through=state.acked_through,
        version=VERSION,
    )
    return web.json_response(text=body.model_dump_json())


def _openapi() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "storelink edge (store LAN)", "version": VERSION},
        "components": {
            "schemas": {
                "StatusOut": StatusOut.model_json_schema(),
                "Problem": Problem.model_json_schema(ref_template="#/components/schemas/{model}"),
            }
        },
        "paths": {
            "/api/v1/status": {
                "get": {
                    "summary": "Store id, hub link and sync state",
                    "responses": {
                        "200": {
                            "description": "status",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/StatusOut"}}
                            },
                        }
                    },
                }
            }
        },
    }


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document of the local API."""
    return web.json_response(_openapi())


def make_app(settings: EdgeSettings, journal: Journal, link: HubLink) -> web.Application:
    """Build the local API around the daemon's shared parts."""
    app = web.Application(middlewares=[problem_middleware], client_max_size=1024**2)
    app[SETTINGS] = settings
    app[JOURNAL] = journal
    app[LINK] = link
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/api/v1/openapi.json", openapi)
    return app
