"""RFC 9457 problem details, the error body of every storelink HTTP API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["PROBLEM_JSON", "FieldError", "Problem", "validation_problem"]

PROBLEM_JSON = "application/problem+json"


class FieldError(BaseModel):
    """One invalid field: a dotted path into the request body and what is wrong with it."""

    model_config = ConfigDict(frozen=True)

    field: str
    message: str


class Problem(BaseModel):
    """`application/problem+json` body; `errors` lists field paths for validation failures."""

    model_config = ConfigDict(frozen=True)

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None

    def body(self) -> dict[str, Any]:
        """The JSON object to send, without empty members."""
        return self.model_dump(mode="json", exclude_none=True)


def validation_problem(err: ValidationError, *, instance: str | None = None) -> Problem:
    """Turn a pydantic error on a request body into a 422 problem naming each field."""
    errors = [
        FieldError(
            field=".".join(str(part) for part in item["loc"]) or "(body)",
            message=item["msg"],
        )
        for item in err.errors()
    ]
    return Problem(
        type="https://storelink.dev/problems/validation",
        title="Request body is invalid",
        status=422,
        detail="; ".join(f"{e.field}: {e.message}" for e in errors),
        instance=instance,
        errors=errors,
    )
