"""The hub's RPC under load: bounded workers, one run per idempotency key, deadlines while waiting."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from hub.db import AsyncSession, Database, migrate
from hub.members import MemberFields, create_member
from hub.rpc import RpcServer
from hub.stored_value import Source, stored_value_balances, topup
from hub.stored_value_tables import LedgerEntry, LedgerKind
from hub.stores import add_store
from protocol import RpcRequest


@pytest.fixture
async def db(database_url):
    database = Database.from_url(database_url)
    await migrate(database.engine)
    await add_store(database, "shop-1")
    yield database
    await database.close()


def _request(method: str, params: dict[str, Any], key: str | None = None, seconds: float = 5) -> RpcRequest:
    return RpcRequest(
        id=uuid.uuid4(),
        method=method,
        params=params,
        deadline=datetime.now(UTC) + timedelta(seconds=seconds),
        idempotency_key=key,
    )


class _Probe:
    """A method that records how many runs overlap and which keys really ran."""

    def __init__(self, hold_s: float = 0.02):
        self.hold_s = hold_s
        self.running = 0
        self.most = 0
        self.runs: list[str] = []

    async def __call__(self, session: AsyncSession, store: str, params: dict[str, Any]) -> Any:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            self.runs.append(params["tag"])
            await asyncio.sleep(self.hold_s)
            return {"tag": params["tag"]}
        finally:
            self.running -= 1


async def test_sixty_concurrent_requests_are_all_answered_by_at_most_the_workers(db):
    server = RpcServer(db, workers=3)
    probe = _Probe()
    server.register("probe", probe)
    server.register("probe.keyed", probe, keyed=True)
    requests = [_request("probe", {"tag": f"n{i}"}) for i in range(40)]
    requests += [_request("probe.keyed", {"tag": f"k{i}"}, key=f"order-{i}:0") for i in range(20)]
    replies = await asyncio.gather(*(server.handle("shop-1", r) for r in requests))
    assert [r.id for r in replies] == [r.id for r in requests]
    assert all(r.ok for r in replies), [r.error for r in replies if not r.ok]
    assert [r.result["tag"] for r in replies] == [r.params["tag"] for r in requests]
    assert probe.most == 3  # concurrent, but never more than the workers
    assert sorted(probe.runs) == sorted(r.params["tag"] for r in requests)
    assert server._keys == {}  # no lock left behind per key


async def test_same_key_requests_in_a_burst_run_the_method_once(db):
    server = RpcServer(db, workers=4)
    probe = _Probe(hold_s=0.05)
    server.register("probe.keyed", probe, keyed=True)
    same = [_request("probe.keyed", {"tag": "twin"}, key="order-7:0") for _ in range(5)]
    others = [_request("probe.keyed", {"tag": f"o{i}"}, key=f"order-{i}:1") for i in range(10)]
    replies = await asyncio.gather(*(server.handle("shop-1", r) for r in [*same, *others]))
    assert all(r.ok for r in replies), [r.error for r in replies if not r.ok]
    assert probe.runs.count("twin") == 1  # the duplicates waited and got the stored outcome
    assert [r.result for r in replies[:5]] == [{"tag": "twin"}] * 5
    assert len(probe.runs) == 11


async def test_a_request_that_waits_past_its_deadline_is_refused_without_running(db):
    server = RpcServer(db, workers=1)
    probe = _Probe(hold_s=0.5)
    server.register("probe.keyed", probe, keyed=True)
    slow = asyncio.create_task(server.handle("shop-1", _request("probe.keyed", {"tag": "slow"}, key="a:0")))
    await asyncio.sleep(0.05)
    late = await server.handle("shop-1", _request("probe.keyed", {"tag": "late"}, key="b:0", seconds=0.2))
    assert not late.ok
    assert "too busy" in (late.error or "")
    assert (await slow).ok
    assert probe.runs == ["slow"]
    # the refusal was not stored: a retry with the same key runs
    retry = await server.handle("shop-1", _request("probe.keyed", {"tag": "late"}, key="b:0"))
    assert retry.ok
    assert probe.runs == ["slow", "late"]


async def test_fifty_concurrent_debits_with_a_duplicate_pair_debit_each_key_once(db):
    async with db.session() as session, session.begin():
        members = []
        for i in range(5):
            member = await create_member(session, MemberFields(f"1390000000{i}", channel="till"))
            await topup(
                session,
                member.id,
                10_000,
                payment_method="cash",
                payment_reference=None,
                source=Source(actor="test", store="shop-1"),
            )
            members.append(member.id)
    server = RpcServer(db)

    def debit(i: int, key: str) -> RpcRequest:
        params = {"member_id": members[i % 5], "order_id": key.partition(":")[0], "amount_fen": 100}
        return _request("stored_value.debit", params, key=key)

    requests = [debit(i, f"order-{i}:0") for i in range(48)]
    requests += [debit(0, "order-0:0"), debit(1, "order-1:0")]  # retries racing their originals
    replies = await asyncio.gather(*(server.handle("shop-1", r) for r in requests))
    assert all(r.ok for r in replies), [r.error for r in replies if not r.ok]
    assert replies[48].result == replies[0].result
    assert replies[49].result == replies[1].result
    async with db.session() as session:
        balances = [sum(await stored_value_balances(session, m)) for m in members]
        entries = await session.scalar(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == LedgerKind.DEBIT.value)
        )
    # 48 distinct orders, spread over 5 members: 10, 10, 10, 9, 9 payments of 1 yuan
    assert balances == [9_000, 9_000, 9_000, 9_100, 9_100]
    assert entries == 48
