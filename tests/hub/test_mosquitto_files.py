"""`store add` writes Mosquitto files that a real Mosquitto 2 enforces: each store in its own topics."""

from __future__ import annotations

import asyncio
import shutil
import signal

import aiomqtt
import pytest

from hub.mosquitto import password_line, write_acl, write_password
from tests.conftest import Mosquitto, missing_service, store_add_cli


@pytest.fixture
def broker(tmp_path):
    if shutil.which("mosquitto") is None:
        missing_service("mosquitto is not installed")
    hub_toml = tmp_path / "hub.toml"
    hub_toml.write_text(
        f'state_dir = "{tmp_path / "hub"}"\n[mqtt]\nhost = "127.0.0.1"\nusername = "storelink-hub"\npassword = "hub-pw-1"\n'
        f'[mosquitto]\npassword_file = "{tmp_path / "passwd"}"\nacl_file = "{tmp_path / "acl"}"\n'
    )
    creds = {store: store_add_cli(hub_toml, store) for store in ("shop-1", "shop-2")}
    mosq = Mosquitto(tmp_path, secure=False)
    mosq.write_config()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        conf.read_text().replace("allow_anonymous true", "allow_anonymous false")
        + f"password_file {tmp_path / 'passwd'}\nacl_file {tmp_path / 'acl'}\n"
    )
    mosq.start()
    yield mosq, creds
    mosq.stop()


def _client(port: int, user: str, password: str) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", port, username=user, password=password, timeout=5)


async def _drain(client: aiomqtt.Client, seconds: float) -> list[str]:
    got: list[str] = []
    try:
        async with asyncio.timeout(seconds):
            async for message in client.messages:
                got.append(str(message.topic))
    except TimeoutError:
        pass
    return got


async def test_generated_files_confine_each_store(broker):
    mosq, creds = broker
    with pytest.raises(aiomqtt.MqttError):
        async with _client(mosq.port, "shop-1", "wrong"):
            pass
    async with (
        _client(mosq.port, "storelink-hub", "hub-pw-1") as hub,
        _client(mosq.port, "shop-2", creds["shop-2"]) as shop2,
    ):
        await hub.subscribe("storelink/v1/#", qos=1)
        await shop2.subscribe("storelink/v1/shop-1/#", qos=1)  # denied by the ACL: receives nothing
        async with _client(mosq.port, "shop-1", creds["shop-1"]) as shop1:
            await shop1.publish("storelink/v1/shop-1/up/events", b"own", qos=1)
        await shop2.publish("storelink/v1/shop-1/down/ack", b"forged", qos=1)
        hub_saw = await _drain(hub, 1.0)
        shop2_saw = await _drain(shop2, 0.3)
    assert hub_saw == ["storelink/v1/shop-1/up/events"]
    assert shop2_saw == []


def test_password_file_keeps_other_users_and_hashes_as_mosquitto_does(tmp_path):
    path = tmp_path / "passwd"
    write_password(path, "shop-1", "a")
    write_password(path, "shop-2", "b")
    write_password(path, "shop-1", "c")  # rotate
    users = [line.split(":", 1)[0] for line in path.read_text().splitlines()]
    assert users == ["shop-2", "shop-1"]
    assert path.stat().st_mode & 0o777 == 0o640
    assert password_line("x", "y").startswith("x:$7$101$")
    with pytest.raises(ValueError, match="cannot be"):
        password_line("a:b", "y")
    with pytest.raises(ValueError, match="cannot be"):
        write_acl(tmp_path / "acl", "two words")


async def test_hup_picks_up_a_new_store(broker, tmp_path):
    mosq, _ = broker
    write_password(tmp_path / "passwd", "shop-3", "pw-3")
    mosq.proc.send_signal(signal.SIGHUP)
    await asyncio.sleep(0.3)
    async with _client(mosq.port, "shop-3", "pw-3"):
        pass
