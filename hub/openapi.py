"""OpenAPI 3.1 document of the head-office API, built from the pydantic bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from hub.schemas import Health, StoreList, TokenOut, TokenRequest, WhoAmI
from protocol import Problem

__all__ = ["openapi_document"]

_MODELS: list[type[BaseModel]] = [Health, StoreList, TokenOut, TokenRequest, WhoAmI, Problem]


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
        },
    }
