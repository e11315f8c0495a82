"""Hub commands run once on the edge; RPC calls follow the deadline and the offline policy."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from edge.commands import CommandRunner, recent_messages
from edge.events import EventBus
from edge.journal import Journal
from edge.rpc import HubUnreachable, OfflinePolicy, RpcClient, RpcFailed
from edge.snapshots import Snapshots
from protocol import Command, RpcReply, RpcRequest, Snapshot, SnapshotKind
from tests.edge.conftest import edge_settings


@pytest.fixture
async def journal(tmp_path):
    async with Journal(tmp_path / "journal.sqlite3") as journal:
        yield journal


def _message(text: str = "今天 18:00 盘点，请提前备货", **extra) -> Command:
    return Command(id=uuid.uuid4(), type="message", body={"text": text}, **extra)


async def _count(journal: Journal) -> int:
    return await journal.read(lambda conn: conn.execute("SELECT count(*) FROM commands").fetchone()[0])


async def test_a_command_runs_once_however_often_it_arrives(journal):
    bus = EventBus()
    sub = bus.subscribe()
    runner = CommandRunner(journal, bus)
    command = _message()
    first = await runner.run(command)
    again = await runner.run(command)
    assert first.ok
    assert first.cmd_id == command.id
    assert again == first
    assert await _count(journal) == 1
    assert sub.queue.qsize() == 1  # the screens were told once
    event = sub.queue.get_nowait()
    assert event.type == "hub.message"
    assert event.data["text"] == command.body["text"]
    shown = await journal.read(recent_messages)
    assert [m["text"] for m in shown] == [command.body["text"]]


async def test_refused_commands_are_recorded_and_not_retried(journal):
    calls = []

    def flaky(conn, command):
        calls.append(command.id)
        conn.execute("INSERT INTO audit (ts, staff_id, action, detail) VALUES ('t', 'hub', 'x', '')")
        raise ValueError("printer 'kitchen' is not bound")

    runner = CommandRunner(journal)
    runner.register("reprint", flaky)
    command = Command(id=uuid.uuid4(), type="reprint", body={})
    result = await runner.run(command)
    assert not result.ok
    assert "not bound" in result.detail
    assert (await runner.run(command)).detail == result.detail
    assert len(calls) == 1
    # the handler's write was undone with it; only the refusal is recorded
    audit = await journal.read(lambda conn: conn.execute("SELECT count(*) FROM audit").fetchone()[0])
    assert audit == 0

    unknown = await runner.run(Command(id=uuid.uuid4(), type="transfer.ship", body={}))
    assert not unknown.ok
    assert "does not know the command type 'transfer.ship'" in unknown.detail
    bad = await runner.run(Command(id=uuid.uuid4(), type="message", body={"text": ""}))
    assert not bad.ok
    assert bad.detail.startswith("text:")
    expired = await runner.run(_message(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert not expired.ok
    assert "expired" in expired.detail
    assert await journal.read(recent_messages) == []


async def test_command_records_survive_a_restart(tmp_path):
    command = _message()
    async with Journal(tmp_path / "j.sqlite3") as journal:
        await CommandRunner(journal).run(command)
    async with Journal(tmp_path / "j.sqlite3") as journal:
        bus = EventBus()
        sub = bus.subscribe()
        assert (await CommandRunner(journal, bus).run(command)).ok
        assert sub.queue.empty()  # not shown twice after the restart


class _Hub:
    """The far end of the link: answers requests, or stays silent, or is offline."""

    def __init__(self, client_ref: list[RpcClient], *, online: bool = True, answer: bool = True):
        self.online, self.answer = online, answer
        self.requests: list[RpcRequest] = []
        self._client_ref = client_ref

    async def publish(self, request: RpcRequest) -> bool:
        if not self.online:
            return False
        self.requests.append(request)
        if self.answer:
            client = self._client_ref[0]
            if request.method == "fail":
                reply = RpcReply.failure(request.id, "余额不足")
            else:
                reply = RpcReply.success(request.id, {"echo": request.params})
            asyncio.get_running_loop().call_soon(client.on_reply, reply)
        return True


def _client(policy: OfflinePolicy, **hub_kwargs) -> tuple[RpcClient, _Hub]:
    ref: list[RpcClient] = []
    hub = _Hub(ref, **hub_kwargs)
    client = RpcClient(hub.publish, lambda: policy)
    ref.append(client)
    return client, hub


async def test_rpc_call_reply_and_failure():
    client, hub = _client(OfflinePolicy())
    assert await client.call("ping", {"a": 1}, idempotency_key="o1:0") == {"echo": {"a": 1}}
    request = hub.requests[0]
    assert request.idempotency_key == "o1:0"
    assert timedelta(seconds=2) < request.deadline - datetime.now(UTC) <= timedelta(seconds=3)
    with pytest.raises(RpcFailed, match="余额不足"):
        await client.call("fail")


async def test_offline_policy_decides_what_the_till_may_do():
    policy = OfflinePolicy(stored_value="allow")
    client, _ = _client(policy, online=False)
    with pytest.raises(HubUnreachable) as refused:
        await client.call("coupon.redeem", {"code": "X"})
    assert not refused.value.offline_allowed
    assert "refused" in str(refused.value)
    with pytest.raises(HubUnreachable) as allowed:
        await client.call("stored_value.debit", {"amount_fen": 100})
    assert allowed.value.offline_allowed
    assert not allowed.value.outcome_unknown
    assert not OfflinePolicy().allows("stored_value.debit")
    assert not policy.allows("member.lookup")  # no offline rule exists for it


async def test_a_request_without_reply_times_out_with_an_unknown_outcome():
    client, hub = _client(OfflinePolicy(timeout_s=0.5), answer=False)
    started = asyncio.get_running_loop().time()
    with pytest.raises(HubUnreachable) as err:
        await client.call("stored_value.debit", idempotency_key="o2:1")
    assert err.value.outcome_unknown
    assert 0.45 < asyncio.get_running_loop().time() - started < 2
    # the late reply is dropped, not delivered to anyone
    client.on_reply(RpcReply.success(hub.requests[0].id, 1))


async def test_head_office_sets_the_offline_policy_through_the_settings_snapshot(tmp_path):
    settings = edge_settings(tmp_path)
    async with Snapshots(settings) as snapshots:
        assert snapshots.offline_policy(settings.offline) == OfflinePolicy()
        body = {"offline_policy": {"stored_value": "allow"}, "receipt_footer": "谢谢惠顾"}
        assert await snapshots.apply(
            Snapshot(kind=SnapshotKind.SETTINGS, version=1, ts=datetime.now(UTC), body=body)
        )
        assert snapshots.offline_policy(settings.offline).stored_value == "allow"
        bad = {"offline_policy": {"stored_value": "sometimes"}}
        assert not await snapshots.apply(
            Snapshot(kind=SnapshotKind.SETTINGS, version=2, ts=datetime.now(UTC), body=bad)
        )
        assert snapshots.applied.versions["settings"] == 1
        assert snapshots.offline_policy(settings.offline).stored_value == "allow"


async def test_hub_check_and_messages_over_http_when_the_hub_is_offline(api):
    status, body = await api.call("GET", "/api/v1/hub/check")
    assert status == 503, body
    assert body["title"] == "Hub unreachable"
    assert "ping" in body["detail"]
    await CommandRunner(api.daemon.journal).run(_message("明天停电，提前关店"))
    status, body = await api.call("GET", "/api/v1/messages")
    assert status == 200
    assert [m["text"] for m in body["messages"]] == ["明天停电，提前关店"]
