"""`storelink-hub demo`: the whole system on one machine with embedded defaults.

Runs the hub (embedded amqtt broker, SQLite) in this process and one store's edge daemon
as a child process, exactly as they would run on two machines: the two meet only over MQTT.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import signal
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import aiohttp

from hub import auth
from hub.broker import free_port, port_in_use
from hub.config import BrokerSettings, HubSettings
from hub.demo_appointments import appointments_banner, setup_demo_appointments
from hub.demo_catalog import STORE_B, setup_demo_catalog
from hub.demo_promotions import promotions_banner, setup_demo_promotions
from hub.errors import HubError, NotFound
from hub.loyalty_rules import LevelsConfig, PointsRules, load_levels, save_setting
from hub.service import Hub
from hub.stored_value import save_rules
from hub.stored_value_rules import BonusRules
from hub.stores import add_store, list_stores
from protocol.aio import cancel_and_wait, wait_for_stop_signal

__all__ = ["DEMO_STORE", "run_demo"]

DEMO_STORE = "demo"
DEMO_STORE_NAME = "演示便利店"
DEMO_USER = "demo-owner"
DEMO_STAFF = "manager"
_HOST = "127.0.0.1"
_RESTART_S = 3


def _port(preferred: int) -> int:
    return preferred if preferred and not port_in_use(_HOST, preferred) else free_port(_HOST)


async def _demo_owner(hub: Hub) -> tuple[str, str]:
    password = secrets.token_urlsafe(12)
    try:
        await auth.set_password(hub.db, DEMO_USER, password)
    except NotFound:
        await auth.add_user(hub.db, DEMO_USER, password, auth.Role.OWNER)
    user = await auth.authenticate(hub.db, DEMO_USER, password)
    issued = await auth.issue_token(hub.db, user.id, timedelta(days=7))
    return password, issued.token


# What a small café chain starts with: top up ¥500 and become gold (9.5折 and member
# prices), 充500送80 / 充1000送200, 100 points for joining, 100 points pay ¥1.
_DEMO_LEVELS = {
    "metric": "topup",
    "levels": [
        {"code": "silver", "name": "银卡", "rank": 1, "threshold": 0},
        {
            "code": "gold",
            "name": "金卡",
            "rank": 2,
            "threshold": 50_000,
            "discount_bp": 9500,
            "member_prices": True,
        },
    ],
}
_DEMO_BONUS = {"tiers": [{"min_fen": 50_000, "bonus_fen": 8_000}, {"min_fen": 100_000, "bonus_fen": 20_000}]}
_DEMO_POINTS = {"registration_points": 100}


async def _demo_loyalty(hub: Hub) -> None:
    """Give a new demo chain member rules, so the till's member flow has something to show."""
    async with hub.db.session() as session, session.begin():
        if (await load_levels(session)).levels:
            return  # configured before (maybe changed by hand): keep it
        await save_setting(session, "levels", LevelsConfig.model_validate(_DEMO_LEVELS), f"user:{DEMO_USER}")
        await save_setting(session, "points", PointsRules.model_validate(_DEMO_POINTS), f"user:{DEMO_USER}")
        await save_rules(session, BonusRules.model_validate(_DEMO_BONUS), actor=f"user:{DEMO_USER}")


def _edge_toml(mqtt_port: int, password: str, edge_port: int, state: Path) -> str:
    return (
        f'store = "{DEMO_STORE}"\n'
        f'store_name = "{DEMO_STORE_NAME}"\n'
        f'state_dir = "{state.resolve()}"\n'
        f'http_host = "{_HOST}"\n'
        f"http_port = {edge_port}\n"
        'log_level = "WARNING"\n\n'
        f"[mqtt]\n"
        f'host = "{_HOST}"\n'
        f"port = {mqtt_port}\n"
        f'password = "{password}"\n'
        "backoff_cap = 3\n"  # back quickly after a demo hub restart
        # The café's bar printer is also a kitchen screen; counter orders are called by number.
        "\n[kds]\npickup_on_pay = true\n"
        'screens = [{ station = "吧台" }]\n'
    )


async def _wait_online(hub: Hub, within: float, stop: asyncio.Task[None]) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline and not stop.done():
        stores = await list_stores(hub.db, stale_after=timedelta(minutes=2))
        if any(s.id == DEMO_STORE and s.online for s in stores):
            return True
        await asyncio.sleep(0.2)
    return False


async def run_demo(state: Path, *, hub_port: int, cwd: Path) -> None:
    """Run hub + edge until Ctrl-C, then stop both cleanly; SIGUSR1 restarts the hub alone."""
    stop = asyncio.create_task(wait_for_stop_signal(), name="demo-signal")
    restart = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, restart.set)
    try:
        await _run(state, hub_port, cwd, stop, restart)
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
        await cancel_and_wait(stop, logging.getLogger(__name__))
    print("storelink demo stopped.")


async def _run(
    state: Path, hub_port: int, cwd: Path, stop: asyncio.Task[None], restart: asyncio.Event
) -> None:
    await asyncio.to_thread(state.mkdir, parents=True, exist_ok=True)
    mqtt_port = _port(1883)
    settings = HubSettings(
        state_dir=state / "hub",
        http_host=_HOST,
        http_port=_port(hub_port),
        broker=BrokerSettings(bind=_HOST, port=mqtt_port),
    )
    edge: asyncio.subprocess.Process | None = None
    printers, printer_args = await _start_printers()
    try:
        while True:
            async with Hub(settings) as hub:
                if edge is None:
                    edge = await _start_store(hub, state, cwd, mqtt_port, printer_args)
                else:
                    print("hub is back; the store sends what it sold meanwhile.", flush=True)
                if await _wait_online(hub, 15, stop):
                    print(f"store '{DEMO_STORE}' is online at the hub; Ctrl-C stops all.", flush=True)
                else:
                    print(f"store '{DEMO_STORE}' is not online yet; see the log above.", flush=True)
                exited = asyncio.create_task(edge.wait(), name="demo-edge-exit")
                restarting = asyncio.create_task(restart.wait(), name="demo-restart")
                await asyncio.wait({exited, stop, restarting}, return_when=asyncio.FIRST_COMPLETED)
                for task in (exited, restarting):
                    await cancel_and_wait(task, logging.getLogger(__name__))
                if edge.returncode is not None:
                    print(f"the edge daemon exited with code {edge.returncode}; stopping", file=sys.stderr)
                    return
                if stop.done():
                    return
            restart.clear()
            print(
                f"hub stopped (SIGUSR1); the store keeps selling offline. Back in {_RESTART_S} s.",
                flush=True,
            )
            await asyncio.wait({stop}, timeout=_RESTART_S)
            if stop.done():
                return
    finally:
        if edge is not None:
            await _stop(edge)
        await _stop(printers)


async def _start_store(
    hub: Hub, state: Path, cwd: Path, mqtt_port: int, printers: list[list[str]]
) -> asyncio.subprocess.Process:
    """Register the demo store, set up its edge like an installer would, start it and print how to use it."""
    creds = await add_store(hub.db, DEMO_STORE, DEMO_STORE_NAME, rotate=True)
    password, token = await _demo_owner(hub)
    await _demo_loyalty(hub)
    await setup_demo_catalog(hub.db, DEMO_STORE, hub.link)
    promos = await setup_demo_promotions(hub.db, DEMO_STORE, hub.link)
    beauty = await setup_demo_appointments(hub.db)
    edge_port = _port(8700)
    edge_toml = state / "edge.toml"
    toml = _edge_toml(mqtt_port, creds.password, edge_port, state / "edge")
    await asyncio.to_thread(_write_private, edge_toml, toml)
    hub_url = f"http://{_HOST}:{hub.http_port}"
    edge_url = f"http://{_HOST}:{edge_port}"
    info: dict[str, object] = {
        "hub_url": hub_url,
        "edge_url": edge_url,
        "hub_token": token,
        "store": DEMO_STORE,
        "hub_user": DEMO_USER,
        "hub_password": password,
        "mqtt_port": mqtt_port,
        "demo_pid": os.getpid(),
        "store_b": STORE_B,
        **beauty,
        **promos,
    }
    demo_json = cwd / "storelink-demo.json"
    staff_pin = f"{secrets.randbelow(10**6):06d}"
    await _edge_cli(edge_toml, "catalog", "load", "--sample")
    # The demo's printers get new ports every run: register only this run's.
    await asyncio.to_thread((state / "edge" / "devices.json").unlink, missing_ok=True)
    for args in printers:
        await _edge_cli(edge_toml, "devices", "add", *args)
    staff = ("staff", "add", DEMO_STAFF, "--name", "演示店长", "--role", "manager", "--pin-stdin")
    await _edge_cli(edge_toml, *staff, stdin=staff_pin)
    edge = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "edge", "--config", str(edge_toml), "run"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        info |= {
            "device_token": await _pair_device(edge_toml, edge_url),
            "staff_id": DEMO_STAFF,
            "staff_pin": staff_pin,
        }
    except BaseException:
        await _stop(edge)
        raise
    await asyncio.to_thread(_write_private, demo_json, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    note = "" if mqtt_port == 1883 else " (port 1883 is taken by another broker)"
    screen_token = quote(str(info["device_token"]))
    kds_url = f"{edge_url}/kds?station={quote('吧台')}&token={screen_token}"
    queue_url = f"{edge_url}/queue?token={screen_token}"
    print(
        f"\nstorelink demo\n"
        f"  hub API      {hub_url}/api/v1/  (OpenAPI: /api/v1/openapi.json)\n"
        f"  edge API     {edge_url}/api/v1/status  ({DEMO_STORE}: {DEMO_STORE_NAME})\n"
        f"  MQTT broker  {_HOST}:{mqtt_port}, embedded amqtt{note}\n"
        f"  hub sign-in  user '{DEMO_USER}', password '{password}'\n"
        f"  store MQTT   user '{creds.username}', password in {edge_toml}\n"
        f"  till         device token in {demo_json.name}; staff '{DEMO_STAFF}' PIN {staff_pin}\n"
        f"  members      金卡 at ¥500 topped up (9.5折), 充500送80; walk-through in docs/till.md\n"
        f"  kitchen KDS  {kds_url}\n"
        f"  queue screen {queue_url}  (docs/restaurant.md)\n"
        f"  printers     simulated; what they printed:\n"
        f"               storelink-edge --config {edge_toml} devices preview receipt (or kitchen-bar)\n"
        f"  written to   {demo_json}\n"
        f"  restart hub  kill -USR1 {os.getpid()}  (the store keeps selling and catches up)\n\n"
        f'  curl -H "Authorization: Bearer {token}" {hub_url}/api/v1/stores\n',
        flush=True,
    )
    _catalog_banner(hub_url, token)
    appointments_banner(hub_url, token, beauty)
    promotions_banner(hub_url, edge_url, token, promos)
    return edge


def _catalog_banner(hub_url: str, token: str) -> None:
    """How to change a price at head office and see the two stores' ledgers (docs/inventory.md)."""
    auth_header = f'-H "Authorization: Bearer {token}"'
    json_header = '-H "Content-Type: application/json"'
    stores = f"{hub_url}/api/v1/stores"
    print(
        f"  catalog      {DEMO_STORE} and {STORE_B} (hub only, with opening stock) link the demo catalog\n"
        f"  change a price and publish it to the till:\n"
        f"  curl -X PATCH {auth_header} {json_header} -d '{{\"price_fen\": 280}}'"
        f" {stores}/{DEMO_STORE}/catalog/DRK-004\n"
        f"  curl -X POST {auth_header} {stores}/{DEMO_STORE}/catalog/publish\n"
        f"  both stores' ledgers:\n"
        f"  curl {auth_header} {stores}/{DEMO_STORE}/stock/DRK-004/movements\n"
        f"  curl {auth_header} {stores}/{STORE_B}/stock/DRK-004/movements\n",
        flush=True,
    )


async def _start_printers() -> tuple[asyncio.subprocess.Process, list[list[str]]]:
    """Two simulated network ESC/POS printers (receipt, café bar) in their own process.

    Returns the process and the `storelink-edge devices add` arguments that register them.
    """
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "drivers", "sim-printers", "2"), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None  # noqa: S101 - asked for above
    ports = []
    async with asyncio.timeout(10):
        for _ in range(2):
            line = (await proc.stdout.readline()).decode()
            ports.append(line.rsplit(":", 1)[-1].strip())
    return proc, [
        ["--name", "前台", "--host", _HOST, "--port", ports[0], "--role", "receipt", "--paper", "58"],
        ["--name", "吧台", "--host", _HOST, "--port", ports[1], "--role", "kitchen-bar", "--paper", "58",
         "--categories", "咖啡", "茶饮", "烘焙"],
    ]  # fmt: skip


def _write_private(path: Path, text: str) -> None:
    """Write a file holding credentials, readable only by its owner."""
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text, encoding="utf-8")


async def _edge_cli(config: Path, *args: str, stdin: str | None = None) -> str:
    """Run a `storelink-edge` command the way an installer would; fail loudly."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "edge", "--config", str(config), *args),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate((stdin + "\n").encode() if stdin else b"")
    if proc.returncode:
        raise HubError(f"storelink-edge {' '.join(args)} failed: {err.decode().strip()}")
    return out.decode()


async def _pair_device(config: Path, edge_url: str) -> str:
    """Pair a demo device through the edge's own pairing flow and return its token."""
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(20):
            while True:
                try:
                    async with http.get(edge_url + "/api/v1/status") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        code = re.search(r"\b(\d{6})\b", await _edge_cli(config, "pair"))
        if code is None:
            raise HubError("storelink-edge pair printed no code")
        body = {"code": code.group(1), "name": "演示手机"}
        async with http.post(edge_url + "/api/v1/devices/pair", json=body) as resp:
            if resp.status != 201:
                raise HubError(f"pairing the demo device failed: {await resp.text()}")
            token: str = (await resp.json())["token"]
            return token


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        async with asyncio.timeout(5):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
