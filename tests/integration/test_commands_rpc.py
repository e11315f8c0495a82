"""Commands down and RPC up through a real broker: run once, results and replies reach the other side."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import aiohttp
import pytest

from edge.rpc import HubUnreachable
from hub import auth
from hub.commands import get_command, to_wire
from hub.stores import add_store
from tests.conftest import hub_settings, running_hub
from tests.integration.test_sync import _edge

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def _token(hub) -> str:
    await auth.add_user(hub.db, "boss", "long enough", "owner")
    user = await auth.authenticate(hub.db, "boss", "long enough")
    return (await auth.issue_token(hub.db, user.id, timedelta(hours=1))).token


async def _until_state(hub, command_id: str, within: float = 15) -> str:
    async with asyncio.timeout(within):
        while (row := await get_command(hub.db, "shop-1", command_id)).state == "pending":
            await asyncio.sleep(0.1)
    return row.state


async def _commands_run(daemon) -> int:
    return await daemon.journal.read(lambda c: c.execute("SELECT count(*) FROM commands").fetchone()[0])


async def test_commands_and_rpc_end_to_end(tmp_path, database_url, broker):
    body = asyncio.create_task(_end_to_end(tmp_path, database_url, broker))
    done, _ = await asyncio.wait({body}, timeout=90)
    if not done:
        for task in asyncio.all_tasks():  # say where it is stuck before failing
            task.print_stack(limit=8)
        body.cancel()
        pytest.fail("commands/RPC end to end did not finish within 90 s; task stacks printed above")
    body.result()


async def _end_to_end(tmp_path, database_url, broker):
    async with running_hub(hub_settings(tmp_path, database_url, broker)) as hub:
        creds = await add_store(hub.db, "shop-1")
        await broker.register("shop-1", creds.password)
        base = f"http://127.0.0.1:{hub.http_port}/api/v1/stores/shop-1"
        headers = {"Authorization": f"Bearer {await _token(hub)}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            # sent while the store is offline: delivered once it comes online
            async with http.post(
                f"{base}/commands", json={"type": "message", "body": {"text": "早班 7 点开门"}}
            ) as r:
                assert r.status == 201, await r.text()
                early = (await r.json())["id"]
            async with http.post(f"{base}/commands", json={"type": "BAD TYPE"}) as r:
                assert r.status == 422
            bad_bodies = (
                '{"type": "message", "body": {"x": NaN}}',  # not JSON the store could store
                json.dumps({"type": "message", "body": {"text": "x" * 70_000}}),  # beyond one message
            )
            for raw in bad_bodies:
                headers_json = {"Content-Type": "application/json"}
                async with http.post(f"{base}/commands", data=raw, headers=headers_json) as r:
                    assert r.status == 422, await r.text()
            async with _edge(tmp_path, broker.port, creds.password) as daemon:
                sub = daemon.bus.subscribe()
                assert await _until_state(hub, early) == "done"

                async with http.post(
                    f"{base}/commands", json={"type": "message", "body": {"text": "盘点"}}
                ) as r:
                    live = (await r.json())["id"]
                assert await _until_state(hub, live, within=5) == "done"
                async with http.post(f"{base}/commands", json={"type": "shelf.teleport", "body": {}}) as r:
                    unknown = (await r.json())["id"]
                assert await _until_state(hub, unknown, within=5) == "failed"
                async with http.get(f"{base}/commands/{unknown}") as r:
                    assert "does not know" in (await r.json())["detail"]

                # the broker redelivers (or the hub re-sends): the store does not run it again
                row = await get_command(hub.db, "shop-1", live)
                assert await hub.link.publish_command("shop-1", to_wire(row))
                await asyncio.sleep(0.5)
                assert await _commands_run(daemon) == 3
                shown = [sub.queue.get_nowait().data["text"] for _ in range(sub.queue.qsize())]
                assert sorted(shown) == sorted(["早班 7 点开门", "盘点"])

                # RPC: a real round trip and the hub's view of this store's snapshots
                pong = await daemon.rpc.call("ping")
                assert pong["pong"] is True
                async with http.put(
                    f"{base}/snapshots/prices", json={"price_overrides": {"DRK-002": 250}}
                ) as r:
                    assert r.status == 201
                assert await daemon.rpc.call("catalog.version") == {"versions": {"prices": 1}}
                with pytest.raises(Exception, match="unknown method"):
                    await daemon.rpc.call("coupon.teleport", {})
            async with http.get(f"{base}/commands") as r:
                states = sorted(item["state"] for item in (await r.json())["items"])
            assert states == ["done", "done", "failed"]

    # with the hub gone, online-only operations follow the offline policy
    async with _edge(tmp_path, broker.port, creds.password) as daemon:
        with pytest.raises(HubUnreachable, match="refused; take cash"):
            await daemon.rpc.call("coupon.redeem", {"code": "X"})
