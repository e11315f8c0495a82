"""The daemon's discovery: a printer announced on the LAN is bound by itself, the gateway is announced."""

from __future__ import annotations

import asyncio
import uuid

from zeroconf.asyncio import AsyncServiceInfo

from drivers.discovery import GATEWAY_TYPE, PDL_DATASTREAM, NetworkBrowser
from drivers.sim import SimNetworkPrinter
from edge.config import DiscoverySettings
from edge.devices import DeviceEntry, DeviceRegistry, load_registry, save_registry
from edge.discovery import Discovery
from tests.drivers import test_discovery as _zeroconf

# Loopback mDNS responders (skipped where multicast does not work), shared with the driver tests.
multicast = _zeroconf.multicast
zeroconf_pair = _zeroconf.zeroconf_pair
next_event = _zeroconf.next_event


async def _until(check, within: float = 10) -> None:
    async with asyncio.timeout(within):
        while not check():
            await asyncio.sleep(0.05)


async def test_a_lan_printer_becomes_the_receipt_printer_and_the_gateway_is_announced(
    zeroconf_pair, tmp_path
):
    advertiser, ours = zeroconf_pair
    store = f"shop-{uuid.uuid4().hex[:6]}"
    settings = DiscoverySettings(interval_s=0.5)
    async with SimNetworkPrinter() as sim, NetworkBrowser([GATEWAY_TYPE], zc=advertiser) as gateways:
        instance = f"Front-{uuid.uuid4().hex[:8]}"
        info = AsyncServiceInfo(
            PDL_DATASTREAM,
            f"{instance}.{PDL_DATASTREAM}",
            port=sim.port,
            parsed_addresses=["127.0.0.1"],
            server=f"{instance.lower()}.local.",
        )
        await advertiser.async_register_service(info)
        async with Discovery(settings, tmp_path, store=store, http_port=lambda: 8700, zc=ours) as discovery:
            await _until(lambda: load_registry(tmp_path).by_role("receipt") is not None)
            printer = load_registry(tmp_path).by_role("receipt")
            assert (printer.host, printer.port, printer.transport) == ("127.0.0.1", sim.port, "network")
            assert any(
                d["registered"] and d["kind"] == "printer"
                for d in discovery.describe(load_registry(tmp_path))
            )
            while (event := await next_event(gateways, "added")).device.properties.get("store") != store:
                pass
            assert event.device.port == 8700
        await advertiser.async_unregister_service(info)


async def test_a_store_that_has_a_printer_keeps_its_binding(zeroconf_pair, tmp_path):
    advertiser, ours = zeroconf_pair
    mine = DeviceEntry(
        id="net-10.0.0.9-9100", name="前台", transport="network", host="10.0.0.9", role="receipt"
    )
    save_registry(tmp_path, DeviceRegistry(devices=[mine]))
    async with SimNetworkPrinter() as sim:
        instance = f"Other-{uuid.uuid4().hex[:8]}"
        info = AsyncServiceInfo(
            PDL_DATASTREAM,
            f"{instance}.{PDL_DATASTREAM}",
            port=sim.port,
            parsed_addresses=["127.0.0.1"],
            server=f"{instance.lower()}.local.",
        )
        await advertiser.async_register_service(info)
        settings = DiscoverySettings(interval_s=0.5, advertise=False)
        async with Discovery(
            settings, tmp_path, store="shop-1", http_port=lambda: 8700, zc=ours
        ) as discovery:
            await _until(lambda: any(d.port == sim.port for d in discovery.found))
            await asyncio.sleep(0.3)
        await advertiser.async_unregister_service(info)
    assert load_registry(tmp_path).devices == [mine]
