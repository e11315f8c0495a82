"""Building blocks of the hub's and the edge's OpenAPI 3.1 documents.

Both documents are built from the routes the app actually registers, so a route added later is
listed without anyone remembering to. A handler's summary is its docstring's first line and its
request body is the pydantic model it passes to `read_body(request, Model)` or
`staff_command(request, Model, ...)`; hand-written operations can replace the generated ones.
Schemas are referenced by model class while the document is built (`ref`) and resolved to
`#/components/schemas/...` at the end (`resolve_refs`), so two models that share a class name
still get distinct schemas.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from protocol.problem import Problem

__all__ = [
    "Route",
    "body",
    "json_response",
    "path_parameters",
    "problem_response",
    "ref",
    "resolve_refs",
    "routes_of",
]

_METHODS = ("get", "put", "post", "delete", "patch", "options", "trace")
_BODY = re.compile(r"\b(?:read_body|staff_command)\(\s*request,\s*([A-Za-z_][\w.]*)")
_PARAM = re.compile(r"\{([A-Za-z_]\w*)(?::[^}]*)?\}")
_SCHEMAS = "#/components/schemas/"


@dataclass(frozen=True)
class Route:
    """One registered method and path (aiohttp's canonical form, `{name}` placeholders)."""

    method: str
    path: str
    handler: Callable[..., Any]

    @functools.cached_property
    def _function(self) -> Any:
        fn: Any = self.handler
        while isinstance(fn, functools.partial):
            fn = fn.func
        return inspect.unwrap(fn)

    @functools.cached_property
    def _source(self) -> str:
        try:
            return inspect.getsource(self._function)
        except (OSError, TypeError):
            return ""

    @property
    def summary(self) -> str:
        """The docstring's first line, or the method and path when the handler has none."""
        doc = inspect.getdoc(self._function) or ""
        return doc.strip().splitlines()[0] if doc.strip() else f"{self.method.upper()} {self.path}"

    @property
    def body(self) -> type[BaseModel] | None:
        """The request model the handler validates its JSON body with, if it names one."""
        match = _BODY.search(self._source)
        if match is None:
            return None
        found: Any = getattr(self._function, "__globals__", {})
        first, *rest = match.group(1).split(".")
        found = found.get(first)
        for part in rest:
            found = getattr(found, part, None)
        return found if isinstance(found, type) and issubclass(found, BaseModel) else None

    @property
    def websocket(self) -> bool:
        """Whether the handler answers with a WebSocket (upgraded from a GET)."""
        annotation = str(inspect.signature(self._function).return_annotation)
        return "WebSocketResponse" in annotation or "WebSocketResponse(" in self._source


def routes_of(registered: Iterable[tuple[str, str | None, Callable[..., Any]]]) -> list[Route]:
    """The documentable routes among (method, canonical path, handler) triples, sorted.

    HEAD (aiohttp adds one to every GET) and wildcard methods are left out; OpenAPI has no
    operation for them.
    """
    found = {
        (method.lower(), path): Route(method.lower(), path, handler)
        for method, path, handler in registered
        if path is not None and method.lower() in _METHODS
    }
    return [found[key] for key in sorted(found, key=lambda k: (k[1], k[0]))]


def path_parameters(path: str) -> list[dict[str, Any]]:
    """The `{name}` placeholders of a path as OpenAPI path parameters."""
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PARAM.findall(path)
    ]


def ref(model: type[BaseModel]) -> dict[str, Any]:
    """A reference to a model's schema, resolved by `resolve_refs`."""
    return {"$ref": model}


def json_response(model: type[BaseModel], description: str) -> dict[str, Any]:
    """A JSON response with a model's schema."""
    return {"description": description, "content": {"application/json": {"schema": ref(model)}}}


def problem_response(description: str) -> dict[str, Any]:
    """An `application/problem+json` error response."""
    return {"description": description, "content": {"application/problem+json": {"schema": ref(Problem)}}}


def body(model: type[BaseModel]) -> dict[str, Any]:
    """A required JSON request body with a model's schema."""
    return {"required": True, "content": {"application/json": {"schema": ref(model)}}}


def resolve_refs(document: dict[str, Any], extra: Iterable[type[BaseModel]] = ()) -> dict[str, Any]:
    """Replace every model placeholder with a `$ref` and put the schemas under components."""
    models: dict[type[BaseModel], None] = dict.fromkeys(extra)
    _collect(document, models)
    keyed: list[tuple[type[BaseModel], Literal["validation"]]] = [
        (model, "validation") for model in sorted(models, key=_model_key)
    ]
    refs, defs = models_json_schema(keyed, ref_template=_SCHEMAS + "{model}")
    names: dict[Any, str] = {model: schema["$ref"] for (model, _), schema in refs.items()}
    resolved: dict[str, Any] = _replace(document, names)
    resolved.setdefault("components", {})["schemas"] = defs.get("$defs", {})
    return resolved


def _model_key(model: type[BaseModel]) -> tuple[str, str]:
    return model.__name__, model.__module__


def _collect(node: Any, models: dict[type[BaseModel], None]) -> None:
    if isinstance(node, dict):
        target = node.get("$ref")
        if isinstance(target, type) and issubclass(target, BaseModel):
            models[target] = None
        for value in node.values():
            _collect(value, models)
    elif isinstance(node, list):
        for value in node:
            _collect(value, models)


def _replace(node: Any, names: dict[Any, str]) -> Any:
    if isinstance(node, dict):
        target = node.get("$ref")
        if isinstance(target, type):
            return {**node, "$ref": names[target]}
        return {key: _replace(value, names) for key, value in node.items()}
    if isinstance(node, list):
        return [_replace(value, names) for value in node]
    return node
