"""The documents the till sells with (catalog, staff), kept in memory and reloaded on change.

`storelink-edge catalog load` and `staff add` write the TinyDB files while the daemon
runs; a background loop notices the new modification time and swaps in the new
document. Until the hub's sync exists, these files are the snapshots.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import TracebackType

from edge.access import StaffDocument, load_staff
from edge.catalog import Catalog, CatalogStore
from edge.config import EdgeSettings
from edge.documents import DocumentError
from edge.errors import EdgeError
from protocol.aio import cancel_and_wait

__all__ = ["Snapshots"]

log = logging.getLogger(__name__)
POLL_S = 2.0


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


class Snapshots:
    """Current catalog and staff; `catalog` is None until one has been loaded."""

    def __init__(self, settings: EdgeSettings):
        self.catalog_path = settings.state_dir / "catalog.json"
        self.staff_path = settings.state_dir / "staff.json"
        self._layout = settings.scale.layout()
        self.catalog: Catalog | None = None
        self.staff = StaffDocument(version=0, staff=[])
        self._seen: dict[Path, float | None] = {}
        self._task: asyncio.Task[None] | None = None

    def _read_catalog(self) -> Catalog | None:
        store = CatalogStore(self.catalog_path)
        try:
            doc = store.load()
        finally:
            store.close()
        return Catalog(doc, self._layout) if doc is not None else None

    def _reload(self) -> None:
        """Re-read whichever file changed (runs in a thread)."""
        for path in (self.catalog_path, self.staff_path):
            mtime = _mtime(path)
            if path in self._seen and self._seen[path] == mtime:
                continue
            self._seen[path] = mtime
            try:
                if path == self.catalog_path:
                    self.catalog = self._read_catalog()
                    if self.catalog is not None:
                        log.info("catalog version %d: %d products", self.catalog.version, len(self.catalog))
                else:
                    self.staff = load_staff(path)
            except (EdgeError, DocumentError, OSError) as err:
                # Keep selling with the previous document rather than with nothing.
                log.error("cannot load %s, keeping the previous one: %s", path, err)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            await asyncio.to_thread(self._reload)

    async def __aenter__(self) -> Snapshots:
        await asyncio.to_thread(self._reload)
        self._task = asyncio.create_task(self._watch(), name="edge-snapshot-watch")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await cancel_and_wait(self._task, log)
