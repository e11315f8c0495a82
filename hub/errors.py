"""Errors of the hub package."""

from __future__ import annotations

__all__ = ["AuthError", "HubError", "NotFound", "PermissionDenied"]


class HubError(Exception):
    """Base of every error the hub raises on purpose."""


class NotFound(HubError):
    """A named thing (store, user) does not exist."""


class AuthError(HubError):
    """Sign-in failed, or a token is missing, expired or revoked."""


class PermissionDenied(HubError):
    """The signed-in user's role or store scope does not allow this."""
