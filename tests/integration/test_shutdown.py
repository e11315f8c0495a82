"""Hub and edge stop cleanly on SIGTERM/SIGINT within 5 s, leaving no pending tasks behind."""

from __future__ import annotations

import json
import signal
import time
import urllib.request

import pytest

from tests.conftest import edge_toml, free_port, spawn, stop, store_add_cli, wait_port

pytestmark = pytest.mark.slow

_BAD = ("Task was destroyed but it is pending", "Traceback", "was never awaited", "Unclosed")


def _hub_toml(tmp_path, mqtt_port: int, http_port: int):
    path = tmp_path / "hub.toml"
    path.write_text(
        f'state_dir = "{tmp_path / "hub"}"\nhttp_host = "127.0.0.1"\nhttp_port = {http_port}\n'
        f'[broker]\nbind = "127.0.0.1"\nport = {mqtt_port}\n'
    )
    return path


def _edge_status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/status", timeout=2) as resp:
        return json.loads(resp.read())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_connected_hub_and_edge_stop_cleanly(tmp_path, sig):
    mqtt_port, http_port, edge_port = free_port(), free_port(), free_port()
    hub_config = _hub_toml(tmp_path, mqtt_port, http_port)
    password = store_add_cli(hub_config, "shop-x")
    hub = spawn("hub", hub_config)
    try:
        wait_port(http_port, timeout=20)
        config = edge_toml(
            tmp_path / "edge.toml",
            store="shop-x",
            password=password,
            mqtt_port=mqtt_port,
            http_port=edge_port,
        )
        edge = spawn("edge", config)
        deadline = time.monotonic() + 10
        while True:
            try:
                if _edge_status(edge_port)["hub_online"]:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "edge never connected to the hub's broker"
            time.sleep(0.1)
        took, err = stop(edge, sig)
        assert took < 5
        assert edge.returncode == 0, err
        assert not [b for b in _BAD if b in err], err
    finally:
        took, err = stop(hub, sig)
    assert took < 5
    assert hub.returncode == 0, err
    assert not [b for b in _BAD if b in err], err


def test_edge_stops_cleanly_while_it_cannot_reach_the_hub(tmp_path):
    edge = spawn(
        "edge",
        edge_toml(tmp_path / "edge.toml", store="shop-y", password="x", mqtt_port=free_port()),
    )
    time.sleep(2)  # connection refused, retrying with backoff
    took, err = stop(edge, signal.SIGTERM)
    assert took < 5
    assert edge.returncode == 0, err
    assert "unreachable (" in err
    assert not [b for b in _BAD if b in err], err
