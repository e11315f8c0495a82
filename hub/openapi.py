"""OpenAPI 3.1 document of the head-office API, built from the pydantic bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from hub.loyalty_rules import LevelsConfig, PointsRules
from hub.member_schemas import (
    MEMBER_MODELS,
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
    *MEMBER_MODELS,
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


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(model)}}}


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
            **_member_paths(),
        },
    }
