"""The hub's RPC: deadline, idempotency (also under a race), refusals and the built-in methods."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from hub.db import Database, migrate
from hub.models import Reconciliation
from hub.rpc import RpcError, RpcServer
from hub.snapshots import save_snapshot
from hub.stores import add_store
from protocol import RpcRequest, SnapshotKind


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "shop-1")
    await add_store(database, "shop-2")
    yield database
    await database.close()


def _request(
    method: str, params: dict | None = None, key: str | None = None, seconds: float = 3
) -> RpcRequest:
    return RpcRequest(
        id=uuid.uuid4(),
        method=method,
        params=params or {},
        deadline=datetime.now(UTC) + timedelta(seconds=seconds),
        idempotency_key=key,
    )


def _server(db: Database) -> tuple[RpcServer, list[dict]]:
    """A server with a `debit` method that writes a row each time it really runs."""
    server = RpcServer(db)
    runs: list[dict] = []

    async def debit(session, store, params):
        runs.append(params)
        # a real write in the request's transaction (the table is just a convenient one)
        session.add(
            Reconciliation(
                store=store,
                epoch=1,
                seq=len(runs),
                kind="test",
                key=str(params["amount_fen"]),
                existing_hash="",
                incoming=params,
                received_at=datetime.now(UTC),
            )
        )
        if params["amount_fen"] > 1000:
            raise RpcError("余额不足 (balance too low)")
        await asyncio.sleep(0.05)  # widen the window for racing duplicates
        return {"balance_fen": 1000 - params["amount_fen"]}

    server.register("stored_value.debit", debit)
    return server, runs


async def _writes(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Reconciliation)))


async def test_a_retried_request_gets_the_first_outcome_without_running_again(db):
    server, runs = _server(db)
    first = await server.handle("shop-1", _request("stored_value.debit", {"amount_fen": 300}, "o1:0"))
    retry = await server.handle("shop-1", _request("stored_value.debit", {"amount_fen": 300}, "o1:0"))
    assert first.ok
    assert first.result == {"balance_fen": 700}
    assert retry.ok
    assert retry.result == first.result
    assert retry.id != first.id
    assert len(runs) == 1
    assert await _writes(db) == 1
    # the key is per store: another store's "o1:0" is its own request
    other = await server.handle("shop-2", _request("stored_value.debit", {"amount_fen": 300}, "o1:0"))
    assert other.ok
    assert len(runs) == 2
    reused = await server.handle("shop-1", _request("stored_value.debit", {"amount_fen": 999}, "o1:0"))
    assert not reused.ok
    assert "different request" in (reused.error or "")
    assert len(runs) == 2


async def test_a_refusal_is_remembered_and_its_writes_undone(db):
    server, runs = _server(db)
    refused = await server.handle("shop-1", _request("stored_value.debit", {"amount_fen": 5000}, "o2:0"))
    again = await server.handle("shop-1", _request("stored_value.debit", {"amount_fen": 5000}, "o2:0"))
    assert not refused.ok
    assert "余额不足" in (refused.error or "")
    assert again.error == refused.error
    assert len(runs) == 1
    assert await _writes(db) == 0


async def test_racing_duplicates_run_once(db):
    server, _runs = _server(db)
    replies = await asyncio.gather(
        *(
            server.handle("shop-1", _request("stored_value.debit", {"amount_fen": 100}, "o3:0"))
            for _ in range(4)
        )
    )
    assert all(r.ok and r.result == {"balance_fen": 900} for r in replies)
    assert await _writes(db) == 1


async def test_expired_and_unknown_requests_do_not_run(db):
    server, runs = _server(db)
    late = await server.handle(
        "shop-1", _request("stored_value.debit", {"amount_fen": 1}, "o4:0", seconds=-1)
    )
    assert not late.ok
    assert "deadline" in (late.error or "")
    unknown = await server.handle("shop-1", _request("coupon.teleport"))
    assert not unknown.ok
    assert "unknown method 'coupon.teleport'" in (unknown.error or "")
    assert runs == []


async def test_ping_and_catalog_version(db):
    server = RpcServer(db)
    pong = await server.handle("shop-1", _request("ping"))
    assert pong.ok
    assert pong.result["pong"] is True
    assert (await server.handle("shop-1", _request("catalog.version"))).result == {"versions": {}}
    await save_snapshot(db, "shop-1", SnapshotKind.CATALOG, {"products": []})
    await save_snapshot(db, "shop-1", SnapshotKind.PRICES, {"price_overrides": {}})
    await save_snapshot(db, "shop-1", SnapshotKind.PRICES, {"price_overrides": {"A": 1}})
    versions = (await server.handle("shop-1", _request("catalog.version"))).result
    assert versions == {"versions": {"catalog": 1, "prices": 2}}
    assert (await server.handle("shop-2", _request("catalog.version"))).result == {"versions": {}}


async def test_a_keyed_method_is_refused_without_an_idempotency_key(db):
    server, runs = _server(db)
    server.register("debit2", server._methods["stored_value.debit"], keyed=True)
    reply = await server.handle("shop-1", _request("debit2", {"amount_fen": 5}))
    assert not reply.ok
    assert "idempotency key" in (reply.error or "")
    assert runs == []
    assert (await server.handle("shop-1", _request("debit2", {"amount_fen": 5}, key="k1"))).ok
    assert len(runs) == 1
