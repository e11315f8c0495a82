"""The documented Mosquitto TLS set-up: a private CA, TLS-only listener, hub and store verify it."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from datetime import timedelta
from pathlib import Path

import aiomqtt
import pytest

from edge.daemon import EdgeDaemon
from hub.stores import add_store, list_stores
from tests.conftest import BrokerSetup, hub_settings, missing_service, running_hub
from tests.integration.test_sync import _edge

pytestmark = pytest.mark.slow


def _certificates(where: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1, made as docs/hub.md shows."""
    if shutil.which("openssl") is None:
        missing_service("openssl is not installed (apt-get install -y openssl)")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=storelink test CA",
        "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
        "-out", "server.csr")  # fmt: skip
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "san.ext", "-out", "server.crt")  # fmt: skip
    return where / "ca.crt", where / "server.crt", where / "server.key"


async def test_store_and_hub_over_tls_with_a_private_ca(tmp_path, mosquitto_factory):
    certs = tmp_path / "certs"
    certs.mkdir()
    ca, cert, key = _certificates(certs)
    mosq = mosquitto_factory(secure=True, tls=(cert, key))
    mqtt = {
        "host": "127.0.0.1",
        "port": mosq.port,
        "username": mosq.hub_user,
        "password": mosq.hub_password,
        "tls": True,
        "ca_file": str(ca),
    }
    setup = BrokerSetup("mosquitto", {"mqtt": mqtt}, mosq)
    async with running_hub(
        hub_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}", setup)
    ) as hub:
        creds = await add_store(hub.db, "shop-1")
        await setup.register("shop-1", creds.password)
        plain = _edge(tmp_path, mosq.port, creds.password).settings
        settings = plain.model_copy(
            update={"mqtt": plain.mqtt.model_copy(update={"tls": True, "ca_file": ca})}
        )
        async with EdgeDaemon(settings) as edge:
            async with asyncio.timeout(10):
                await edge.link.connected.wait()
                while not (await list_stores(hub.db, stale_after=timedelta(minutes=1)))[0].online:
                    await asyncio.sleep(0.1)
    # plain MQTT to the TLS port, and TLS without our CA, are both refused
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(
            "127.0.0.1", mosq.port, username="shop-1", password=creds.password, timeout=3
        ):
            pass
    context = ssl.create_default_context()  # system CAs only: our private CA is unknown
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(
            "127.0.0.1", mosq.port, username="shop-1", password=creds.password, tls_context=context, timeout=3
        ):
            pass
