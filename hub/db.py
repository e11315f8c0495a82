"""Hub database engine, sessions and migrations (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

__all__ = ["AsyncSession", "Database", "create_engine", "migrate"]

_MIGRATIONS = Path(__file__).with_name("migrations")
# PostgreSQL pool: kept connections cover the RPC workers (hub.rpc.WORKERS) plus ingest and the
# HTTP API. SQLAlchemy's default of 5 made a burst of RPC open and close overflow connections
# for every request (a new backend each time); bursts beyond this still get overflow ones.
_PG_POOL_SIZE = 12
_PG_MAX_OVERFLOW = 20


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """Create the one async engine of a hub process, with SQLite made safe for concurrency."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    options: dict[str, Any] = {"pool_size": _PG_POOL_SIZE, "max_overflow": _PG_MAX_OVERFLOW, **kwargs}
    return create_async_engine(url, pool_pre_ping=True, **options)


def _upgrade(connection: Connection) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = connection
    # "heads": a domain built on a branch is migrated before its branch is merged.
    command.upgrade(cfg, "heads")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest Alembic revision."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


class Database:
    """The engine plus a session factory; created once and passed to every part."""

    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        self.session = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def from_url(cls, url: str) -> Database:
        """Build from a SQLAlchemy async URL."""
        return cls(create_engine(url))

    async def close(self) -> None:
        """Dispose of pooled connections."""
        await self.engine.dispose()
