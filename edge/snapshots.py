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
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from edge.access import StaffDocument, load_staff
from edge.catalog import Catalog, CatalogDocument, CatalogStore
from edge.config import EdgeSettings
from edge.documents import DocumentError, read_document, write_document
from edge.errors import EdgeError
from edge.rpc import OfflinePolicy
from protocol import Snapshot
from protocol.aio import cancel_and_wait
from protocol.promotion_rules import RuleSet
from protocol.promotions import validate_rules

__all__ = ["AppliedSnapshots", "Snapshots"]

log = logging.getLogger(__name__)
POLL_S = 2.0


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


class AppliedSnapshots(BaseModel):
    """Which hub snapshot versions this store applied, and the bodies of kinds kept for later."""

    model_config = ConfigDict(extra="forbid")

    versions: dict[str, int] = {}
    bodies: dict[str, dict[str, Any]] = {}


class _StoreSettings(BaseModel):
    """The parts of a `settings` snapshot the edge applies now; other keys wait for their feature."""

    model_config = ConfigDict(extra="allow")

    offline_policy: OfflinePolicy | None = None


def _rule_set(version: int, body: dict[str, Any]) -> RuleSet:
    """The promotions snapshot's rules, refused whole if any rule is unusable."""
    rules = RuleSet.model_validate({"version": version, "rules": body.get("rules", [])})
    errors = validate_rules(rules.rules)
    if errors:
        raise EdgeError("; ".join(f"{e.field}: {e.message}" for e in errors[:5]))
    return rules


class Snapshots:
    """Current catalog and staff; `catalog` is None until one has been loaded."""

    def __init__(self, settings: EdgeSettings):
        self.catalog_path = settings.state_dir / "catalog.json"
        self.staff_path = settings.state_dir / "staff.json"
        self.applied_path = settings.state_dir / "snapshots.json"
        self.applied = AppliedSnapshots()
        self._layout = settings.scale.layout()
        self.catalog: Catalog | None = None
        self.staff = StaffDocument(version=0, staff=[])
        self.promotions = RuleSet()
        self._seen: dict[Path, float | None] = {}
        self._task: asyncio.Task[None] | None = None

    def _read_catalog(self) -> Catalog | None:
        doc = self._read_catalog_doc()
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

    def _apply(self, snapshot: Snapshot) -> bool:
        """Persist a newer snapshot (runs in a thread); False if not newer or unusable."""
        kind = snapshot.kind.value
        if snapshot.version <= self.applied.versions.get(kind, 0):
            return False
        promotions = self.promotions
        try:
            if kind == "catalog":
                doc = CatalogDocument.model_validate({**snapshot.body, "version": snapshot.version})
                self._save_catalog(doc)
            elif kind == "prices":
                current = self._read_catalog_doc()
                if current is None:
                    raise EdgeError("price snapshot before any catalog")
                overrides = snapshot.body.get("price_overrides", {})
                self._save_catalog(
                    CatalogDocument.model_validate({**current.model_dump(), "price_overrides": overrides})
                )
            elif kind == "settings":
                _StoreSettings.model_validate(snapshot.body)
            elif kind == "promotions":
                promotions = _rule_set(snapshot.version, snapshot.body)
            elif kind == "staff":
                write_document(
                    self.staff_path,
                    StaffDocument.model_validate({**snapshot.body, "version": snapshot.version}),
                )
        except (ValidationError, EdgeError) as err:
            log.error(
                "hub %s snapshot v%d is unusable, keeping the current one: %s", kind, snapshot.version, err
            )
            return False
        bodies = dict(self.applied.bodies)
        if kind not in ("catalog", "prices", "staff"):
            bodies[kind] = snapshot.body  # kept for the feature that will apply it
        applied = AppliedSnapshots(versions={**self.applied.versions, kind: snapshot.version}, bodies=bodies)
        write_document(self.applied_path, applied)
        self.applied = applied
        if kind == "promotions":
            self.promotions = promotions  # the till prices the next order change with it
        self._seen.clear()  # re-read the files we just wrote
        self._reload()
        log.info("applied hub %s snapshot v%d", kind, snapshot.version)
        return True

    def _read_catalog_doc(self) -> CatalogDocument | None:
        store = CatalogStore(self.catalog_path)
        try:
            return store.load()
        finally:
            store.close()

    def _save_catalog(self, doc: CatalogDocument) -> None:
        store = CatalogStore(self.catalog_path)
        try:
            store.save(doc, force=True)  # the hub is the authority once it publishes
        finally:
            store.close()

    def offline_policy(self, default: OfflinePolicy) -> OfflinePolicy:
        """Head office's offline policy for this store if its settings snapshot has one."""
        body = self.applied.bodies.get("settings")
        chosen = _StoreSettings.model_validate(body).offline_policy if body else None
        return chosen or default

    async def apply(self, snapshot: Snapshot) -> bool:
        """Apply a hub snapshot if it is newer than what this store holds."""
        return await asyncio.to_thread(self._apply, snapshot)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            await asyncio.to_thread(self._reload)

    async def __aenter__(self) -> Snapshots:
        applied = await asyncio.to_thread(read_document, self.applied_path, AppliedSnapshots)
        self.applied = applied or AppliedSnapshots()
        body = self.applied.bodies.get("promotions")
        if body is not None:
            try:
                self.promotions = _rule_set(self.applied.versions.get("promotions", 0), body)
            except (ValidationError, EdgeError) as err:
                # Only a hand-edited file gets here: _apply refused unusable sets before saving.
                log.error("the saved promotions snapshot is unusable; selling without promotions: %s", err)
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
