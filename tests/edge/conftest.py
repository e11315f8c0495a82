"""A running edge (real daemon, real HTTP) with the sample catalog, staff and a paired device."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.access import add_staff, create_pairing_code
from edge.catalog import CatalogDocument, CatalogStore
from edge.config import EdgeSettings
from edge.daemon import EdgeDaemon
from hub.broker import free_port

SAMPLE = Path(__file__).resolve().parents[2] / "edge" / "sample_catalog.json"
STAFF = {
    "mgr": ("王店长", "manager", "1234"),
    "c1": ("小李", "cashier", "5678"),
    "w1": ("小张", "waiter", "2468"),
}


@dataclass
class Api:
    """A thin HTTP client that keeps the device and session tokens."""

    http: aiohttp.ClientSession
    base: str
    daemon: EdgeDaemon
    device: str = ""
    token: str = ""

    async def call(
        self, method: str, path: str, body: Any = None, *, key: str | None = None, token: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token if token is not None else self.token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        kwargs: dict[str, Any] = {"headers": headers}
        if body is not None:
            kwargs["json"] = body
        async with self.http.request(method, self.base + path, **kwargs) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text else {})

    async def sign_in(self, staff_id: str) -> str:
        pin = STAFF[staff_id][2]
        status, body = await self.call(
            "POST", "/api/v1/sessions", {"staff_id": staff_id, "pin": pin}, token=self.device
        )
        assert status == 201, body
        self.token = body["token"]
        return self.token

    async def open_order(self) -> dict[str, Any]:
        status, body = await self.call("POST", "/api/v1/orders")
        assert status == 201, body
        return body["order"]

    async def add(self, order_id: str, **line: Any) -> dict[str, Any]:
        status, body = await self.call("POST", f"/api/v1/orders/{order_id}/lines", line)
        assert status == 201, body
        return body["order"]

    async def pay(
        self, order_id: str, method: str, amount: int, reference: str | None = None
    ) -> dict[str, Any]:
        payload = {"method": method, "amount_fen": amount}
        if reference:
            payload["reference"] = reference
        status, body = await self.call("POST", f"/api/v1/orders/{order_id}/payments", payload)
        assert status == 201, body
        return body["order"]


def edge_settings(state: Path, **extra: Any) -> EdgeSettings:
    return EdgeSettings(
        store="shop-1",
        store_name="人民路店",
        state_dir=state,
        http_host="127.0.0.1",
        http_port=0,
        mqtt={"host": "127.0.0.1", "port": free_port(), "password": "x", "backoff_cap": 30},
        **({"discovery": {"enabled": False}} | extra),
    )


def seed(state: Path) -> None:
    """Install the sample catalog and the test staff into a state directory."""
    store = CatalogStore(state / "catalog.json")
    try:
        store.save(CatalogDocument.model_validate_json(SAMPLE.read_text()))
    finally:
        store.close()
    for staff_id, (name, role, pin) in STAFF.items():
        add_staff(state / "staff.json", staff_id, name, role, pin)


@pytest.fixture(scope="session")
def seeded_state(tmp_path_factory) -> Path:
    state = tmp_path_factory.mktemp("seed")
    seed(state)
    return state


@pytest.fixture
async def api(tmp_path, seeded_state):
    """A paired device on a fresh edge, signed in as the cashier."""
    for name in ("catalog.json", "staff.json"):
        (tmp_path / name).write_bytes((seeded_state / name).read_bytes())
    async with EdgeDaemon(edge_settings(tmp_path)) as daemon, aiohttp.ClientSession() as http:
        client = Api(http, f"http://127.0.0.1:{daemon.http_port}", daemon)
        code = await create_pairing_code(daemon.journal)
        status, body = await client.call("POST", "/api/v1/devices/pair", {"code": code, "name": "收银台1"})
        assert status == 201, body
        client.device = body["token"]
        await client.sign_in("c1")
        yield client
