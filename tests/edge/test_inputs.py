"""Scanners, scale, pole display and cash drawer in the running edge, through real ptys and sockets."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import aiohttp
import pytest
from pydantic import ValidationError

from drivers.sim import SimNetworkPrinter, SimPoleDisplay, SimSerialScale, SimSerialScanner
from edge.devices import DeviceEntry, DeviceRegistry, load_registry, save_registry


async def _until(check, within: float = 10) -> None:
    async with asyncio.timeout(within):
        while not check():
            await asyncio.sleep(0.05)


async def _register(api, *entries: DeviceEntry) -> None:
    await asyncio.to_thread(
        save_registry, api.daemon.settings.state_dir, DeviceRegistry(devices=list(entries))
    )
    ids = {e.id for e in entries}
    await _until(lambda: ids <= {d["id"] for d in api.daemon.devices.health()})


def _health(api, device_id: str) -> str:
    return next(d["health"] for d in api.daemon.devices.health() if d["id"] == device_id)


class _Events:
    """A till client on the WebSocket, collecting what it receives."""

    def __init__(self, api):
        self.api = api
        self.received: list[dict] = []

    async def __aenter__(self):
        url = self.api.base.replace("http", "ws") + f"/api/v1/events?token={self.api.token}"
        self._ws = await self.api.http.ws_connect(url)
        assert (await self._ws.receive_json())["type"] == "hello"
        self._task = asyncio.create_task(self._pump())
        return self

    async def _pump(self):
        async for msg in self._ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.received.append(json.loads(msg.data))

    def of(self, kind: str) -> list[dict]:
        return [event["data"] for event in self.received if event["type"] == kind]

    async def __aexit__(self, *exc):
        self._task.cancel()
        await self._ws.close()


async def test_a_serial_scanner_reaches_the_till_and_survives_noise_and_unplugging(api):
    async with SimSerialScanner() as scanner, _Events(api) as events:
        entry = DeviceEntry(
            id="serial-scan", name="扫码枪", kind="scanner", transport="serial", path=scanner.port_path
        )
        await _register(api, entry)
        await _until(lambda: _health(api, "serial-scan") == "ok")
        scanner.write_garbage()
        await asyncio.sleep(0.8)  # the line goes idle: the noise is dropped, not glued to the next code
        scanner.scan("6954767410388")
        await _until(lambda: len(events.of("scan")) == 1)
        scan = events.of("scan")[0]
        assert scan["code"] == "6954767410388"
        assert scan["product"]["name"] == "可口可乐330ml"
        assert scan["product"]["price_fen"] == 300
        assert (scan["source"], scan["device"], scan["role"]) == ("scanner", "serial-scan", "scanner")
        scanner.write_partial("69547674")  # unplugged mid-scan: never a scan
    await _until(lambda: _health(api, "serial-scan").startswith("offline"))
    assert len(events.of("scan")) == 1


async def test_a_camera_scan_is_the_same_event_with_gs1_batch_and_expiry(api):
    async with _Events(api) as events:
        status, body = await api.call(
            "POST", "/api/v1/scans", {"code": "(01)06954767410388(17)271231(10)LOT7"}
        )
        assert status == 201, body
        await _until(lambda: len(events.of("scan")) == 1)
    scan = events.of("scan")[0]
    assert scan == body
    assert scan["source"] == "camera"
    assert scan["gs1"]["17"]["value"] == "2027-12-31"
    assert scan["gs1"]["10"]["value"] == "LOT7"
    assert scan["product"]["sku"]  # found by the GTIN inside the GS1 data
    status, body = await api.call("GET", "/api/v1/scans")
    assert body["scans"][-1]["code"].startswith("(01)")
    status, body = await api.call("POST", "/api/v1/scans", {"code": "bad\x00code"})
    assert status == 422


async def test_the_scale_reads_a_weight_and_says_why_it_cannot(api):
    async with SimSerialScale() as scale:
        await _register(
            api,
            DeviceEntry(id="scale-1", name="电子秤", kind="scale", transport="serial", path=scale.port_path),
        )
        scale.set_weight(1234)
        status, body = await api.call("GET", "/api/v1/scale/weight")
        assert (status, body["grams"]) == (200, 1234), body
        scale.set_weight(500, stable=False)
        status, body = await api.call("GET", "/api/v1/scale/weight")
        assert status == 503
        assert "still moving" in body["detail"]
    status, body = await api.call("GET", "/api/v1/scale/weight")
    assert status == 503  # unplugged
    assert _health(api, "scale-1").startswith("offline")


async def test_the_pole_display_shows_the_last_line_and_the_total(api):
    async with SimPoleDisplay() as display:
        await _register(
            api,
            DeviceEntry(id="pole", name="客显", kind="display", transport="serial", path=display.port_path),
        )
        await _until(lambda: _health(api, "pole") == "ok")
        order = await api.open_order()
        await api.add(order["id"], barcode="6954767410388", qty=2)
        # A Chinese name cannot be shown on an ASCII pole display: its SKU stands in.
        await _until(lambda: display.lines == ("DRK-002        ¥6.00", "TOTAL          ¥6.00"))
        await api.sign_in("mgr")
        status, _ = await api.call("POST", "/api/v1/devices/pole/test")
        assert status == 200
        await _until(lambda: display.lines[0].startswith("storelink test"))


async def test_the_drawer_opens_only_for_a_manager_with_a_reason_and_is_audited(api):
    async with SimNetworkPrinter() as sim:
        await _register(
            api,
            DeviceEntry(id="net-front", name="前台", transport="network", host="127.0.0.1", port=sim.port),
        )
        status, body = await api.call("POST", "/api/v1/drawer/open", {"reason": "找零"})
        assert status == 403  # a cashier may not
        await api.sign_in("mgr")
        status, body = await api.call("POST", "/api/v1/drawer/open", {"reason": ""})
        assert status == 422
        status, body = await api.call("POST", "/api/v1/drawer/open", {"reason": "找零给顾客"})
        assert status == 202, body
        await sim.wait_for(lambda p: "[DRAWER 2]" in p.decoded().lines, within=10)

    def audit(conn: sqlite3.Connection) -> list[tuple]:
        return conn.execute(
            "SELECT staff_id, action, detail FROM audit WHERE action = 'drawer.open'"
        ).fetchall()

    assert await api.daemon.journal.read(audit) == [("mgr", "drawer.open", "找零给顾客")]


async def test_no_receipt_printer_means_no_drawer(api):
    await api.sign_in("mgr")
    status, body = await api.call("POST", "/api/v1/drawer/open", {"reason": "count"})
    assert status == 409
    assert "no receipt printer" in body["detail"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "scanner", "transport": "network", "host": "10.0.0.2"}, "attached by evdev or serial"),
        ({"kind": "scale", "transport": "serial"}, "needs path"),
        ({"kind": "printer", "transport": "network", "host": "10.0.0.2", "role": "scale"}, "is for a scale"),
        ({"kind": "scanner", "transport": "evdev", "path": "x", "role": "receipt"}, "is for a printer"),
    ],
)
def test_the_registry_refuses_devices_that_cannot_work(fields, message):
    with pytest.raises(ValidationError, match=message):
        DeviceEntry.model_validate({"id": "d1", "name": "x", **fields})


def test_a_lone_device_of_each_kind_takes_its_role():
    registry = DeviceRegistry(
        devices=[
            DeviceEntry(id="p", name="p", transport="network", host="h"),
            DeviceEntry(id="s", name="s", kind="scanner", transport="evdev", path="usb-x"),
            DeviceEntry(id="w", name="w", kind="scale", transport="serial", path="/dev/ttyUSB0"),
        ]
    )
    assert [registry.role_of(d) for d in registry.devices] == ["receipt", "scanner", "scale"]
    two = DeviceRegistry(
        devices=[
            *registry.devices,
            DeviceEntry(id="s2", name="s2", kind="scanner", transport="evdev", path="usb-y"),
        ]
    )
    assert two.by_role("scanner") is None  # two scanners: bind them to lanes


async def test_a_printer_without_status_prints_blind_and_paper_low_shows_in_health(api):
    async with SimNetworkPrinter(answers_status=False) as mute, SimNetworkPrinter(paper_near_end=True) as low:
        await _register(
            api,
            DeviceEntry(
                id="mute",
                name="后厨",
                transport="network",
                host="127.0.0.1",
                port=mute.port,
                status_query=False,
            ),
            DeviceEntry(
                id="low", name="前台", transport="network", host="127.0.0.1", port=low.port, role="receipt"
            ),
        )
        await _until(lambda: _health(api, "low").startswith("paper low"))
        assert _health(api, "mute").startswith("ok")
        await api.sign_in("mgr")
        for device in ("mute", "low"):
            status, _ = await api.call("POST", f"/api/v1/devices/{device}/test")
            assert status == 202
        await mute.wait_for(lambda p: len(p.jobs) == 1, within=10)
        await low.wait_for(lambda p: len(p.jobs) == 1, within=10)


async def test_the_cli_registers_inputs_reads_the_scale_and_audits_the_drawer(tmp_path, capsys):
    from edge.cli import main  # noqa: PLC0415

    toml = tmp_path / "edge.toml"
    state = tmp_path / "state"
    toml.write_text(f'store = "shop-1"\nstate_dir = "{state}"\n[mqtt]\nhost = "127.0.0.1"\n')

    def cli(*args: str) -> None:
        main(["--config", str(toml), "devices", *args])

    async with SimSerialScale() as scale:
        scale.set_weight(2500)
        await asyncio.to_thread(cli, "add", "--name", "秤", "--kind", "scale", "--serial", scale.port_path)
        await asyncio.to_thread(cli, "test", "scale")
        assert "秤: 2500 g" in capsys.readouterr().out
    await asyncio.to_thread(cli, "add", "--name", "扫码", "--kind", "scanner", "--evdev", "usb-05e0-1200-x")
    await asyncio.to_thread(cli, "add", "--name", "前台", "--host", "192.168.1.50")
    await asyncio.to_thread(cli, "drawer", "--reason", "installer check")
    await asyncio.to_thread(cli, "discover")
    registry = load_registry(state)
    assert [registry.role_of(d) for d in registry.devices] == ["scale", "scanner", "receipt"]
    with pytest.raises(SystemExit):
        await asyncio.to_thread(cli, "add", "--name", "x", "--kind", "scale", "--host", "10.0.0.1")

    journal_path = state / "journal.sqlite3"
    with sqlite3.connect(journal_path) as conn:
        rows = conn.execute("SELECT staff_id, detail FROM audit WHERE action = 'drawer.open'").fetchall()
        kinds = conn.execute("SELECT kind FROM print_jobs").fetchall()
    assert rows == [("installer", "installer check (storelink-edge devices drawer)")]
    assert kinds == [("drawer",)]


def test_the_pairing_code_prints_with_a_qr(tmp_path, capsys):
    from edge.cli import main  # noqa: PLC0415
    from edge.print_queue import recent_jobs  # noqa: PLC0415

    toml = tmp_path / "edge.toml"
    state = tmp_path / "state"
    toml.write_text(
        f'store = "shop-1"\nstate_dir = "{state}"\nhttp_host = "192.168.1.20"\n[mqtt]\nhost = "127.0.0.1"\n'
    )
    main(
        ["--config", str(toml), "devices", "add", "--name", "前台", "--host", "192.168.1.50", "--paper", "58"]
    )
    main(["--config", str(toml), "pair", "--print"])
    code = capsys.readouterr().out.split("pairing code: ")[1][:6]
    with sqlite3.connect(state / "journal.sqlite3") as conn:
        (job,) = recent_jobs(conn, "net-192.168.1.50-9100", 5)
    from drivers import decode_escpos  # noqa: PLC0415

    lines = decode_escpos(job.payload or b"", "gb18030").lines
    assert f"{code[:3]} {code[3:]}" in "\n".join(lines)
    assert any(line.startswith("[QR") and "api=http://192.168.1.20:8700/api/v1" in line for line in lines)


async def test_a_pole_display_that_fell_behind_follows_the_till_again():
    from edge.events import QUEUE_SIZE, Event, EventBus  # noqa: PLC0415
    from edge.inputs import InputManager  # noqa: PLC0415

    class SlowDisplay:
        def __init__(self):
            self.shown: list[tuple[str, int, int]] = []
            self.stuck = asyncio.Event()

        async def __aenter__(self):
            return self

        async def __aexit__(self, *exc):
            return None

        async def show_lines(self, top, bottom=""):
            return None

        async def show(self, name, amount_fen, total_fen, *, sku=None):
            await self.stuck.wait()  # the serial write hangs until released
            self.shown.append((name, amount_fen, total_fen))

    display = SlowDisplay()
    bus = EventBus()
    inputs = InputManager(bus, lambda: None, open_display=lambda entry: display)
    entry = DeviceEntry(id="pole", name="客显", kind="display", transport="serial", path="/dev/null")

    def order(total: int) -> Event:
        line = {"name": "Cola", "total_fen": total, "sku": "C1"}
        return Event("order.updated", {"status": "open", "lines": [line], "total_fen": total}, order_id="o1")

    async with inputs:
        await inputs.apply(DeviceRegistry(devices=[entry]))
        await _until(lambda: len(bus) == 1)
        for total in range(QUEUE_SIZE + 10):  # more than the bus keeps for a slow subscriber
            bus.publish(order(total))
        display.stuck.set()
        await _until(lambda: len(bus) == 1)  # subscribed again after being dropped
        bus.publish(order(99_999))
        await _until(lambda: display.shown and display.shown[-1][2] == 99_999)
