"""Encode wire models to JSON bytes and decode untrusted payloads back."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from protocol.errors import DecodeError

__all__ = ["MAX_PAYLOAD", "decode", "encode"]

MAX_PAYLOAD = 256 * 1024

M = TypeVar("M", bound=BaseModel)


def encode(message: BaseModel) -> bytes:
    """Serialize a model to compact UTF-8 JSON."""
    return message.model_dump_json().encode("utf-8")


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _describe(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind == "json_invalid":
        return f"invalid JSON: {ctx.get('error', error['msg'])}"
    # A ValueError raised by one of our validators already reads as a full sentence.
    message = str(ctx["error"]) if kind == "value_error" and "error" in ctx else error["msg"]
    loc = error["loc"]
    if not loc:
        if kind in ("model_type", "model_attributes_type", "dict_type"):
            return "expected a JSON object"
        return message
    return f"field {_location(loc)!r}: {message}"


def _reason(err: ValidationError) -> str:
    errors = err.errors(include_url=False, include_input=False)
    if not errors:
        return str(err)
    reason = _describe(errors[0])
    if len(errors) > 1:
        others = len(errors) - 1
        reason += f" (and {others} more error{'s' if others > 1 else ''})"
    return reason


def decode(model: type[M], payload: bytes | bytearray | str, *, max_bytes: int = MAX_PAYLOAD) -> M:
    """Parse and validate a JSON payload as model; any bad input raises DecodeError."""
    what = model.__name__
    if isinstance(payload, str):
        try:
            data = payload.encode("utf-8")
        except UnicodeEncodeError as err:
            raise DecodeError(what, f"payload is not valid Unicode text: {err.reason}") from err
    elif isinstance(payload, bytes | bytearray | memoryview):
        data = bytes(payload)
    else:
        raise DecodeError(what, f"payload must be bytes, bytearray or str, not {type(payload).__name__}")
    if len(data) > max_bytes:
        raise DecodeError(what, f"payload is {len(data)} bytes, the limit is {max_bytes}")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DecodeError(what, f"payload is not valid UTF-8 (byte {err.start}: {err.reason})") from err
    try:
        return model.model_validate_json(data)
    except ValidationError as err:
        raise DecodeError(what, _reason(err)) from err
    except ValueError as err:
        # Validators should only surface through ValidationError; this keeps the
        # "only DecodeError" promise should a library raise ValueError directly.
        raise DecodeError(what, str(err)) from err
