"""Kitchen screens find the edge: `storelink-edge kds qr` pairs one and shows its link; mDNS names the page."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import urllib.parse
import uuid
from pathlib import Path

import pytest

from drivers import decode_escpos
from drivers.discovery import GATEWAY_TYPE, NetworkBrowser
from edge.access import load_staff, resolve_token
from edge.cli import _terminal_qr, main
from edge.config import DiscoverySettings
from edge.devices import DeviceEntry, DeviceRegistry, save_registry
from edge.discovery import KDS_PATH, Discovery
from edge.journal import Journal
from tests.drivers import test_discovery as _zeroconf
from tests.edge.conftest import seed

multicast = _zeroconf.multicast
zeroconf_pair = _zeroconf.zeroconf_pair
next_event = _zeroconf.next_event

SCREENS = '[kds]\nscreens = [{station = "茶水"}, {station = "面点", categories = ["烘焙"]}]\n'
URL = re.compile(r"^kitchen screen (\S+): (http://\S+)$", re.MULTILINE)


def _config(tmp_path: Path, kds: str = SCREENS, *, printer: bool = True) -> Path:
    state = tmp_path / "state"
    seed(state)
    if printer:
        front = DeviceEntry(id="front", name="前台", transport="network", host="127.0.0.1", role="receipt")
        save_registry(state, DeviceRegistry(devices=[front]))
    config = tmp_path / "edge.toml"
    config.write_text(
        f'store = "shop-1"\nstore_name = "人民路店"\nstate_dir = "{state}"\nhttp_host = "0.0.0.0"\n'
        f'http_port = 8711\n[mqtt]\nhost = "127.0.0.1"\npassword = "x"\n{kds}'
    )
    return config


def _jobs(state: Path) -> list[tuple[str, bytes]]:
    conn = sqlite3.connect(state / "journal.sqlite3")
    try:
        return conn.execute("SELECT printer, payload FROM print_jobs ORDER BY created_at, rowid").fetchall()
    finally:
        conn.close()


async def test_kds_qr_pairs_a_screen_and_prints_and_shows_its_link(tmp_path, capsys):
    config = _config(tmp_path)
    await asyncio.to_thread(main, ["--config", str(config), "kds", "qr", "茶水", "--host", "10.0.0.5"])
    out = capsys.readouterr().out
    [(station, url)] = URL.findall(out)
    assert station == "茶水"
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    assert (parts.netloc, parts.path, query["station"]) == ("10.0.0.5:8711", KDS_PATH, ["茶水"])
    # The link's token is a live device token: the screen opens already paired.
    state = tmp_path / "state"
    async with Journal(state / "journal.sqlite3") as journal:
        who = await resolve_token(journal, query["token"][0], load_staff(state / "staff.json"))
    assert f"device {who.device_id};" in out
    assert _terminal_qr(url) in out
    [(printer, payload)] = _jobs(state)
    lines = decode_escpos(payload).lines
    assert printer == "front"
    assert f"[QR {url}]" in lines
    assert any("茶水" in line for line in lines)
    assert who.device_id in "".join(lines)  # how to revoke it is on the slip


async def test_kds_qr_without_a_station_pairs_every_screen_and_can_skip_the_printer(tmp_path, capsys):
    config = _config(tmp_path)
    await asyncio.to_thread(main, ["--config", str(config), "kds", "qr", "--no-print"])
    found = URL.findall(capsys.readouterr().out)
    assert [station for station, _ in found] == ["茶水", "面点"]
    tokens = {urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["token"][0] for _, url in found}
    assert len(tokens) == 2  # one device per screen: each can be revoked alone
    assert _jobs(tmp_path / "state") == []


async def test_kds_qr_without_a_receipt_printer_only_shows_it(tmp_path, capsys):
    config = _config(tmp_path, printer=False)
    await asyncio.to_thread(main, ["--config", str(config), "kds", "qr", "面点"])
    out = capsys.readouterr().out
    assert len(URL.findall(out)) == 1
    assert "no receipt printer" in out
    assert _jobs(tmp_path / "state") == []


@pytest.mark.parametrize(
    ("kds", "station", "message"),
    [
        (SCREENS, "吧台", "no kitchen screen for station '吧台'; the screens are 茶水, 面点"),
        ("", "茶水", "no kitchen screens yet; list them under [kds] screens in edge.toml"),
    ],
    ids=["not-a-screen", "no-screens"],
)
async def test_kds_qr_refuses_a_station_without_a_screen(tmp_path, capsys, kds, station, message):
    config = _config(tmp_path, kds)
    with pytest.raises(SystemExit) as exit_:
        await asyncio.to_thread(main, ["--config", str(config), "kds", "qr", station])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "state" / "journal.sqlite3").exists()  # nothing was paired


async def test_the_gateway_announces_the_kitchen_screen_page(zeroconf_pair, tmp_path):
    advertiser, ours = zeroconf_pair
    store = f"shop-{uuid.uuid4().hex[:6]}"
    settings = DiscoverySettings(enabled=True, mdns_browse=False, interval_s=30)
    async with (
        NetworkBrowser([GATEWAY_TYPE], zc=advertiser) as gateways,
        Discovery(settings, tmp_path, store=store, http_port=lambda: 8700, zc=ours),
    ):
        while (event := await next_event(gateways, "added")).device.properties.get("store") != store:
            pass
    assert event.device.properties["kds"] == KDS_PATH
    assert event.device.port == 8700
