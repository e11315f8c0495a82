"""The hub's MQTT client: keeps a connection to the broker and dispatches store messages."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from types import TracebackType

import aiomqtt
from sqlalchemy.exc import SQLAlchemyError

from hub.db import Database
from hub.errors import NotFound
from hub.stores import record_status
from protocol import Backoff, DecodeError, Status, decode, topics
from protocol.aio import cancel_and_wait
from protocol.topics import TopicKind

__all__ = ["BrokerLink", "MqttTarget"]

log = logging.getLogger(__name__)
_MAX_QUEUED = 10_000  # aiomqtt drops beyond this; status is resent every heartbeat


class MqttTarget:
    """Where and how the hub connects: the embedded broker or an external one."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        ca_file: str | None = None,
        keepalive: int = 30,
        shared_subscription: bool = False,
    ):
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.tls_context = ssl.create_default_context(cafile=ca_file) if tls else None
        self.keepalive = keepalive
        self.shared_subscription = shared_subscription

    def client(self) -> aiomqtt.Client:
        """A new aiomqtt client for this target."""
        return aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            keepalive=self.keepalive,
            tls_context=self.tls_context,
            max_queued_incoming_messages=_MAX_QUEUED,
            timeout=10,
        )


class BrokerLink:
    """Consume every store's `status` and record it; reconnect forever with backoff."""

    def __init__(self, db: Database, target: MqttTarget):
        self._db = db
        self._target = target
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._unknown_logged: set[str] = set()
        self.connected = asyncio.Event()
        self._handlers: dict[TopicKind, Callable[[str, bytes], Awaitable[None]]] = {
            TopicKind.STATUS: self._on_status,
        }

    async def __aenter__(self) -> BrokerLink:
        self._task = asyncio.create_task(self._run(), name="hub-broker-link")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await cancel_and_wait(self._task)
        if self._inflight is not None:
            # Let the message being recorded finish, so no session is cut mid-transaction.
            await asyncio.wait({self._inflight})

    async def _run(self) -> None:
        backoff = Backoff(initial=0.5, cap=30.0)
        while True:
            try:
                async with self._target.client() as client:
                    status_filter = topics.ALL_STATUS
                    await client.subscribe(status_filter, qos=1)
                    self.connected.set()
                    if backoff.failures:
                        log.warning("reconnected to MQTT broker %s", self._target.host)
                    else:
                        log.info(
                            "connected to MQTT broker %s:%d", self._target.host, self._target.port
                        )
                    backoff.reset()
                    async for message in client.messages:
                        payload = _payload_bytes(message.payload)
                        self._inflight = asyncio.create_task(
                            self._dispatch(str(message.topic), payload), name="hub-link-dispatch"
                        )
                        await asyncio.shield(self._inflight)
            except aiomqtt.MqttError as err:
                if self.connected.is_set() or not backoff.failures:
                    log.warning("MQTT broker %s unreachable (%s); retrying", self._target.host, err)
                self.connected.clear()
            await asyncio.sleep(backoff.next_delay())

    async def _dispatch(self, topic: str, payload: bytes) -> None:
        try:
            parsed = topics.parse_topic(topic)
            handler = self._handlers.get(parsed.kind)
            if handler is None:
                log.warning("ignoring message on %s: the hub does not consume this topic", topic)
                return
            await handler(parsed.store, payload)
        except DecodeError as err:
            log.warning("ignoring message on %s: %s", topic, err)
        except SQLAlchemyError as err:
            log.warning(
                "could not record message on %s (database: %s)", topic, err.__class__.__name__
            )

    async def _on_status(self, store: str, payload: bytes) -> None:
        status = decode(Status, payload)
        if status.store is not None and status.store != store:
            raise DecodeError(
                "Status", f"store {status.store!r} does not match topic store {store!r}"
            )
        try:
            await record_status(self._db, store, status)
        except NotFound:
            if store not in self._unknown_logged and len(self._unknown_logged) < 1000:
                self._unknown_logged.add(store)
                log.warning(
                    "status from unregistered store '%s'; run `storelink-hub store add %s`",
                    store,
                    store,
                )
        else:
            self._unknown_logged.discard(store)


def _payload_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return str(payload).encode() if payload is not None else b""
