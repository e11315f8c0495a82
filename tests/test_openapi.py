"""The hub's and the edge's OpenAPI documents list every route their app registers, in valid shape."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import create_model

from edge.api import make_app as make_edge_app
from edge.daemon import EdgeDaemon
from hub.api import make_app as make_hub_app
from hub.api import read_body
from hub.config import HubSettings
from hub.db import Database
from hub.openapi import _curated, openapi_document
from protocol.openapi import ref, resolve_refs
from tests.edge.conftest import edge_settings

_METHODS = {"get", "put", "post", "delete", "patch", "options", "trace"}
_STATUS = re.compile(r"^(default|[1-5]XX|[1-5][0-9]{2})$")


def _registered(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every route but aiohttp's automatic HEADs."""
    return {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method, path): op for path, item in doc["paths"].items() for method, op in item.items()}


def _resolve(doc: dict[str, Any], pointer: str) -> Any:
    assert pointer.startswith("#/"), pointer
    node: Any = doc
    for raw in pointer[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        assert part in node, f"{pointer} does not resolve"
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def _check_shape(doc: dict[str, Any], public: set[tuple[str, str]]) -> None:
    """OpenAPI 3.1 shape: operations under lower-case methods, every $ref resolves, errors as problems."""
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"]
    assert doc["info"]["version"]
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    for ref_ in _refs(doc):
        assert isinstance(ref_, str), ref_
        assert isinstance(_resolve(doc, ref_), dict)
    assert "Problem" in doc["components"]["schemas"]
    for (method, path), op in _operations(doc).items():
        where = f"{method.upper()} {path}"
        assert method in _METHODS, where
        assert path.startswith("/"), where
        assert op["summary"].strip(), where
        assert op["responses"], where
        assert all(_STATUS.match(code) for code in op["responses"]), where
        assert all(r["description"] for r in op["responses"].values()), where
        placeholders = re.findall(r"\{(\w+)\}", path)
        assert [p["name"] for p in op.get("parameters", [])] == placeholders, where
        assert all(p["in"] == "path" and p["required"] for p in op.get("parameters", [])), where
        if (method, path) in public:
            assert op["security"] == [], where
        else:
            assert op["security"] == [{"bearer": []}], where
            problem = op["responses"]["401"]["content"]["application/problem+json"]["schema"]
            assert problem == {"$ref": "#/components/schemas/Problem"}, where
        if "requestBody" in op:
            assert op["requestBody"]["content"], where
            assert "422" in op["responses"] or "4XX" in op["responses"], where


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], web.Application]]:
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    app = make_hub_app(db, HubSettings(state_dir=tmp_path))
    async with TestClient(TestServer(app)) as client:
        yield client, app
    await db.close()


async def test_the_hub_openapi_lists_every_registered_route(hub):
    client, app = hub
    resp = await client.get("/api/v1/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    registered = _registered(app)
    assert len(registered) > 150  # every domain's routes, not a handful
    assert set(_operations(doc)) == registered
    public = {("get", "/api/v1/health"), ("get", "/api/v1/openapi.json"), ("post", "/api/v1/auth/token")}
    _check_shape(doc, public)
    ops = _operations(doc)
    # request models found from the handlers, beyond the hand-written members and loyalty entries
    for key, model in [
        (("post", "/api/v1/transfers"), "TransferIn"),
        (("post", "/api/v1/stores/{store}/stocktakes"), "StocktakeIn"),
        (("put", "/api/v1/catalog/products/{sku}"), "ProductIn"),
    ]:
        schema = ops[key]["requestBody"]["content"]["application/json"]["schema"]
        # a class name two modules share is qualified by its module
        assert re.fullmatch(rf"#/components/schemas/(\w+__)?{model}", schema["$ref"]), key
        assert _resolve(doc, schema["$ref"])["title"] == model
    assert ops["get", "/api/v1/transfers/{transfer_id}"]["parameters"][0]["name"] == "transfer_id"
    # the hand-written operations keep their response schemas
    assert ops["post", "/api/v1/members"]["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MemberOut"
    }
    assert "503" in ops["get", "/api/v1/health"]["responses"]


async def test_every_hand_written_hub_operation_is_a_registered_route(hub):
    _, app = hub
    registered = _registered(app)
    written = {(method, path) for path, item in _curated().items() for method in item}
    assert written - registered == set()


async def test_a_route_added_later_appears_with_its_summary_and_body(tmp_path):
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    app = make_hub_app(db, HubSettings(state_dir=tmp_path))
    gadget_in = create_model("GadgetIn", name=(str, ...))

    async def add_gadget(request: web.Request) -> web.Response:
        """Add a gadget to the shelf."""
        await read_body(request, gadget_in)
        return web.json_response({}, status=201)

    add_gadget.__globals__["gadget_in"] = gadget_in  # where the handler's module would hold it
    try:
        app.router.add_post("/api/v1/shelves/{shelf_id}/gadgets", add_gadget)
        doc = openapi_document("test", app.router)
    finally:
        del add_gadget.__globals__["gadget_in"]
        await db.close()
    op = doc["paths"]["/api/v1/shelves/{shelf_id}/gadgets"]["post"]
    assert op["summary"] == "Add a gadget to the shelf."
    assert op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/GadgetIn"
    }
    assert doc["components"]["schemas"]["GadgetIn"]["required"] == ["name"]
    assert op["parameters"] == [
        {"name": "shelf_id", "in": "path", "required": True, "schema": {"type": "string"}}
    ]
    assert {"401", "404", "422"} <= set(op["responses"])


def test_two_models_with_one_name_get_two_schemas():
    first = create_model("Thing", a=(int, ...))
    second = create_model("Thing", b=(str, ...), __module__="elsewhere")
    doc = resolve_refs({"paths": {"/x": {"get": {"one": ref(first), "two": ref(second)}}}})
    one, two = doc["paths"]["/x"]["get"]["one"]["$ref"], doc["paths"]["/x"]["get"]["two"]["$ref"]
    assert one != two
    assert "a" in _resolve(doc, one)["properties"]
    assert "b" in _resolve(doc, two)["properties"]


async def test_the_edge_openapi_lists_every_registered_route(tmp_path):
    async with EdgeDaemon(edge_settings(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{daemon.http_port}/api/v1/openapi.json") as resp:
            assert resp.status == 200
            doc = await resp.json()
        app = make_edge_app(
            daemon.settings,
            journal=daemon.journal,
            link=daemon.link,
            snapshots=daemon.snapshots,
            till=daemon.till,
            bus=daemon.bus,
            rpc=daemon.rpc,
            devices=daemon.devices,
        )
    registered = _registered(app)
    assert len(registered) > 60
    assert set(_operations(doc)) == registered
    public = {
        ("get", "/api/v1/status"),
        ("get", "/api/v1/openapi.json"),
        ("post", "/api/v1/devices/pair"),
        ("get", "/display"),
        ("get", "/kds"),
        ("get", "/queue"),
    }
    _check_shape(doc, public & registered)
    ops = _operations(doc)
    for path in ("/api/v1/events", "/api/v1/kds/live", "/api/v1/queue/live"):
        assert set(ops["get", path]["responses"]) >= {"101"}, path
        assert "WebSocket" in ops["get", path]["description"], path
    assert ops["post", "/api/v1/orders/{order_id}/payments"]["requestBody"]["content"]["application/json"][
        "schema"
    ] == {"$ref": "#/components/schemas/PaymentIn"}
    # routes outside the hand-written list: coupons, stock tasks, KDS, queue, appointments, devices
    for key in [
        ("post", "/api/v1/orders/{order_id}/coupons"),
        ("post", "/api/v1/stock/tasks/{task_id}/scans"),
        ("post", "/api/v1/kds/tickets/{ticket_id}"),
        ("post", "/api/v1/queue/tickets"),
        ("get", "/api/v1/appointments/today"),
        ("get", "/api/v1/devices"),
    ]:
        assert ops[key]["summary"] != f"{key[0].upper()} {key[1]}", key  # from the handler's docstring
    bodies = {
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        for op in ops.values()
        if "requestBody" in op
    }
    assert len(bodies) > 30
