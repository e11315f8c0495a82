"""Small JSON documents of the edge (catalog, staff, settings snapshots) in TinyDB files.

TinyDB rewrites its whole file on every write; `AtomicJSONStorage` makes that rewrite
atomic (temp file, fsync, rename) so a power cut leaves the old or the new document,
never half of one. Files stay human-readable (indented, Chinese as is) for installers.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from tinydb import TinyDB
from tinydb.storages import Storage

from edge.errors import EdgeError

__all__ = ["AtomicJSONStorage", "DocumentError", "read_document", "write_document"]

M = TypeVar("M", bound=BaseModel)
_TABLE = "document"


class DocumentError(EdgeError):
    """A document file is unreadable or fails validation."""


class AtomicJSONStorage(Storage):
    """TinyDB storage that replaces its file atomically on every write."""

    def __init__(self, path: str | Path, **_: Any):
        self.path = Path(path)

    def read(self) -> dict[str, dict[str, Any]] | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        if not text.strip():
            return None
        data = json.loads(text)
        if not isinstance(data, dict):
            raise DocumentError(f"{self.path} is not a storelink document file")
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, ensure_ascii=False, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def close(self) -> None:
        pass


def read_document(path: Path, model: type[M]) -> M | None:
    """The document stored in `path`, or None if there is none yet."""
    try:
        with TinyDB(path, storage=AtomicJSONStorage) as db:
            rows = db.table(_TABLE).all()
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise DocumentError(f"cannot read {path}: {err}") from err
    if not rows:
        return None
    try:
        return model.model_validate(dict(rows[0]))
    except ValidationError as err:
        raise DocumentError(f"{path} is not a valid {model.__name__}: {err}") from err


def write_document(path: Path, document: BaseModel) -> None:
    """Replace the document stored in `path` in one atomic write (TinyDB's own layout)."""
    AtomicJSONStorage(path).write({_TABLE: {"1": document.model_dump(mode="json")}})
