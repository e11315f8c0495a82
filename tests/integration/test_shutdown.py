"""Hub and edge stop cleanly on SIGTERM within 5 s, leaving no pending tasks behind."""

from __future__ import annotations

import signal
import time

import pytest

from tests.conftest import edge_toml, free_port, spawn, stop, wait_port

pytestmark = pytest.mark.slow

_BAD = ("Task was destroyed but it is pending", "Traceback", "was never awaited", "Unclosed")


def _hub_toml(tmp_path, mqtt_port: int, http_port: int):
    path = tmp_path / "hub.toml"
    path.write_text(
        f'state_dir = "{tmp_path / "hub"}"\nhttp_host = "127.0.0.1"\nhttp_port = {http_port}\n'
        f'[broker]\nbind = "127.0.0.1"\nport = {mqtt_port}\n'
    )
    return path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_hub_and_edge_stop_cleanly(tmp_path, sig):
    mqtt_port, http_port = free_port(), free_port()
    hub = spawn("hub", _hub_toml(tmp_path, mqtt_port, http_port))
    try:
        wait_port(http_port, timeout=20)
        # The edge cannot sign in (unknown store): it must still stop cleanly while retrying.
        edge = spawn(
            "edge",
            edge_toml(tmp_path / "edge.toml", store="shop-x", password="nope", mqtt_port=mqtt_port),
        )
        time.sleep(2)
        took, err = stop(edge, sig)
        assert took < 5
        assert edge.returncode == 0, err
        assert not [b for b in _BAD if b in err], err
    finally:
        took, err = stop(hub, sig)
    assert took < 5
    assert hub.returncode == 0, err
    assert not [b for b in _BAD if b in err], err
