"""The hub's MQTT client: keeps a connection to the broker and dispatches store messages."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import TracebackType

import aiomqtt
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy.exc import SQLAlchemyError

from hub.commands import due_commands, mark_sent, record_result
from hub.db import Database
from hub.errors import NotFound
from hub.ingest import ingest_batch
from hub.rpc import RpcServer
from hub.snapshots import all_snapshots
from hub.stores import record_status
from protocol import (
    Ack,
    Backoff,
    Command,
    CommandResult,
    DecodeError,
    EventBatch,
    Resend,
    RpcReply,
    RpcRequest,
    Snapshot,
    Status,
    decode,
    encode,
    topics,
)
from protocol.aio import cancel_and_wait, retry_forever
from protocol.mqtt import MAX_INFLIGHT, tune_client
from protocol.topics import TopicKind

__all__ = ["BrokerLink", "MqttTarget"]

log = logging.getLogger(__name__)
# aiomqtt drops beyond this (after paho has PUBACKed): harmless, because a status is re-sent
# every heartbeat and an event batch is re-sent until down/ack covers it.
_MAX_QUEUED = 10_000
_DRAIN_S = 2.0  # on shutdown, how long the message being recorded may still take
GAP_TIMEOUT_S = 5.0  # a missing seq not filled by then is asked for with down/resend
COMMAND_ROUND_S = 5.0  # how often pending commands of online stores are looked at
_MAX_RPC_TASKS = 200
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
        shared: bool = False,
    ):
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.tls_context = ssl.create_default_context(cafile=ca_file) if tls else None
        self.keepalive = keepalive
        self.shared = shared

    def client(self) -> aiomqtt.Client:
        """A new aiomqtt client for this target, sending each packet at once (see `tune_client`)."""
        return tune_client(
            aiomqtt.Client(
                self.host,
                self.port,
                username=self.username,
                password=self.password,
                keepalive=self.keepalive,
                tls_context=self.tls_context,
                max_queued_incoming_messages=_MAX_QUEUED,
                max_inflight_messages=MAX_INFLIGHT,
                timeout=10,
            )
        )


class BrokerLink:
    """Consume stores' status, events, command results and RPC; reconnect forever with backoff."""

    def __init__(self, db: Database, target: MqttTarget, rpc: RpcServer | None = None):
        self._db = db
        self._target = target
        self._rpc = rpc or RpcServer(db)
        self._rpc_tasks: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._unknown_logged: set[str] = set()
        self._backoff = Backoff(initial=0.5, cap=30.0)
        self.connected = asyncio.Event()
        self._handlers: dict[TopicKind, Handler] = {
            TopicKind.STATUS: self._on_status,
            TopicKind.UP_EVENTS: self._on_events,
            TopicKind.UP_CMD_RESULT: self._on_cmd_result,
            TopicKind.UP_RPC: self._on_rpc,
        }
        self._client: aiomqtt.Client | None = None
        # (store, epoch) -> (loop time the gap was first seen, seq to resend from)
        self._gaps: dict[tuple[str, int], tuple[float, int]] = {}
        self.stats = {"batches": 0, "events": 0, "duplicates": 0, "conflicts": 0, "rejected": 0}

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
        for task in list(self._rpc_tasks):
            await cancel_and_wait(task, log)
        inflight = self._inflight
        if inflight is not None and not inflight.done():
            # Let the message being recorded commit rather than cut its transaction.
            _, pending = await asyncio.wait({inflight}, timeout=_DRAIN_S)
            await cancel_and_wait(next(iter(pending), None), log)

    async def _session(self) -> None:
        try:
            async with self._target.client() as client:
                up = topics.shared(topics.ALL_UP) if self._target.shared else topics.ALL_UP
                for filter_ in (topics.ALL_STATUS, up):
                    codes = await client.subscribe(filter_, qos=1)
                    if any(_refused(code) for code in codes):
                        raise aiomqtt.MqttError(f"broker refused subscription to {filter_}")
                self._client = client
                for store, snapshot in await all_snapshots(self._db):
                    await self._publish_snapshot(client, store, snapshot)
                self.connected.set()
                self._backoff.connected()
                log.info("connected to MQTT broker %s:%d", self._target.host, self._target.port)
                gap_watch = asyncio.create_task(self._watch_gaps(client), name="hub-gap-watch")
                resend = asyncio.create_task(self._resend_commands(client), name="hub-command-resend")
                try:
                    async for message in client.messages:
                        payload = message.payload if isinstance(message.payload, bytes) else b""
                        self._inflight = asyncio.create_task(
                            self._dispatch(str(message.topic), payload, message.retain),
                            name="hub-link-dispatch",
                        )
                        await asyncio.shield(self._inflight)
                finally:
                    await cancel_and_wait(resend, log)
                    await cancel_and_wait(gap_watch, log)
        finally:
            self._client = None
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
            self.stats["rejected"] += 1
            log.warning("ignoring message on %s: %s", topic, err)
        except (SQLAlchemyError, OSError) as err:
            log.warning("could not record message on %s (database: %s)", topic, err)
        except Exception:
            log.exception("could not handle message on %s", topic)

    async def _on_events(self, store: str, payload: bytes, retained: bool) -> None:
        """Commit a batch, then acknowledge through the highest contiguous seq."""
        batch = decode(EventBatch, payload)
        try:
            result = await ingest_batch(self._db, store, batch)
        except NotFound:
            self._log_unknown(store)
            return
        self.stats["batches"] += 1
        self.stats["events"] += result.inserted
        self.stats["duplicates"] += result.duplicates
        self.stats["conflicts"] += result.conflicts
        key = (store, result.epoch)
        if result.gap:
            self._gaps.setdefault(key, (asyncio.get_running_loop().time(), result.acked_through + 1))
        else:
            self._gaps.pop(key, None)
        if self._client is not None:
            ack = Ack(epoch=result.epoch, acked_through=result.acked_through)
            await self._client.publish(topics.down_ack(store), encode(ack), qos=1)

    @staticmethod
    async def _publish_snapshot(client: aiomqtt.Client, store: str, snapshot: Snapshot) -> None:
        topic = topics.down_snapshot(store, snapshot.kind)
        await client.publish(topic, encode(snapshot), qos=1, retain=True)

    async def publish_snapshot(self, store: str, snapshot: Snapshot) -> bool:
        """Publish now if connected (else it goes out on the next connect); True if sent."""
        client = self._client
        if client is None:
            return False
        try:
            await self._publish_snapshot(client, store, snapshot)
        except aiomqtt.MqttError:
            return False
        return True

    async def _on_cmd_result(self, store: str, payload: bytes, retained: bool) -> None:
        await record_result(self._db, store, decode(CommandResult, payload))

    async def _on_rpc(self, store: str, payload: bytes, retained: bool) -> None:
        """Answer in a task of its own: a request must not wait behind a backlog of event batches."""
        request = decode(RpcRequest, payload)
        if len(self._rpc_tasks) >= _MAX_RPC_TASKS:
            log.warning("store %s: too many RPC requests in progress; refusing %s", store, request.id)
            await self._reply(store, RpcReply.failure(request.id, "the hub is busy; try again"))
            return
        task = asyncio.create_task(self._answer(store, request), name="hub-rpc")
        self._rpc_tasks.add(task)
        task.add_done_callback(self._rpc_tasks.discard)

    async def _answer(self, store: str, request: RpcRequest) -> None:
        try:
            reply = await self._rpc.handle(store, request)
        except (SQLAlchemyError, OSError) as err:
            log.warning("store %s: RPC %s failed (database: %s)", store, request.method, err)
            reply = RpcReply.failure(request.id, "the hub could not complete the request; try again")
        except Exception:
            log.exception("store %s: RPC %s failed", store, request.method)
            reply = RpcReply.failure(request.id, "the hub failed on this request; the error was logged")
        try:
            await self._reply(store, reply)
        except aiomqtt.MqttError as err:
            log.info("store %s: could not send the reply to %s: %s", store, request.id, err)

    async def _reply(self, store: str, reply: RpcReply) -> None:
        if self._client is not None:
            await self._client.publish(topics.down_rpc(store), encode(reply), qos=1)

    async def publish_command(self, store: str, command: Command) -> bool:
        """Send a command now if connected (else the re-send loop does); True if sent."""
        client = self._client
        if client is None:
            return False
        try:
            await client.publish(topics.down_cmd(store), encode(command), qos=1)
        except aiomqtt.MqttError:
            return False
        await mark_sent(self._db, [str(command.id)], datetime.now(UTC))
        return True

    async def _send_commands(self, client: aiomqtt.Client, due: list[tuple[str, Command]]) -> None:
        for store, command in due:
            await client.publish(topics.down_cmd(store), encode(command), qos=1)
        await mark_sent(self._db, [str(command.id) for _, command in due], datetime.now(UTC))

    async def _resend_commands(self, client: aiomqtt.Client) -> None:
        """Publish pending commands of online stores until each store reports a result."""
        while True:
            now = datetime.now(UTC)
            try:
                await self._send_commands(client, await due_commands(self._db, now))
            except (SQLAlchemyError, OSError) as err:
                log.warning("could not re-send pending commands (database: %s)", err)
            await asyncio.sleep(COMMAND_ROUND_S)

    async def _watch_gaps(self, client: aiomqtt.Client) -> None:
        """Ask for a resend when a gap has stayed open for GAP_TIMEOUT_S."""
        while True:
            await asyncio.sleep(1.0)
            now = asyncio.get_running_loop().time()
            for (store, epoch), (since, from_seq) in list(self._gaps.items()):
                if now - since >= GAP_TIMEOUT_S:
                    log.info(
                        "store %s epoch %d: gap before seq %d; asking for a resend", store, epoch, from_seq
                    )
                    await client.publish(
                        topics.down_resend(store), encode(Resend(epoch=epoch, from_seq=from_seq)), qos=1
                    )
                    self._gaps[(store, epoch)] = (now, from_seq)

    def _log_unknown(self, store: str) -> None:
        if store not in self._unknown_logged and len(self._unknown_logged) < 1000:
            self._unknown_logged.add(store)
            log.warning(
                "message from unregistered store '%s'; run `storelink-hub store add %s`", store, store
            )

    async def _on_status(self, store: str, payload: bytes, retained: bool) -> None:
        status = decode(Status, payload)
        if status.store is not None and status.store != store:
            raise DecodeError("Status", f"store {status.store!r} does not match topic {store!r}")
        try:
            came_online = await record_status(self._db, store, status, retained=retained)
        except NotFound:
            self._log_unknown(store)
            return
        self._unknown_logged.discard(store)
        if came_online and self._client is not None:
            # Commands queued while it was away go out now rather than at the next round.
            await self._send_commands(self._client, await due_commands(self._db, datetime.now(UTC), store))


def _refused(code: int | ReasonCode) -> bool:
    """True for a SUBACK failure code (0x80 and above), MQTT 3.1.1 or 5."""
    return code >= 0x80 if isinstance(code, int) else bool(code.is_failure)
