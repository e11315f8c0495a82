"""The edge's link to the hub over MQTT: retained status with a Last Will, reconnect forever."""

from __future__ import annotations

import asyncio
import logging
import ssl
from types import TracebackType

import aiomqtt

from edge.config import EdgeSettings
from edge.journal import Journal
from protocol import Backoff, Status, encode, offline_will, topics, utcnow
from protocol.aio import cancel_and_wait

__all__ = ["HubLink"]

log = logging.getLogger(__name__)


class HubLink:
    """Publish this store's status while connected; the broker publishes the will when we vanish."""

    def __init__(self, settings: EdgeSettings, journal: Journal, *, software: str):
        self._settings = settings
        self._journal = journal
        self._software = software
        self._status_topic = topics.status(settings.store)
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()

    def _new_client(self) -> aiomqtt.Client:
        mqtt = self._settings.mqtt
        tls = (
            ssl.create_default_context(cafile=str(mqtt.ca_file) if mqtt.ca_file else None)
            if mqtt.tls
            else None
        )
        return aiomqtt.Client(
            mqtt.host,
            mqtt.port,
            username=self._settings.mqtt_username,
            password=mqtt.password,
            identifier=f"edge-{self._settings.store}",
            keepalive=mqtt.keepalive,
            will=aiomqtt.Will(self._status_topic, encode(offline_will()), qos=1, retain=True),
            tls_context=tls,
            max_queued_incoming_messages=1000,
            timeout=10,
        )

    async def status(self, *, online: bool = True) -> Status:
        """The status message this edge publishes now."""
        state = await self._journal.state()
        return Status(
            online=online,
            store=self._settings.store,
            epoch=state.epoch,
            acked_through=state.acked_through,
            outbox_depth=state.outbox_pending,
            software=self._software,
            ts=utcnow(),
        )

    async def _publish_status(self, client: aiomqtt.Client, *, online: bool = True) -> None:
        payload = encode(await self.status(online=online))
        await client.publish(self._status_topic, payload, qos=1, retain=True)

    async def _heartbeat(self, client: aiomqtt.Client) -> None:
        while True:
            await asyncio.sleep(self._settings.mqtt.status_interval)
            await self._publish_status(client)

    async def _consume(self, client: aiomqtt.Client) -> None:
        await client.subscribe(topics.down_filter(self._settings.store), qos=1)
        async for message in client.messages:
            log.debug("no handler yet for %s", message.topic)

    async def _run(self) -> None:
        backoff = Backoff(initial=0.5, cap=self._settings.mqtt.backoff_cap)
        was_online = False
        while True:
            try:
                async with self._new_client() as client:
                    await self._publish_status(client)
                    self._client = client
                    self.connected.set()
                    log.log(
                        logging.WARNING if backoff.failures else logging.INFO,
                        "connected to the hub's broker %s:%d",
                        self._settings.mqtt.host,
                        self._settings.mqtt.port,
                    )
                    backoff.reset()
                    was_online = True
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._heartbeat(client), name="edge-status-heartbeat")
                        group.create_task(self._consume(client), name="edge-hub-consume")
            except* aiomqtt.MqttError as group:
                if was_online or not backoff.failures:
                    log.warning(
                        "hub broker unreachable (%s); selling on offline, retrying",
                        group.exceptions[0],
                    )
                was_online = False
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(backoff.next_delay())

    async def __aenter__(self) -> HubLink:
        self._task = asyncio.create_task(self._run(), name="edge-hub-link")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client = self._client
        if client is not None:
            # A clean disconnect suppresses the will, so say "offline" ourselves.
            try:
                async with asyncio.timeout(2):
                    await self._publish_status(client, online=False)
            except (aiomqtt.MqttError, TimeoutError):
                log.info("could not publish offline status on shutdown; the will covers it")
        await cancel_and_wait(self._task)
