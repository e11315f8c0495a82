"""Request and response bodies of the head-office API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Health", "StoreItem", "StoreList", "TokenOut", "TokenRequest", "WhoAmI"]


# Control characters (NUL above all: PostgreSQL rejects it) never belong in names or passwords.
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenRequest(_Body):
    """Sign-in with a user name and password."""

    name: str = Field(min_length=1, max_length=64, pattern=_NO_CONTROL)
    password: str = Field(min_length=1, max_length=1024, pattern=_NO_CONTROL)


class TokenOut(_Body):
    """A bearer token for the `Authorization` header."""

    token: str
    token_type: str = "Bearer"  # noqa: S105 - the scheme name
    expires_at: datetime


class Health(_Body):
    """Liveness and dependencies of this hub instance."""

    status: str
    database: bool
    broker: bool
    version: str


class StoreItem(_Body):
    """A store and whether it is online now."""

    id: str
    name: str
    online: bool
    last_seen: datetime | None
    epoch: int | None
    outbox_depth: int | None = None
    acked_through: int | None = None
    last_sync: datetime | None = None


class StoreList(_Body):
    """The stores the caller may see."""

    items: list[StoreItem]


class WhoAmI(_Body):
    """The signed-in user, role and store scope (null: every store)."""

    name: str
    role: str
    stores: list[str] | None
