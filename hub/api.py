"""Head-office HTTP API (aiohttp): JSON under /api/v1, problem+json errors, bearer tokens."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, RootModel, ValidationError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from hub import auth
from hub.config import HubSettings
from hub.db import Database
from hub.errors import AuthError, HubError, NotFound, PermissionDenied
from hub.link import BrokerLink
from hub.openapi import openapi_document
from hub.schemas import Health, StoreItem, StoreList, TokenOut, TokenRequest, WhoAmI
from hub.snapshots import save_snapshot
from hub.stores import list_stores
from protocol import PROBLEM_JSON, Problem, SnapshotKind, validation_problem
from protocol.version import SOFTWARE_VERSION

__all__ = ["DB", "LINK", "SETTINGS", "make_app"]

log = logging.getLogger(__name__)
VERSION = SOFTWARE_VERSION

DB = web.AppKey("db", Database)
SETTINGS = web.AppKey("settings", HubSettings)
LIMITER = web.AppKey("limiter", auth.LoginLimiter)
LINK = web.AppKey("link", BrokerLink)
PRINCIPAL = web.RequestKey("principal", auth.Principal)
# Everything else needs a token, including paths added later: access fails closed.
_PUBLIC = {
    ("GET", "/api/v1/health"),
    ("HEAD", "/api/v1/health"),
    ("GET", "/api/v1/openapi.json"),
    ("POST", "/api/v1/auth/token"),
}
M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem(status: int, title: str, detail: str | None = None, **headers: str) -> web.Response:
    """An `application/problem+json` response."""
    body = Problem(title=title, status=status, detail=detail).body()
    return web.json_response(body, status=status, content_type=PROBLEM_JSON, headers=headers)


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(text=model.model_dump_json(), status=status)


async def read_body(request: web.Request, model: type[M]) -> M:
    """Parse and validate the JSON body, raising a 4xx problem for anything malformed."""
    if request.content_type != "application/json":
        raise ProblemError(
            Problem(title="Unsupported media type", status=415, detail="send application/json")
        )
    raw = await request.read()
    try:
        return model.model_validate_json(raw)
    except ValidationError as err:
        first = err.errors()[0]
        if first["type"] == "json_invalid":
            raise ProblemError(Problem(title="Malformed JSON", status=400, detail=str(first["msg"]))) from err
        raise ProblemError(validation_problem(err, instance=request.path)) from err


class ProblemError(Exception):
    """Carries a ready problem from deep in a handler to the middleware."""

    def __init__(self, problem: Problem):
        super().__init__(problem.detail or problem.title)
        self.problem = problem


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error as problem+json; never leak a traceback or return a bare 500."""
    try:
        return await handler(request)
    except ProblemError as err:
        body = err.problem.body()
        return web.json_response(body, status=err.problem.status, content_type=PROBLEM_JSON)
    except AuthError as err:
        return problem(401, "Unauthorized", str(err), **{"WWW-Authenticate": "Bearer"})
    except PermissionDenied as err:
        return problem(403, "Forbidden", str(err))
    except NotFound as err:
        return problem(404, "Not found", str(err))
    except HubError as err:
        return problem(409, "Conflict", str(err))
    except web.HTTPException as err:
        if err.status < 400:
            raise
        return problem(
            err.status, err.reason, err.text if err.text != f"{err.status}: {err.reason}" else None
        )
    except SQLAlchemyError:
        log.exception("database error on %s %s", request.method, request.path)
        return problem(503, "Database unavailable", "try again shortly")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem(500, "Internal server error", "the error was logged")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Require a valid bearer token everywhere but the public endpoints."""
    if (request.method, request.path) in _PUBLIC:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("missing bearer token; sign in at POST /api/v1/auth/token")
    request[PRINCIPAL] = await auth.resolve_token(request.app[DB], token.strip())
    return await handler(request)


def principal(request: web.Request) -> auth.Principal:
    """The caller, set by `auth_middleware`."""
    return request[PRINCIPAL]


def actor(request: web.Request) -> str:
    """How ledgers and audits name the signed-in head-office user."""
    return f"user:{principal(request).name}"


def bad_query(detail: str) -> ProblemError:
    """A 400 for a malformed query parameter."""
    return ProblemError(Problem(title="Bad query", status=400, detail=detail))


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter within [low, high], or a 400 that says so."""
    raw = request.query.get(name, str(default))
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise bad_query(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


async def health(request: web.Request) -> web.Response:
    """200 when database and broker link work, 503 otherwise."""
    db_ok = True
    try:
        async with request.app[DB].engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError):
        db_ok = False
    link = request.app.get(LINK)
    broker_ok = link is not None and link.connected.is_set()
    body = Health(
        status="ok" if db_ok and broker_ok else "degraded",
        database=db_ok,
        broker=broker_ok,
        version=VERSION,
    )
    return _json(body, 200 if db_ok and broker_ok else 503)


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document."""
    document = openapi_document(VERSION, request.app.router)
    return web.json_response(document, dumps=lambda o: json.dumps(o, ensure_ascii=False))


async def create_token(request: web.Request) -> web.Response:
    """Sign in; failures per name and address are rate-limited."""
    body = await read_body(request, TokenRequest)
    limiter = request.app[LIMITER]
    client = request.remote or "?"
    wait = limiter.begin(body.name, client)
    if wait > 0:
        seconds = str(int(wait) + 1)
        return problem(
            429, "Too many failed sign-ins", f"try again in {seconds} s", **{"Retry-After": seconds}
        )
    user = await auth.authenticate(request.app[DB], body.name, body.password)
    limiter.succeeded(body.name, client)
    ttl = timedelta(hours=request.app[SETTINGS].token_ttl_hours)
    issued = await auth.issue_token(request.app[DB], user.id, ttl)
    response = _json(TokenOut(token=issued.token, expires_at=issued.expires_at), 201)
    response.headers["Cache-Control"] = "no-store"
    return response


async def delete_token(request: web.Request) -> web.Response:
    """Revoke the caller's token."""
    token = request.headers["Authorization"].partition(" ")[2].strip()
    await auth.revoke_token(request.app[DB], token)
    return web.Response(status=204)


async def me(request: web.Request) -> web.Response:
    """Who the caller is."""
    who = principal(request)
    stores = sorted(who.stores) if who.stores is not None else None
    return _json(WhoAmI(name=who.name, role=who.role.value, stores=stores))


async def stores(request: web.Request) -> web.Response:
    """Stores in the caller's scope."""
    who = principal(request)
    who.require("stores.read")
    stale = timedelta(seconds=request.app[SETTINGS].store_stale_after_s)
    views = await list_stores(request.app[DB], stale_after=stale, only=who.stores)
    items = [StoreItem.model_validate(v, from_attributes=True) for v in views]
    return _json(StoreList(items=items))


class SnapshotBody(RootModel[dict[str, Any]]):
    """A snapshot body: any JSON object (the store validates it for its kind)."""


async def put_snapshot(request: web.Request) -> web.Response:
    """Publish a new version of a store's catalog, prices, staff or settings snapshot."""
    store = request.match_info["store"]
    try:
        kind = SnapshotKind(request.match_info["kind"])
    except ValueError:
        raise NotFound(f"no snapshot kind {request.match_info['kind']!r}") from None
    principal(request).require("snapshots.write", store=store)
    body = (await read_body(request, SnapshotBody)).root
    snapshot = await save_snapshot(request.app[DB], store, kind, body)
    link = request.app.get(LINK)
    sent = link is not None and await link.publish_snapshot(store, snapshot)
    return web.json_response(
        {"store": store, "kind": kind.value, "version": snapshot.version, "sent": sent}, status=201
    )


def make_app(db: Database, settings: HubSettings, link: BrokerLink | None = None) -> web.Application:
    """Build the API; `db` and `link` are created by the caller and shared."""
    app = web.Application(middlewares=[problem_middleware, auth_middleware], client_max_size=1024**2)
    app[DB] = db
    app[SETTINGS] = settings
    app[LIMITER] = auth.LoginLimiter(settings.login_max_failures, settings.login_window_s)
    if link is not None:
        app[LINK] = link
    app.router.add_get("/api/v1/health", health)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_post("/api/v1/auth/token", create_token)
    app.router.add_delete("/api/v1/auth/token", delete_token)
    app.router.add_get("/api/v1/me", me)
    app.router.add_get("/api/v1/stores", stores)
    from hub import (  # noqa: PLC0415 - they import helpers from this module
        api_appointments,
        api_campaigns,
        api_catalog,
        api_commands,
        api_coupons,
        api_group_buy,
        api_jobs,
        api_loyalty,
        api_mall,
        api_members,
        api_passes,
        api_promotions,
        api_purchasing,
        api_referrals,
        api_replenishment,
        api_sales,
        api_stock,
        api_stocktakes,
        api_stored_value,
        api_tags,
    )

    api_sales.add_routes(app)
    api_commands.add_routes(app)
    api_passes.add_routes(app)
    api_members.add_routes(app)
    api_stored_value.add_routes(app)
    api_loyalty.add_routes(app)
    api_stock.add_routes(app)
    api_catalog.add_routes(app)
    api_stocktakes.add_routes(app)
    api_jobs.add_routes(app)
    api_tags.add_routes(app)
    api_coupons.add_routes(app)
    api_promotions.add_routes(app)
    api_appointments.add_routes(app)
    api_replenishment.add_routes(app)
    api_purchasing.add_routes(app)
    api_campaigns.add_routes(app)
    api_group_buy.add_routes(app)
    api_mall.add_routes(app)
    api_referrals.add_routes(app)
    app.router.add_put("/api/v1/stores/{store}/snapshots/{kind}", put_snapshot)
    return app
