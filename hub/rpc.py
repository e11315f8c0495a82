"""RPC from stores (`up/rpc` → `down/rpc`): online-only operations with a deadline and idempotency.

A request whose deadline has passed is refused without running: the till has already
given up on it. With an idempotency key, the first outcome (success or refusal) is stored
in the same transaction as the method's own writes, and a retry with the same key gets
that outcome back instead of running again, even when two hub instances race.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.db import Database
from hub.models import RpcResult, StoreSnapshot
from protocol import RpcReply, RpcRequest
from protocol.version import SOFTWARE_VERSION

__all__ = ["RpcError", "RpcServer"]

log = logging.getLogger(__name__)
# Requests at the database at once. Beyond it they wait here, in arrival order, rather than for a
# pooled connection: the pool is also ingest's and the HTTP API's, and a request that waited past
# its deadline is refused before it takes one (hub.db sizes the PostgreSQL pool above this).
WORKERS = 8


class RpcError(Exception):
    """A method refused the request; the message goes back to the till as the reply's error."""


# (session inside the request's transaction, store, params) -> JSON result
Method = Callable[[AsyncSession, str, dict[str, Any]], Awaitable[Any]]


async def _ping(session: AsyncSession, store: str, params: dict[str, Any]) -> Any:
    return {"pong": True, "hub_time": datetime.now(UTC).isoformat(), "software": SOFTWARE_VERSION}


async def _catalog_version(session: AsyncSession, store: str, params: dict[str, Any]) -> Any:
    rows = await session.execute(
        select(StoreSnapshot.kind, StoreSnapshot.version).where(StoreSnapshot.store == store)
    )
    versions: dict[str, int] = {}
    for kind, version in rows.all():
        versions[kind] = version
    return {"versions": versions}


def _params_hash(request: RpcRequest) -> str:
    canonical = json.dumps([request.method, request.params], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _domain_methods() -> tuple[dict[str, Method], set[str]]:
    """Methods of the hub's domains (members, stored value, …), imported here to avoid a cycle.

    Each domain module exposes `RPC_METHODS` and may expose `RPC_KEYED`, the names of its
    money-moving methods, which are refused without an idempotency key. Add the module's
    import to the tuple below.
    """
    from hub import (  # noqa: PLC0415
        appointments_rpc,
        coupons_rpc,
        member_rpc,
        passes_rpc,
        points_redeem,
        stored_value_rpc,
    )

    modules: tuple[Any, ...] = (
        passes_rpc,
        member_rpc,
        stored_value_rpc,
        points_redeem,
        coupons_rpc,
        appointments_rpc,
    )
    methods = {name: method for module in modules for name, method in module.RPC_METHODS.items()}
    keyed = {name for module in modules for name in getattr(module, "RPC_KEYED", ())}
    return methods, keyed


class RpcServer:
    """The hub's RPC methods; later features register theirs (members, coupons, stored value)."""

    def __init__(self, db: Database, *, workers: int = WORKERS):
        self._db = db
        self._methods: dict[str, Method] = {"ping": _ping, "catalog.version": _catalog_version}
        methods, self._keyed = _domain_methods()
        self._methods.update(methods)
        self._workers = asyncio.Semaphore(workers)
        # (store, key) -> [lock, requests holding or waiting for it]; removed when the last is done
        self._keys: dict[tuple[str, str], tuple[asyncio.Lock, list[int]]] = {}

    def register(self, name: str, method: Method, *, keyed: bool = False) -> None:
        """Add a method; a `keyed` one moves money and is refused without an idempotency key."""
        self._methods[name] = method
        if keyed:
            self._keyed.add(name)

    async def handle(self, store: str, request: RpcRequest) -> RpcReply:
        """Run one request for `store` and return its reply (never raises for the caller's errors).

        Requests run concurrently, at most `workers` at the database at once; requests with
        the same idempotency key run one after another, so a duplicate finds the first's
        stored outcome instead of running the method again only to lose on the primary key.
        """
        if request.expired(datetime.now(UTC)):
            log.info("store %s: %s request %s arrived after its deadline", store, request.method, request.id)
            return RpcReply.failure(request.id, "the request's deadline passed before the hub received it")
        method = self._methods.get(request.method)
        if method is None:
            return RpcReply.failure(request.id, f"unknown method {request.method!r}")
        if request.idempotency_key is None:
            if request.method in self._keyed:
                return RpcReply.failure(
                    request.id, f"{request.method} needs an idempotency key, so a retry cannot apply it twice"
                )
            async with self._worker(store, request) as late:
                if late is not None:
                    return late
                async with self._db.session() as session, session.begin():
                    return await self._run(method, session, store, request)
        async with self._one_per_key(store, request.idempotency_key), self._worker(store, request) as late:
            if late is not None:
                return late
            try:
                return await self._run_once(method, store, request)
            except IntegrityError:
                # Another hub instance stored this key first: its outcome is the outcome.
                return await self._run_once(method, store, request)

    @asynccontextmanager
    async def _worker(self, store: str, request: RpcRequest) -> AsyncIterator[RpcReply | None]:
        """Hold one of the workers; yields a refusal instead if the deadline passed while waiting."""
        async with self._workers:
            if request.expired(datetime.now(UTC)):
                log.warning(
                    "store %s: %s request %s waited past its deadline for the hub; refused without running",
                    store,
                    request.method,
                    request.id,
                )
                yield RpcReply.failure(
                    request.id, "the hub was too busy to answer before the deadline; try again"
                )
            else:
                yield None

    @asynccontextmanager
    async def _one_per_key(self, store: str, key: str) -> AsyncIterator[None]:
        lock, users = self._keys.setdefault((store, key), (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._keys[(store, key)]

    async def _run(self, method: Method, session: AsyncSession, store: str, request: RpcRequest) -> RpcReply:
        try:
            return RpcReply.success(request.id, await method(session, store, dict(request.params)))
        except RpcError as err:
            await session.rollback()  # a refusal writes nothing, whatever the method wrote before it
            return RpcReply.failure(request.id, str(err))

    async def _run_once(self, method: Method, store: str, request: RpcRequest) -> RpcReply:
        key = request.idempotency_key
        assert key is not None  # noqa: S101 - checked by handle()
        digest = _params_hash(request)
        async with self._db.session() as session:
            tx = await session.begin()
            try:
                known = await session.get(RpcResult, (store, key))
                if known is not None:
                    replay = _replay(known, request, digest)  # before rollback expires `known`
                    await tx.rollback()
                    return replay
                try:
                    reply = RpcReply.success(request.id, await method(session, store, dict(request.params)))
                except RpcError as err:
                    # Undo whatever the method wrote, then record only the refusal.
                    await tx.rollback()
                    tx = await session.begin()
                    reply = RpcReply.failure(request.id, str(err))
                session.add(
                    RpcResult(
                        store=store,
                        idempotency_key=key,
                        method=request.method,
                        params_hash=digest,
                        ok=reply.ok,
                        result={"value": reply.result} if reply.ok else None,
                        error=reply.error,
                        created_at=datetime.now(UTC),
                    )
                )
                await tx.commit()
            except BaseException:
                if tx.is_active:
                    await tx.rollback()
                raise
        return reply


def _replay(known: RpcResult, request: RpcRequest, digest: str) -> RpcReply:
    """The stored outcome for a retried request, under the retry's request id."""
    if known.params_hash != digest:
        return RpcReply.failure(
            request.id, f"idempotency key {known.idempotency_key!r} was already used for a different request"
        )
    if known.ok:
        return RpcReply.success(request.id, (known.result or {}).get("value"))
    return RpcReply.failure(request.id, known.error or "refused")
