"""The hub's MQTT client: keeps a connection to the broker and dispatches store messages."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from types import TracebackType

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy.exc import SQLAlchemyError

from hub.db import Database
from hub.errors import NotFound
from hub.stores import record_status
from protocol import Backoff, DecodeError, Status, decode, topics
from protocol.aio import cancel_and_wait, retry_forever
from protocol.topics import TopicKind

__all__ = ["BrokerLink", "MqttTarget"]

log = logging.getLogger(__name__)
_MAX_QUEUED = 10_000  # aiomqtt drops beyond this; a status is re-sent every heartbeat
_DRAIN_S = 2.0  # on shutdown, how long the message being recorded may still take
Handler = Callable[[str, bytes, bool], Awaitable[None]]


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
    ):
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.tls_context = ssl.create_default_context(cafile=ca_file) if tls else None
        self.keepalive = keepalive

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
        self._backoff = Backoff(initial=0.5, cap=30.0)
        self.connected = asyncio.Event()
        self._handlers: dict[TopicKind, Handler] = {TopicKind.STATUS: self._on_status}

    async def __aenter__(self) -> BrokerLink:
        self._task = asyncio.create_task(
            retry_forever(
                self._session,
                backoff=self._backoff,
                what=f"MQTT broker {self._target.host}:{self._target.port}",
                log=log,
                expected=(aiomqtt.MqttError,),
            ),
            name="hub-broker-link",
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await cancel_and_wait(self._task, log)
        inflight = self._inflight
        if inflight is not None and not inflight.done():
            # Let the message being recorded commit rather than cut its transaction.
            _, pending = await asyncio.wait({inflight}, timeout=_DRAIN_S)
            await cancel_and_wait(next(iter(pending), None), log)

    async def _session(self) -> None:
        try:
            async with self._target.client() as client:
                codes = await client.subscribe(topics.ALL_STATUS, qos=1)
                if any(_refused(code) for code in codes):
                    raise aiomqtt.MqttError(f"broker refused subscription to {topics.ALL_STATUS}")
                self.connected.set()
                self._backoff.connected()
                log.info("connected to MQTT broker %s:%d", self._target.host, self._target.port)
                async for message in client.messages:
                    payload = message.payload if isinstance(message.payload, bytes) else b""
                    self._inflight = asyncio.create_task(
                        self._dispatch(str(message.topic), payload, message.retain),
                        name="hub-link-dispatch",
                    )
                    await asyncio.shield(self._inflight)
        finally:
            self.connected.clear()

    async def _dispatch(self, topic: str, payload: bytes, retained: bool) -> None:
        """Handle one message; no error here may end the consumer."""
        try:
            parsed = topics.parse_topic(topic)
            handler = self._handlers.get(parsed.kind)
            if handler is None:
                log.warning("ignoring message on %s: the hub does not consume this topic", topic)
                return
            await handler(parsed.store, payload, retained)
        except DecodeError as err:
            log.warning("ignoring message on %s: %s", topic, err)
        except (SQLAlchemyError, OSError) as err:
            log.warning("could not record message on %s (database: %s)", topic, err)
        except Exception:
            log.exception("could not handle message on %s", topic)

    async def _on_status(self, store: str, payload: bytes, retained: bool) -> None:
        status = decode(Status, payload)
        if status.store is not None and status.store != store:
            raise DecodeError("Status", f"store {status.store!r} does not match topic {store!r}")
        try:
            await record_status(self._db, store, status, retained=retained)
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


def _refused(code: int | ReasonCode) -> bool:
    """True for a SUBACK failure code (0x80 and above), MQTT 3.1.1 or 5."""
    return code >= 0x80 if isinstance(code, int) else bool(code.is_failure)
