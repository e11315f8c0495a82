"""The edge's link to the hub over MQTT: status, outbox uplink, snapshots, commands and RPC replies."""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import sqlite3
import ssl
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Any

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode

from edge.commands import CommandRunner
from edge.config import EdgeSettings
from edge.journal import Journal
from edge.outbox import apply_ack, read_batch
from protocol import (
    Ack,
    Backoff,
    Command,
    DecodeError,
    DeviceHealth,
    Resend,
    RpcReply,
    RpcRequest,
    Snapshot,
    Status,
    decode,
    encode,
    offline_will,
    topics,
    utcnow,
)
from protocol.aio import cancel_and_wait, retry_forever
from protocol.mqtt import MAX_INFLIGHT, tune_client
from protocol.topics import TopicKind

__all__ = ["HubLink"]

log = logging.getLogger(__name__)
WINDOW = 2_000  # events in flight beyond the last ack
ACK_TIMEOUT_S = 10  # no ack for this long with events in flight: send them again
IDLE_POLL_S = 2.0  # also catches events written by another process (CLI)
STOP_TIMEOUT_S = 5
DISK_LOW_BYTES = 100 * 1024 * 1024  # below this the till still sells, but says so


class HubLink:
    """Publish this store's status while connected; the broker publishes the will when we vanish."""

    def __init__(
        self,
        settings: EdgeSettings,
        journal: Journal,
        *,
        software: str,
        on_snapshot: Callable[[Snapshot], Awaitable[bool]] | None = None,
        versions: Callable[[], dict[str, int]] | None = None,
        commands: CommandRunner | None = None,
        on_rpc_reply: Callable[[RpcReply], None] | None = None,
        devices: Callable[[], list[dict[str, Any]]] | None = None,
    ):
        self._settings = settings
        self._journal = journal
        self._software = software
        self._status_topic = topics.status(settings.store)
        mqtt = settings.mqtt
        self._tls = (
            ssl.create_default_context(cafile=str(mqtt.ca_file) if mqtt.ca_file else None)
            if mqtt.tls
            else None
        )
        # A client id nobody can guess: amqtt drops an existing session for a client id
        # before it authenticates the new CONNECT, so a predictable id lets anyone on the
        # network silently cut this edge's subscriptions.
        self._client_id = f"edge-{settings.store}-{secrets.token_hex(6)}"
        self._backoff = Backoff(initial=0.5, cap=mqtt.backoff_cap)
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self._wake = asyncio.Event()  # new outbox events, an ack or a resend request
        self._acked = 0  # highest seq the hub has confirmed (mirrors the journal)
        self._sent = 0  # highest seq published on this connection
        self.last_ack_at: datetime | None = None
        self.alarms: list[str] = []
        self._on_snapshot = on_snapshot
        self._versions = versions or dict
        self._commands = commands
        self._on_rpc_reply = on_rpc_reply
        self._devices = devices or list

    def notify_outbox(self) -> None:
        """Called by the till after it committed outbox events."""
        self._wake.set()

    def _new_client(self) -> aiomqtt.Client:
        mqtt = self._settings.mqtt
        return tune_client(  # each small PUBLISH/PUBACK at once: an RPC waits on two of them
            aiomqtt.Client(
                mqtt.host,
                mqtt.port,
                username=self._settings.store,
                password=mqtt.password,
                identifier=self._client_id,
                keepalive=mqtt.keepalive,
                will=aiomqtt.Will(self._status_topic, encode(offline_will()), qos=1, retain=True),
                tls_context=self._tls,
                max_queued_incoming_messages=1000,
                max_inflight_messages=MAX_INFLIGHT,
                timeout=10,
            )
        )

    async def status(self, *, online: bool = True) -> Status:
        """The status message this edge publishes now."""
        state = await self._journal.state()
        free = (await asyncio.to_thread(shutil.disk_usage, self._settings.state_dir)).free
        self.alarms = ["disk_low"] if free < DISK_LOW_BYTES else []
        devices = [
            DeviceHealth(id=d["id"], kind=d["kind"], ok=d["health"] == "ok", detail=d["health"])
            for d in self._devices()
        ]
        return Status(
            devices=devices,
            alarms=self.alarms,
            versions=self._versions(),
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
        async for message in client.messages:
            try:
                topic = topics.parse_topic(str(message.topic))
                payload = message.payload if isinstance(message.payload, bytes) else b""
                if topic.kind is TopicKind.DOWN_ACK:
                    await self._on_ack(decode(Ack, payload))
                elif topic.kind is TopicKind.DOWN_RESEND:
                    self._on_resend(decode(Resend, payload))
                elif topic.kind is TopicKind.DOWN_SNAPSHOT and self._on_snapshot is not None:
                    if await self._on_snapshot(decode(Snapshot, payload)):
                        await self._publish_status(client)  # report the new version at once
                elif topic.kind is TopicKind.DOWN_RPC and self._on_rpc_reply is not None:
                    self._on_rpc_reply(decode(RpcReply, payload))
                elif topic.kind is TopicKind.DOWN_CMD and self._commands is not None:
                    result = await self._commands.run(decode(Command, payload))
                    await client.publish(topics.up_cmd_result(self._settings.store), encode(result), qos=1)
                else:
                    log.debug("no handler yet for %s", message.topic)
            except (DecodeError, ValueError) as err:
                log.warning("ignoring message on %s: %s", message.topic, err)

    async def publish_rpc(self, request: RpcRequest) -> bool:
        """Send an RPC request now; False if the hub's broker is not connected."""
        client = self._client
        if client is None:
            return False
        try:
            await client.publish(topics.up_rpc(self._settings.store), encode(request), qos=1)
        except aiomqtt.MqttError:
            return False
        return True

    async def _on_ack(self, ack: Ack) -> None:
        done = await self._journal.transaction(lambda conn: apply_ack(conn, ack.epoch, ack.acked_through))
        self.last_ack_at = utcnow()
        if done is not None:
            self._acked = done.acked_through
            self._sent = max(self._sent, self._acked)
            self._wake.set()

    def _on_resend(self, resend: Resend) -> None:
        if resend.from_seq - 1 < self._sent:
            log.info("hub asked to resend from seq %d", resend.from_seq)
            self._sent = max(self._acked, resend.from_seq - 1)
            self._wake.set()

    async def _uplink(self, client: aiomqtt.Client) -> None:
        """Send the outbox in batches, at most WINDOW events ahead of the hub's ack."""
        store = self._settings.store
        state = await self._journal.state()
        self._acked = self._sent = state.acked_through  # after a reconnect, resend everything unacked
        while True:
            self._wake.clear()
            while self._sent - self._acked < WINDOW:
                batch = await self._journal.read(partial(read_batch, store=store, after_seq=self._sent))
                if batch is None:
                    break
                await client.publish(topics.up_events(store), encode(batch), qos=1)
                self._sent = batch.seq_to
            waiting = self._sent > self._acked
            try:
                async with asyncio.timeout(ACK_TIMEOUT_S if waiting else IDLE_POLL_S):
                    await self._wake.wait()
            except TimeoutError:
                if waiting:
                    log.info(
                        "no ack for seq %d-%d within %ds; sending again",
                        self._acked + 1,
                        self._sent,
                        ACK_TIMEOUT_S,
                    )
                    self._sent = self._acked

    async def _session(self) -> None:
        try:
            async with self._new_client() as client:
                # Subscribe before saying "online": the hub sends queued commands the moment
                # it sees this store come online, and they must not arrive before we listen.
                down = topics.down_filter(self._settings.store)
                codes = await client.subscribe(down, qos=1)
                if any(_refused(code) for code in codes):
                    raise aiomqtt.MqttError(f"broker refused subscription to {down}; check its ACL")
                await self._publish_status(client)
                self._client = client
                self.connected.set()
                self._backoff.connected()
                log.info("connected to the hub's broker %s", self._settings.mqtt.host)
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._heartbeat(client), name="edge-status-heartbeat")
                    group.create_task(self._consume(client), name="edge-hub-consume")
                    group.create_task(self._uplink(client), name="edge-uplink")
        finally:
            self._client = None
            self.connected.clear()

    async def __aenter__(self) -> HubLink:
        mqtt = self._settings.mqtt
        self._task = asyncio.create_task(
            retry_forever(
                self._session,
                backoff=self._backoff,
                what=f"hub broker {mqtt.host}:{mqtt.port}",
                log=log,
                expected=(aiomqtt.MqttError, sqlite3.Error),
            ),
            name="edge-hub-link",
        )
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
            except (aiomqtt.MqttError, sqlite3.Error, TimeoutError):
                log.info("could not publish offline status on shutdown; the will covers it")
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await cancel_and_wait(self._task, log)
        except TimeoutError:
            # Seen once under load inside aiomqtt; a stuck link must never hang the daemon's stop.
            log.error("the hub link did not stop within %d s; leaving it behind", STOP_TIMEOUT_S)


def _refused(code: int | ReasonCode) -> bool:
    return code >= 0x80 if isinstance(code, int) else bool(code.is_failure)
