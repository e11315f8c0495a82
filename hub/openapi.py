"""OpenAPI 3.1 document of the head-office API, built from the pydantic bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from hub.loyalty_rules import LevelsConfig, PointsRules
from hub.schemas import Health, StoreList, TokenOut, TokenRequest, WhoAmI
from protocol import Problem

__all__ = ["openapi_document"]

_MODELS: list[type[BaseModel]] = [
    Health,
    StoreList,
    TokenOut,
    TokenRequest,
    WhoAmI,
    Problem,
    LevelsConfig,
    PointsRules,
]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": _ref(Problem)}},
    }


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


def openapi_document(version: str) -> dict[str, Any]:
    """The whole document; every path except health, sign-in and this one needs a token."""
    schemas: dict[str, Any] = {}
    for model in _MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": "storelink hub (head office)", "version": version},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/health": {
                "get": {
                    "summary": "Liveness of the hub, its database and broker link",
                    "security": [],
                    "responses": {
                        "200": _json(Health, "healthy"),
                        "503": _json(Health, "degraded"),
                    },
                }
            },
            "/api/v1/auth/token": {
                "post": {
                    "summary": "Sign in for a bearer token",
                    "security": [],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref(TokenRequest)}},
                    },
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
        },
    }
