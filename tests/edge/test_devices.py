"""Printers in the running edge: registry, receipts printed with the sale, test page, preview, health."""

from __future__ import annotations

import asyncio

import pytest

from drivers.sim import SimNetworkPrinter
from edge.cli import main
from edge.devices import DeviceEntry, DeviceRegistry, load_registry, save_registry


async def _until(check, within: float = 10) -> None:
    async with asyncio.timeout(within):
        while not check():
            await asyncio.sleep(0.05)


async def test_a_paid_order_prints_its_receipt_once_on_the_receipt_printer(api):
    async with SimNetworkPrinter() as sim:
        entry = DeviceEntry(
            id="net-front", name="前台", transport="network", host="127.0.0.1", port=sim.port, paper_mm=58
        )
        await asyncio.to_thread(save_registry, api.daemon.settings.state_dir, DeviceRegistry(devices=[entry]))
        await _until(lambda: [d["health"] for d in api.daemon.devices.health()] == ["ok"])
        assert api.daemon.devices.health()[0]["role"] == "receipt"  # the only printer

        status, _ = await api.call("POST", "/api/v1/shifts", {"float_fen": 0})
        assert status == 201
        order = await api.open_order()
        await api.add(order["id"], barcode="6954767410388", qty=2)
        paid = await api.pay(order["id"], "cash", 1000)
        await sim.wait_for(lambda p: len(p.jobs) >= 1, within=10)
        await asyncio.sleep(0.3)
        assert len(sim.jobs) == 1
        assert sim.jobs[0][0] == "[DRAWER 2]"  # a cash sale opens the drawer before its receipt
        text = "\n".join(sim.jobs[0])
        assert "可口可乐330ml" in text
        assert f"{paid['number']:04d}" in text
        assert "￥6.00" in text  # total, with the full-width yen the printer's font has
        assert all(len(line.encode("gb18030")) <= 32 for line in sim.jobs[0] if not line.startswith("["))

        status, body = await api.call("GET", "/api/v1/devices/receipt/preview")
        assert status == 200
        assert [job["kind"] for job in body["jobs"]] == ["drawer", "receipt"]
        assert body["jobs"][1]["state"] == "done"
        assert "可口可乐330ml" in "\n".join(body["jobs"][1]["lines"])

        status, body = await api.call("POST", "/api/v1/devices/net-front/test")
        assert status == 403  # a cashier may not
        await api.sign_in("mgr")
        status, body = await api.call("POST", "/api/v1/devices/net-front/test")
        assert status == 202, body
        await sim.wait_for(lambda p: len(p.jobs) >= 2, within=10)
        assert "打印测试 TEST PAGE" in "\n".join(sim.jobs[1])

        status, body = await api.call("POST", f"/api/v1/orders/{order['id']}/reprint")
        assert status == 200
        await sim.wait_for(lambda p: len(p.jobs) >= 3, within=10)
        assert "重打小票" in "\n".join(sim.jobs[2])

        await sim.set_offline(True)
        await _until(lambda: "offline" in api.daemon.devices.health()[0]["health"], within=20)
        link_status = await api.daemon.link.status()
        assert link_status.devices[0].id == "net-front"
        assert not link_status.devices[0].ok


def test_devices_cli_add_bind_and_refuse_bad_input(tmp_path, capsys):
    toml = tmp_path / "edge.toml"
    state = tmp_path / "state"
    toml.write_text(f'store = "shop-1"\nstate_dir = "{state}"\n[mqtt]\nhost = "127.0.0.1"\n')
    main(
        ["--config", str(toml), "devices", "add", "--name", "前台", "--host", "192.168.1.50", "--paper", "58"]
    )
    main(
        [
            "--config",
            str(toml),
            "devices",
            "add",
            "--name",
            "热菜",
            "--host",
            "192.168.1.51",
            "--role",
            "kitchen-hot",
        ]
    )
    registry = load_registry(state)
    assert [d.id for d in registry.devices] == ["net-192.168.1.50-9100", "net-192.168.1.51-9100"]
    assert registry.by_role("receipt") is None  # two printers: the installer must say which
    main(["--config", str(toml), "devices", "bind", "前台", "receipt"])
    assert load_registry(state).by_role("receipt").name == "前台"
    main(["--config", str(toml), "devices"])
    out = capsys.readouterr().out
    assert "role=receipt" in out
    assert "role=kitchen-hot" in out
    for bad in (["bind", "前台", "cashier"], ["add", "--name", "x"], ["bind", "nope", "receipt"]):
        with pytest.raises(SystemExit) as exit_:
            main(["--config", str(toml), "devices", *bad])
        assert exit_.value.code == 2, bad
    assert len(load_registry(state).devices) == 2  # nothing half-written


async def test_kitchen_tickets_go_to_their_station_once(api):
    async with SimNetworkPrinter() as front, SimNetworkPrinter() as bar:
        devices = [
            DeviceEntry(
                id="front",
                name="前台",
                transport="network",
                host="127.0.0.1",
                port=front.port,
                role="receipt",
            ),
            DeviceEntry(
                id="bar",
                name="吧台",
                transport="network",
                host="127.0.0.1",
                port=bar.port,
                role="kitchen-bar",
                paper_mm=58,
                categories=["咖啡", "茶饮"],
            ),
        ]
        await asyncio.to_thread(save_registry, api.daemon.settings.state_dir, DeviceRegistry(devices=devices))
        await _until(lambda: [d["health"] for d in api.daemon.devices.health()] == ["ok", "ok"])
        status, _ = await api.call("POST", "/api/v1/shifts", {"float_fen": 0})
        assert status == 201
        catalog = api.daemon.snapshots.catalog
        coffee = next(p for p in catalog.search("拿铁") if p.category == "咖啡")
        order = await api.open_order()
        await api.add(order["id"], sku=coffee.sku, qty=2)
        await api.add(order["id"], barcode="6954767410388")  # a drink from the shelf: not for the bar
        paid = await api.pay(order["id"], "cash", 10000)
        await bar.wait_for(lambda p: len(p.jobs) >= 1, within=10)
        await front.wait_for(lambda p: len(p.jobs) >= 1, within=10)
        await asyncio.sleep(0.5)
        assert len(bar.jobs) == 1
        ticket = "\n".join(bar.jobs[0])
        assert "吧台" in ticket
        assert coffee.name in ticket
        assert "可口可乐" not in ticket
        assert f"{paid['number']:04d}" in ticket
        assert len(front.jobs) == 1  # the receipt
        # asking the kitchen again sends nothing new: the station already has it
        await api.daemon.journal.transaction(
            lambda conn: api.daemon.devices.queue_in(conn, "kitchen", "kitchen", order["id"])
        )
        await asyncio.sleep(0.5)
        assert len(bar.jobs) == 1
        # a refund takes the coffee back: the bar is told to stop, once
        await api.sign_in("mgr")
        status, body = await api.call("POST", f"/api/v1/orders/{order['id']}/refunds", {"reason": "等太久"})
        assert status == 201, body
        await bar.wait_for(lambda p: len(p.jobs) >= 2, within=10)
        assert [f"取消 {coffee.name}", "x2"] == [line.strip() for line in bar.jobs[1][4:6]]  # big type wraps


async def test_closing_the_shift_prints_the_report_to_sign(api):
    async with SimNetworkPrinter() as sim:
        entry = DeviceEntry(id="net-front", name="前台", transport="network", host="127.0.0.1", port=sim.port)
        await asyncio.to_thread(save_registry, api.daemon.settings.state_dir, DeviceRegistry(devices=[entry]))
        await _until(lambda: [d["health"] for d in api.daemon.devices.health()] == ["ok"])
        status, _ = await api.call("POST", "/api/v1/shifts", {"float_fen": 20000})
        assert status == 201
        status, body = await api.call("POST", "/api/v1/shifts/current/close", {"counted_cash_fen": 19950})
        assert status == 200, body
        await sim.wait_for(lambda p: len(p.jobs) >= 1, within=10)
        text = "\n".join(sim.jobs[0])
        assert "交班报表" in text
        assert "短款" in text  # 0.50 short
        assert "收银员签字" in text
