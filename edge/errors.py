"""Errors of the edge package."""

from __future__ import annotations

from pathlib import Path

__all__ = ["EdgeError", "JournalCorrupt", "TillError"]


class EdgeError(Exception):
    """Base of every error the edge raises on purpose."""


class JournalCorrupt(EdgeError):
    """The journal file failed its integrity check; the edge refuses to start on it."""

    def __init__(self, path: str, detail: str, backup: Path | None = None):
        where = f"the newest backup is {backup}" if backup else "no backup was found next to it"
        super().__init__(
            f"journal {path} is corrupt ({detail}). The edge will not start on it, so no sale is "
            f"lost or duplicated: keep the file for support and restore a backup ({where}), "
            "then start again."
        )
        self.path = path
        self.backup = backup


class TillError(EdgeError):
    """A till action refused: nothing was written. `status` is the HTTP status to answer."""

    def __init__(self, detail: str, *, status: int = 409):
        super().__init__(detail)
        self.detail = detail
        self.status = status
