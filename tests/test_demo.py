"""The README's demo command: hub, embedded broker, SQLite and a store, reachable by curl."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def _get(url: str, token: str | None = None) -> tuple[int, str, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - local URL
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310
            return resp.status, resp.headers.get_content_type(), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get_content_type(), json.loads(err.read())


def _post(
    url: str, token: str, body: dict[str, Any], method: str = "POST", *, key: str | None = None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    request = urllib.request.Request(  # noqa: S310 - local URL
        url, data=json.dumps(body).encode(), headers=headers, method=method
    )
    with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310
        assert resp.status in (200, 201)
        return json.loads(resp.read())


def _sell_with_demo_credentials(info: dict[str, Any]) -> None:
    """What docs/till.md shows with curl: sign in, open a shift, sell, pay, refund, close the shift."""
    edge = info["edge_url"] + "/api/v1"
    session = _post(
        edge + "/sessions", info["device_token"], {"staff_id": info["staff_id"], "pin": info["staff_pin"]}
    )
    token = session["token"]
    _post(edge + "/shifts", token, {"float_fen": 20000})
    order = _post(edge + "/orders", token, {})["order"]
    _post(f"{edge}/orders/{order['id']}/lines", token, {"barcode": "6954767410388", "qty": 2})
    paid = _post(f"{edge}/orders/{order['id']}/payments", token, {"method": "cash", "amount_fen": 1000})[
        "order"
    ]
    assert paid["status"] == "paid"
    assert paid["tenders"][0]["change_fen"] == 400
    refund = _post(f"{edge}/orders/{order['id']}/refunds", token, {"reason": "演示退货"})["refund"]
    assert refund["total_fen"] == 600
    shift = _post(f"{edge}/shifts/current/close", token, {"counted_cash_fen": 20000})["shift"]
    assert (shift["expected_cash_fen"], shift["difference_fen"]) == (20000, 0)


def _member_flow(info: dict[str, Any]) -> None:
    """What docs/till.md shows: register at the till, top up with bonus, pay with points and
    stored value; the hub's API shows both ledgers."""
    edge, hub = info["edge_url"] + "/api/v1", info["hub_url"] + "/api/v1"
    token = _post(
        edge + "/sessions", info["device_token"], {"staff_id": info["staff_id"], "pin": info["staff_pin"]}
    )["token"]  # the shift opened by _price_change_and_hub_restart is still open
    member = _post(edge + "/members", token, {"phone": "139 0000 1234", "name": "演示会员"})
    assert (member["points"], member["level"]["code"]) == (100, "silver")
    topup = _post(
        f"{edge}/members/{member['id']}/topups", token, {"amount_fen": 50000, "method": "cash"}, key="demo-t1"
    )["topup"]
    assert (topup["bonus_fen"], topup["balance"]["total_fen"]) == (8000, 58000)
    order = _post(edge + "/orders", token, {})["order"]
    _post(f"{edge}/orders/{order['id']}/lines", token, {"barcode": "6954767410388", "qty": 4})
    order = _post(f"{edge}/orders/{order['id']}/member", token, {"phone": "13900001234"}, key="demo-m1")[
        "order"
    ]
    assert (order["member"]["level"], order["total_fen"]) == ("gold", 952)  # 9.5折 of the ¥2.50 store price
    pay = f"{edge}/orders/{order['id']}/payments"
    _post(pay, token, {"method": "points", "points": 100}, key="demo-p1")
    paid = _post(pay, token, {"method": "stored_value", "amount_fen": 852}, key="demo-s1")["order"]
    assert paid["status"] == "paid"

    def ledgers() -> tuple[list[str], list[str]]:
        stored = _get(f"{hub}/members/{member['id']}/stored-value/ledger", info["hub_token"])[2]["items"]
        points = _get(f"{hub}/members/{member['id']}/points", info["hub_token"])[2]["items"]
        return [e["kind"] for e in stored], [e["kind"] for e in points]

    _until(lambda: "earn" in ledgers()[1], 10, "the paid order never earned its points at the hub")
    stored, points = ledgers()
    assert stored == ["debit", "bonus", "topup"]  # newest first
    assert points == ["earn", "redeem", "registration"]


def _until(check, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _sell_cola(info: dict[str, Any], token: str) -> int:
    edge = info["edge_url"] + "/api/v1"
    order = _post(edge + "/orders", token, {})["order"]
    total = _post(f"{edge}/orders/{order['id']}/lines", token, {"barcode": "6954767410388"})["order"][
        "total_fen"
    ]
    _post(f"{edge}/orders/{order['id']}/payments", token, {"method": "cash", "amount_fen": total})
    return total


def _hub_orders(info: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        status, _, body = _get(f"{info['hub_url']}/api/v1/orders?store={info['store']}", info["hub_token"])
    except urllib.error.URLError:  # the hub is restarting
        return []
    return body["items"] if status == 200 else []


def _price_change_and_hub_restart(info: dict[str, Any], demo_pid: int) -> None:
    """Head office changes a price; then the hub restarts while the store sells: nothing is lost."""
    edge = info["edge_url"] + "/api/v1"
    token = _post(
        edge + "/sessions", info["device_token"], {"staff_id": info["staff_id"], "pin": info["staff_pin"]}
    )["token"]
    _post(edge + "/shifts", token, {"float_fen": 0})
    assert _sell_cola(info, token) == 300
    hub_prices = f"{info['hub_url']}/api/v1/stores/{info['store']}/snapshots/prices"
    _post(hub_prices, info["hub_token"], {"price_overrides": {"DRK-002": 250}}, method="PUT")
    product = f"{edge}/products/DRK-002"
    _until(
        lambda: _get(product, token)[2].get("store_price_fen") == 250, 10, "new price never reached the till"
    )
    assert _sell_cola(info, token) == 250
    _until(lambda: len(_hub_orders(info)) == 3, 10, "sales did not reach the hub")

    os.kill(demo_pid, signal.SIGUSR1)  # the demo stops its hub, then starts it again
    _until(lambda: not _get(edge + "/status")[2]["hub_online"], 10, "the store never noticed the hub stop")
    offline = [_sell_cola(info, token) for _ in range(3)]
    assert offline == [250, 250, 250]
    _until(lambda: len(_hub_orders(info)) == 6, 30, "orders sold while the hub was down never arrived")
    orders = _hub_orders(info)
    assert sorted(o["total_fen"] for o in orders) == [250, 250, 250, 250, 300, 600]
    assert len({o["id"] for o in orders}) == 6
    # The hub commits before its ack reaches the edge: give the ack its moment.
    _until(lambda: _get(edge + "/status")[2]["outbox_pending"] == 0, 10, "the edge never got the hub's ack")
    status = _get(edge + "/status")[2]
    assert status["outbox_pending"] == 0


def _printed(edge_toml: Path) -> None:
    """The simulated receipt printer received real ESC/POS whose decoded text is the receipt."""
    edge_cmd = shutil.which("storelink-edge", path=str(Path(sys.executable).parent))
    assert edge_cmd

    def preview() -> str:
        args = [edge_cmd, "--config", str(edge_toml), "devices", "preview", "receipt", "--last", "10"]
        return subprocess.run(args, capture_output=True, text=True, check=True, timeout=30).stdout

    _until(lambda: preview().count("[done]") >= 5, 15, "receipts were not printed")
    out = preview()
    assert "可口可乐330ml" in out
    assert "￥2.50" in out
    devices = subprocess.run(
        [edge_cmd, "--config", str(edge_toml), "devices"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert "role=receipt" in devices
    assert "role=kitchen-bar" in devices


def _catalog_price_and_transfer(info: dict[str, Any]) -> None:
    """Issue 7's demo: head office changes a price and publishes it, the till sells at it, stock
    moves from store B (hub only) to the demo store through the transfer API, both ledgers show it."""
    edge, hub, office = info["edge_url"] + "/api/v1", info["hub_url"] + "/api/v1", info["hub_token"]
    token = _post(
        edge + "/sessions", info["device_token"], {"staff_id": info["staff_id"], "pin": info["staff_pin"]}
    )["token"]  # the shift opened by _price_change_and_hub_restart is still open
    store, store_b, sprite = info["store"], info["store_b"], "DRK-004"
    _post(f"{hub}/stores/{store}/catalog/{sprite}", office, {"price_fen": 280}, method="PATCH")
    assert _post(f"{hub}/stores/{store}/catalog/publish", office, {})["products"] >= 40
    _until(
        lambda: _get(f"{edge}/products/{sprite}", token)[2].get("store_price_fen") == 280,
        10,
        "the published price never reached the till",
    )
    order = _post(edge + "/orders", token, {})["order"]
    total = _post(f"{edge}/orders/{order['id']}/lines", token, {"barcode": "6954767430188"})["order"][
        "total_fen"
    ]
    assert total == 280
    _post(f"{edge}/orders/{order['id']}/payments", token, {"method": "cash", "amount_fen": total})

    line = {"sku": sprite, "qty": "6"}
    transfer = _post(f"{hub}/transfers", office, {"from_store": store_b, "to_store": store, "lines": [line]})
    for step in ("approve", "ship"):
        _post(f"{hub}/transfers/{transfer['id']}/{step}", office, {})
    received = _post(f"{hub}/transfers/{transfer['id']}/receive", office, {"lines": [line]})
    assert (received["state"], received["lines"][0]["received"]) == ("received", "6")

    def ledger(shop: str) -> dict[str, Any]:
        return _get(f"{hub}/stores/{shop}/stock/{sprite}/movements", office)[2]

    _until(
        lambda: "sale" in {m["kind"] for m in ledger(store)["items"]}, 10, "the sale never reached the ledger"
    )
    here, there = ledger(store), ledger(store_b)
    assert {m["kind"] for m in here["items"]} == {"sale", "transit_in", "transfer_in"}
    assert here["level"]["on_hand"] == "5"  # 6 received, 1 sold
    assert [m["kind"] for m in there["items"]] == ["transfer_out", "adjustment"]  # newest first
    assert there["level"]["on_hand"] == "42"  # 48 opening stock, 6 sent


def _epoch(rfc3339: str) -> float:
    from datetime import datetime  # noqa: PLC0415 - only this step reads timestamps

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def _book_and_check_in(info: dict[str, Any]) -> None:
    """What docs/appointments.md shows: free slots at the beauty store, a booking, check-in on the card."""
    hub, token = info["hub_url"] + "/api/v1", info["hub_token"]
    store = f"{hub}/stores/{info['beauty_store']}"
    day = info["beauty_example_start"][:10]
    status, _, free = _get(f"{store}/availability?service={info['beauty_service']}&day={day}", token)
    assert status == 200, free
    soon = time.time() + 300  # a slot a few minutes ahead, so it is still ahead when booked
    starts = [s["starts_at"] for s in free["slots"] if _epoch(s["starts_at"]) > soon]
    assert starts, f"the demo therapist has no free slot today: {free}"
    booking = {
        "service": info["beauty_service"],
        "member_id": info["beauty_member_id"],
        "starts_at": starts[0],
    }
    appt = _post(f"{store}/appointments", token, booking)
    assert appt["status"] == "booked"
    visit = _post(f"{hub}/appointments/{appt['id']}/check-in", token, {})
    assert visit["appointment"]["status"] == "checked_in"
    assert visit["to_pay_fen"] == 0
    assert visit["pass_use"]["remaining"] == 9


def _receipts(edge_toml: Path, last: int) -> str:
    edge_cmd = shutil.which("storelink-edge", path=str(Path(sys.executable).parent))
    assert edge_cmd
    args = [edge_cmd, "--config", str(edge_toml), "devices", "preview", "receipt", "--last", str(last)]
    return subprocess.run(args, capture_output=True, text=True, check=True, timeout=30).stdout


def _promotions_and_coupon(info: dict[str, Any], edge_toml: Path) -> None:
    """Issue 8's demo (docs/promotions.md): 满50减5 and the fresh-food markdown of the hour on one
    printed receipt; the demo member's coupon listed at the till, used on an order, used at the hub."""
    edge, hub, office = info["edge_url"] + "/api/v1", info["hub_url"] + "/api/v1", info["hub_token"]
    token = _post(
        edge + "/sessions", info["device_token"], {"staff_id": info["staff_id"], "pin": info["staff_pin"]}
    )["token"]  # the shift opened by _price_change_and_hub_restart is still open
    names = {p["name"] for p in _get(f"{hub}/promotions", office)[2]["items"]}
    assert {"满50减5", "晚市鲜食 8折", "日间鲜食 9折"} <= names
    order = _post(edge + "/orders", token, {})["order"]
    _post(f"{edge}/orders/{order['id']}/lines", token, {"sku": "FRS-RICEBALL", "qty": "4"})  # 4 x ¥7.50
    order = _post(f"{edge}/orders/{order['id']}/lines", token, {"sku": "BAK-004", "qty": "2"})[
        "order"
    ]  # 2 x ¥22
    applied = {p["name"]: p["saving_fen"] for p in order["promotions"]}
    fresh = "日间鲜食 9折" if "日间鲜食 9折" in applied else "晚市鲜食 8折"  # whichever hour the test runs at
    assert applied == {fresh: 300 if fresh.startswith("日间") else 600, "满50减5": 500}
    assert (order["subtotal_fen"], order["total_fen"]) == (7400, 7400 - sum(applied.values()))
    paid = _post(f"{edge}/orders/{order['id']}/payments", token, {"method": "cash", "amount_fen": 10000})
    assert paid["order"]["status"] == "paid"
    saved = f"您共节省 ￥{sum(applied.values()) // 100}.{sum(applied.values()) % 100:02d}"
    _until(lambda: saved in _receipts(edge_toml, 1), 15, "the promotion receipt was not printed")
    receipt = _receipts(edge_toml, 1)
    assert "满50减5" in receipt
    assert fresh in receipt
    assert "金枪鱼饭团" in receipt
    _post(f"{edge}/orders/{order['id']}/reprint", token, {})
    _until(lambda: _receipts(edge_toml, 2).count(saved) == 2, 15, "the reprint was not printed")

    member = _post(edge + "/members/lookup", token, {"phone": info["promo_member_phone"]})
    assert member["id"] == info["promo_member_id"]
    codes = [c["code"] for c in _get(f"{edge}/members/{member['id']}/coupons", token)[2]["coupons"]]
    assert info["coupon_code"] in codes
    order = _post(edge + "/orders", token, {})["order"]
    _post(f"{edge}/orders/{order['id']}/lines", token, {"sku": "BAK-004"})  # ¥22, over the ¥20 threshold
    _post(f"{edge}/orders/{order['id']}/member", token, {"phone": info["promo_member_phone"]}, key="demo-c-m")
    order = _post(
        f"{edge}/orders/{order['id']}/coupons", token, {"code": info["coupon_code"]}, key="demo-c1"
    )["order"]
    assert order["total_fen"] == 1900
    _post(
        f"{edge}/orders/{order['id']}/payments", token, {"method": "cash", "amount_fen": 1900}, key="demo-c2"
    )

    def used() -> dict[str, Any]:
        coupons = _get(f"{hub}/members/{member['id']}/coupons", office)[2]["items"]
        return next(c for c in coupons if c["code"] == info["coupon_code"])

    assert (used()["state"], used()["used_order_id"]) == ("used", order["id"])
    stats = f"{hub}/coupon-templates/{info['coupon_template_id']}/stats"
    _until(
        lambda: _get(stats, office)[2]["revenue_fen"] == 1900, 10, "the coupon's order never reached the hub"
    )
    assert _get(stats, office)[2]["used"] == 1


def test_demo_shows_store_online_and_stops_on_ctrl_c(tmp_path: Path):
    hub_cmd = shutil.which("storelink-hub", path=str(Path(sys.executable).parent))
    assert hub_cmd, "storelink-hub console script is not installed in this environment"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    demo = subprocess.Popen(
        [hub_cmd, "demo", "--port", "0"],
        cwd=tmp_path,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        info_file = tmp_path / "storelink-demo.json"
        deadline = time.monotonic() + 30
        online = False
        while time.monotonic() < deadline and not online:
            time.sleep(0.3)
            assert demo.poll() is None, demo.communicate()
            if not info_file.exists():
                continue
            info = json.loads(info_file.read_text())
            status, _, body = _get(f"{info['hub_url']}/api/v1/stores", info["hub_token"])
            assert status == 200
            online = any(s["id"] == info["store"] and s["online"] for s in body["items"])
        assert online, "demo store never showed online at the hub"
        assert set(info) >= {"hub_url", "edge_url", "hub_token", "store"}

        status, ctype, body = _get(f"{info['hub_url']}/api/v1/stores")
        assert (status, ctype) == (401, "application/problem+json")
        status, _, edge = _get(f"{info['edge_url']}/api/v1/status")
        assert status == 200
        assert edge["store"] == info["store"]
        assert edge["hub_online"] is True
        assert {"outbox_pending", "epoch", "acked_through"} <= set(edge)
        assert edge["catalog_version"] is not None
        _sell_with_demo_credentials(info)
        _price_change_and_hub_restart(info, info["demo_pid"])
        _member_flow(info)
        _printed(tmp_path / "storelink-demo" / "edge.toml")
        _catalog_price_and_transfer(info)
        _book_and_check_in(info)
        _promotions_and_coupon(info, tmp_path / "storelink-demo" / "edge.toml")
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            out, err = demo.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            demo.kill()
            out, err = demo.communicate()
            raise AssertionError(f"demo did not stop on Ctrl-C:\n{out}\n{err}") from None
    assert demo.returncode == 0, err
    assert "MQTT broker" in out
    assert "hub API" in out
    assert "Traceback" not in err
    assert "Task was destroyed" not in err
