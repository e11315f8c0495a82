"""Commands to stores in the head-office API: send one, follow its result."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hub.api import DB, LINK, principal, read_body
from hub.commands import create_command, get_command, list_commands, to_wire
from hub.models import StoreCommand
from protocol import JsonObject

__all__ = ["add_routes"]

MAX_BODY_BYTES = 64 * 1024  # well inside the protocol's 256 KiB message limit


class CommandIn(BaseModel):
    """A command for one store; `expires_in_s` stops it from running days later."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.-]*$")
    body: JsonObject = {}
    expires_in_s: int | None = Field(None, ge=1, le=30 * 24 * 3600)

    @field_validator("body")
    @classmethod
    def _fits_a_message(cls, body: dict[str, Any]) -> dict[str, Any]:
        # A command the store cannot decode would be re-sent forever: refuse it here.
        if len(json.dumps(body, ensure_ascii=False).encode()) > MAX_BODY_BYTES:
            raise ValueError(f"a command body must be at most {MAX_BODY_BYTES // 1024} KiB of JSON")
        return body


class CommandOut(BaseModel):
    """A command and where it stands: pending, done, failed or expired."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    store: str
    type: str
    body: dict[str, Any]
    state: str
    detail: str
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    sent_count: int
    completed_at: datetime | None


def _out(row: StoreCommand, status: int = 200) -> web.Response:
    return web.json_response(text=CommandOut.model_validate(row).model_dump_json(), status=status)


async def post_command(request: web.Request) -> web.Response:
    """Queue a command for a store and send it at once if the broker link is up."""
    store = request.match_info["store"]
    who = principal(request)
    who.require("commands.write", store=store)
    body = await read_body(request, CommandIn)
    expires = timedelta(seconds=body.expires_in_s) if body.expires_in_s else None
    row = await create_command(
        request.app[DB], store, body.type, body.body, created_by=who.name, expires_in=expires
    )
    link = request.app.get(LINK)
    if link is not None and await link.publish_command(store, to_wire(row)):
        row = await get_command(request.app[DB], store, row.id)  # with its send recorded
    return _out(row, 201)


async def get_one(request: web.Request) -> web.Response:
    """One command of a store."""
    store = request.match_info["store"]
    principal(request).require("stores.read", store=store)
    return _out(await get_command(request.app[DB], store, request.match_info["command_id"]))


async def get_list(request: web.Request) -> web.Response:
    """A store's newest commands."""
    store = request.match_info["store"]
    principal(request).require("stores.read", store=store)
    rows = await list_commands(request.app[DB], store)
    items = [CommandOut.model_validate(row).model_dump(mode="json") for row in rows]
    return web.json_response({"items": items})


def add_routes(app: web.Application) -> None:
    """Register the command routes."""
    app.router.add_post("/api/v1/stores/{store}/commands", post_command)
    app.router.add_get("/api/v1/stores/{store}/commands", get_list)
    app.router.add_get("/api/v1/stores/{store}/commands/{command_id}", get_one)
