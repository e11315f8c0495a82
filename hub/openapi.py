"""OpenAPI 3.1 document of the head-office API: every registered route, schemas where known.

The operations below are written by hand where the route's request and response models are known;
every other route the app registers gets a generated operation (`protocol.openapi`).
"""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from hub.catalog import ProductIn
from hub.loyalty_rules import LevelsConfig, PointsRules
from hub.member_schemas import (
    BirthdayPage,
    ImportReportOut,
    MemberCodeOut,
    MemberIn,
    MemberOut,
    MemberPage,
    MemberPatch,
    MergeIn,
)
from hub.schemas import Health, StoreList, TokenOut, TokenRequest, WhoAmI
from protocol.openapi import Route, path_parameters, resolve_refs, routes_of
from protocol.openapi import body as _body
from protocol.openapi import json_response as _json
from protocol.openapi import problem_response as _problem
from protocol.openapi import ref as _ref

__all__ = ["openapi_document"]

_AUTH_ERRORS = {"401": _problem("missing, expired or revoked token"), "403": _problem("forbidden")}


def _config_path(model: type[BaseModel], what: str) -> dict[str, Any]:
    """GET and PUT of one loyalty configuration document (levels, points rules)."""
    return {
        "get": {"summary": f"The chain's {what}", "responses": {"200": _json(model, what), **_AUTH_ERRORS}},
        "put": {
            "summary": f"Replace the chain's {what} (loyalty.configure)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(model)}}},
            "responses": {
                "200": _json(model, "saved"),
                "409": _problem("a level members hold was left out"),
                "422": _problem("invalid rules; nothing changed"),
                **_AUTH_ERRORS,
            },
        },
    }


def _loyalty_paths() -> dict[str, Any]:
    """Levels and points (docs/api.md#hub-levels-and-points has every field)."""
    plain = {"200": {"description": "see docs/api.md"}, **_AUTH_ERRORS}
    return {
        "/api/v1/loyalty/levels": _config_path(LevelsConfig, "level definitions"),
        "/api/v1/loyalty/points-rules": _config_path(PointsRules, "points rules"),
        "/api/v1/loyalty/expire": {
            "post": {"summary": "Expire every points lot due now", "responses": plain}
        },
        "/api/v1/loyalty/levels/review": {"post": {"summary": "The yearly level review", "responses": plain}},
        "/api/v1/loyalty/birthday-points": {
            "post": {"summary": "Birthday points of a day", "responses": plain}
        },
        "/api/v1/members/{member_id}/points": {
            "get": {"summary": "Points balance, open lots and ledger", "responses": plain}
        },
        "/api/v1/members/{member_id}/points/adjustments": {
            "post": {"summary": "Adjust points by hand with a reason (loyalty.configure)", "responses": plain}
        },
        "/api/v1/members/{member_id}/level": {
            "get": {"summary": "Level, counters and level history", "responses": plain}
        },
    }


_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_XLSX_FILE = {"content": {_XLSX: {"schema": {"type": "string", "format": "binary"}}}}


def _member_paths() -> dict[str, Any]:
    """Members (docs/api.md#hub-members); a member outside a scoped user's stores answers 404."""
    missing = {"404": _problem("no such member (or not in your stores)"), **_AUTH_ERRORS}
    search = "phone (the last 1-11 digits), name (any part), level (code), include_merged, limit, offset"
    return {
        "/api/v1/members": {
            "post": {
                "summary": "Register a member (members.write)",
                "requestBody": _body(MemberIn),
                "responses": {
                    "201": _json(MemberOut, "created"),
                    "409": _problem("the phone already belongs to a member"),
                    "422": _problem("invalid phone, name, gender, birthday or referrer"),
                    **_AUTH_ERRORS,
                },
            },
            "get": {
                "summary": f"Search members, newest first: {search}",
                "responses": {
                    "200": _json(MemberPage, "a page"),
                    "400": _problem("bad query"),
                    **_AUTH_ERRORS,
                },
            },
        },
        "/api/v1/members/birthdays": {
            "get": {
                "summary": "Birthdays from `from` (today) for `days` days; 29 Feb on 28 Feb in common years",
                "responses": {
                    "200": _json(BirthdayPage, "the list"),
                    "400": _problem("bad query"),
                    **_AUTH_ERRORS,
                },
            }
        },
        "/api/v1/members/import": {
            "post": {
                "summary": "Import members from an .xlsx body (?skip_invalid=&store=)",
                "requestBody": {"required": True, **_XLSX_FILE},
                "responses": {
                    "200": _json(ImportReportOut, "the report"),
                    "413": _problem("over 20 MiB"),
                    "422": _problem(
                        "not an .xlsx, or invalid rows (errors: `row N: column`); nothing written"
                    ),
                    **_AUTH_ERRORS,
                },
            }
        },
        "/api/v1/members/export": {
            "get": {
                "summary": f"Every member a search finds, as .xlsx: {search}",
                "responses": {"200": {"description": "the file", **_XLSX_FILE}, **_AUTH_ERRORS},
            }
        },
        "/api/v1/members/{member_id}": {
            "get": {
                "summary": "One member as stored",
                "responses": {"200": _json(MemberOut, "the member"), **missing},
            },
            "patch": {
                "summary": "Change name, gender, birthday, consents or phone (members.write)",
                "requestBody": _body(MemberPatch),
                "responses": {
                    "200": _json(MemberOut, "changed"),
                    "409": _problem("phone taken, or the member was merged"),
                    "422": _problem("invalid field"),
                    **missing,
                },
            },
        },
        "/api/v1/members/{member_id}/merge": {
            "post": {
                "summary": "Merge this member into `into`; the phone is freed (or taken by the survivor)",
                "requestBody": _body(MergeIn),
                "responses": {
                    "200": _json(MemberOut, "the survivor"),
                    "409": _problem("into itself, already merged, or into a merged member"),
                    **missing,
                },
            }
        },
        "/api/v1/members/{member_id}/code": {
            "get": {
                "summary": "The checkout code: 18 digits, new every 30 s, works once (members.write)",
                "responses": {"200": _json(MemberCodeOut, "the current code"), **missing},
            }
        },
    }


def _curated() -> dict[str, dict[str, Any]]:
    """The hand-written operations, by path and method."""
    return {
        "/api/v1/health": {
            "get": {
                "summary": "Liveness of the hub, its database and broker link",
                "responses": {"200": _json(Health, "healthy"), "503": _json(Health, "degraded")},
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
            }
        },
        "/api/v1/auth/token": {
            "post": {
                "summary": "Sign in for a bearer token",
                "requestBody": _body(TokenRequest),
                "responses": {
                    "201": _json(TokenOut, "signed in"),
                    "401": _problem("wrong user name or password"),
                    "422": _problem("invalid body"),
                    "429": _problem("too many failed sign-ins; see Retry-After"),
                },
            },
            "delete": {
                "summary": "Revoke the token used for this request",
                "responses": {"204": {"description": "revoked"}, **_AUTH_ERRORS},
            },
        },
        "/api/v1/me": {
            "get": {
                "summary": "The signed-in user",
                "responses": {"200": _json(WhoAmI, "the caller"), **_AUTH_ERRORS},
            }
        },
        "/api/v1/stores": {
            "get": {
                "summary": "Stores in the caller's scope, with online state",
                "responses": {"200": _json(StoreList, "stores"), **_AUTH_ERRORS},
            }
        },
        **_loyalty_paths(),
        **_member_paths(),
    }


# Bodies a handler validates without `read_body(request, Model)`, which `Route.body` cannot see.
_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("put", "/api/v1/catalog/products/{sku}"): _body(ProductIn),
    ("post", "/api/v1/catalog/import"): {
        "required": True,
        "content": {_XLSX: _XLSX_FILE["content"][_XLSX], "text/csv": {"schema": {"type": "string"}}},
    },
}


def _generated(route: Route) -> dict[str, Any]:
    """An operation from the handler's docstring; `_operation` adds its body, parameters and errors."""
    responses = {"2XX": {"description": "done; docs/api.md describes the answer"}}
    return {"summary": route.summary, "responses": responses}


def _operation(route: Route, curated: dict[str, dict[str, Any]]) -> dict[str, Any]:
    op = dict(curated.get(route.path, {}).get(route.method) or _generated(route))
    responses = dict(op["responses"])
    if "requestBody" not in op:
        model = route.body
        if model is not None:
            op["requestBody"] = _body(model)
        elif (route.method, route.path) in _BODIES:
            op["requestBody"] = _BODIES[route.method, route.path]
    if "requestBody" in op:
        responses.setdefault("422", _problem("invalid body; nothing was changed"))
    if params := path_parameters(route.path):
        op["parameters"] = params
        responses.setdefault("404", _problem("no such item (or not in your stores)"))
    responses.setdefault("4XX", _problem("refused; nothing was changed"))
    op["responses"] = responses
    return op


_SERVER_ERRORS = {"503": _problem("database unavailable; try again shortly")}


@functools.cache
def _document(version: str, registered: tuple[tuple[str, str | None, Any], ...]) -> dict[str, Any]:
    from hub.api import _PUBLIC  # noqa: PLC0415 - hub.api imports this module

    public = {(method.lower(), path) for method, path in _PUBLIC}
    curated = _curated()
    paths: dict[str, dict[str, Any]] = {}
    for route in routes_of(registered):
        op = _operation(route, curated)
        if (route.method, route.path) in public:
            op["security"] = []
        else:
            op["security"] = [{"bearer": []}]
            op["responses"] = {**_AUTH_ERRORS, **op["responses"]}
        op["responses"] = {**_SERVER_ERRORS, **op["responses"]}
        paths.setdefault(route.path, {})[route.method] = op
    return resolve_refs(
        {
            "openapi": "3.1.0",
            "info": {"title": "storelink hub (head office)", "version": version},
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearer": []}],
            "paths": paths,
        },
        extra=[LevelsConfig, PointsRules],
    )


def openapi_document(version: str, router: web.UrlDispatcher) -> dict[str, Any]:
    """The whole document: every route `router` holds; all but health, sign-in and this one need a token."""
    registered = tuple(
        (r.method, r.resource.canonical if r.resource else None, r.handler) for r in router.routes()
    )
    return _document(version, registered)
