"""Coupons at the till: redeem onto an open order (repriced at once), take off again (released
at the hub), refusals that leave the order as it was, and the clear refusal while the hub is
out of reach. The hub is a recording stand-in here; tests/integration/test_promotions_coupons.py
runs the same steps against a real hub through Mosquitto."""

from __future__ import annotations

from typing import Any

import pytest

from edge.rpc import HubUnreachable, RpcFailed
from hub.coupon_redeem import coupon_rule
from hub.coupon_tables import CouponTemplate
from tests.edge.conftest import Api

TEMPLATE = CouponTemplate(
    id="t-1", name="满5减1", kind="amount_off", amount_off_fen=100, threshold_fen=500, skus=[]
)


class FakeHub:
    """Answers coupon.redeem / coupon.release as the hub does, recording every call."""

    def __init__(self) -> None:
        self.used: dict[str, str] = {}  # code -> order id
        self.calls: list[tuple[str, dict[str, Any], str | None]] = []
        self.offline = False

    async def call(self, method: str, params: dict[str, Any], *, idempotency_key: str | None = None) -> Any:
        self.calls.append((method, params, idempotency_key))
        if self.offline:
            raise HubUnreachable(method, "the hub is offline", offline_allowed=False)
        code, order = params.get("code", ""), params.get("order_id", "")
        if method == "coupon.redeem":
            if code == "GONE1234":
                raise RpcFailed(method, f"coupon {code} was already used at store shop-2")
            if self.used.get(code, order) != order:
                raise RpcFailed(method, f"coupon {code} was already used at store shop-1")
            self.used[code] = order
            return {"coupon": {"code": code}, "rule": coupon_rule(TEMPLATE, code).model_dump(mode="json")}
        if method == "coupon.release":
            released = self.used.get(code) == order
            self.used.pop(code, None)
            return {"released": released}
        raise RpcFailed(method, f"unknown method {method!r}")


@pytest.fixture
def hub(api: Api) -> FakeHub:
    fake = FakeHub()
    api.daemon.rpc.call = fake.call  # type: ignore[method-assign,assignment]
    return fake


async def _order(api: Api) -> str:
    order = await api.open_order()
    await api.add(order["id"], sku="DRK-002", qty="2")  # 2 x ¥3.00
    return str(order["id"])


async def test_a_redeemed_coupon_reprices_the_order_and_taking_it_off_releases_it(api, hub):
    order_id = await _order(api)
    url = f"/api/v1/orders/{order_id}/coupons"
    status, body = await api.call("POST", url, {"code": " abcd2345 "}, key="r1")
    assert status == 200, body
    order = body["order"]
    assert (order["subtotal_fen"], order["total_fen"]) == (600, 500)
    assert [c["code"] for c in order["coupons"]] == ["ABCD2345"]
    assert [(p["name"], p["saving_fen"]) for p in order["promotions"]] == [("满5减1", 100)]
    method, params, key = hub.calls[-1]
    assert (method, params) == ("coupon.redeem", {"code": "ABCD2345", "order_id": order_id})
    assert key is not None
    assert key.startswith(f"{order_id}:ABCD2345:redeem:")
    assert key.endswith("r1")
    # the same request again replays; presenting it again changes nothing and asks nothing new
    calls = len(hub.calls)
    assert (await api.call("POST", url, {"code": " abcd2345 "}, key="r1"))[1]["order"]["total_fen"] == 500
    assert len(hub.calls) == calls
    status, body = await api.call("POST", url, {"code": "ABCD2345"}, key="r2")
    assert (status, body["order"]["total_fen"], len(body["order"]["coupons"])) == (200, 500, 1)

    status, body = await api.call("DELETE", f"{url}/ABCD2345", key="d1")
    assert status == 200, body
    assert (body["order"]["total_fen"], body["order"]["coupons"], body["order"]["promotions"]) == (
        600,
        [],
        [],
    )
    assert hub.calls[-1][:2] == ("coupon.release", {"code": "ABCD2345", "order_id": order_id})
    assert "ABCD2345" not in hub.used
    status, body = await api.call("DELETE", f"{url}/ABCD2345", key="d2")
    assert status == 404


async def test_refusals_leave_the_order_as_it_was(api, hub):
    order_id = await _order(api)
    url = f"/api/v1/orders/{order_id}/coupons"
    status, body = await api.call("POST", url, {"code": "GONE1234"}, key="x1")
    assert status == 409
    assert "already used at store shop-2" in body["detail"]
    status, body = await api.call("POST", url, {"code": "no!"}, key="x2")
    assert status == 422
    order = (await api.call("GET", f"/api/v1/orders/{order_id}"))[1]
    assert (order["total_fen"], order["coupons"]) == (600, [])


async def test_without_the_hub_a_coupon_is_refused_clearly_and_nothing_changes(api, hub):
    hub.offline = True
    order_id = await _order(api)
    status, body = await api.call(
        "POST", f"/api/v1/orders/{order_id}/coupons", {"code": "ABCD2345"}, key="o1"
    )
    assert status == 503
    assert "coupons need the hub" in body["detail"]
    assert "customer keeps it" in body["detail"]
    order = (await api.call("GET", f"/api/v1/orders/{order_id}"))[1]
    assert (order["total_fen"], order["coupons"]) == (600, [])


async def test_a_coupon_on_a_paid_order_cannot_be_taken_off_and_a_late_attach_is_released(api, hub):
    status, body = await api.call("POST", "/api/v1/shifts", {"float_fen": 10_000})
    assert status == 201, body
    order_id = await _order(api)
    url = f"/api/v1/orders/{order_id}/coupons"
    assert (await api.call("POST", url, {"code": "ABCD2345"}, key="p1"))[0] == 200
    await api.pay(order_id, "cash", 500)
    status, body = await api.call("DELETE", f"{url}/ABCD2345", key="p2")
    assert status == 409
    assert hub.used == {"ABCD2345": order_id}
    status, body = await api.call("POST", url, {"code": "EFGH2345"}, key="p3")
    assert status == 409
    assert "EFGH2345" not in hub.used  # refused before asking the hub
