"""The embedded amqtt broker: zero-install MQTT for small chains and the demo.

Stores sign in with the credentials `storelink-hub store add` created; the ACL lets a
store touch only `storelink/v1/<its id>/#`, like the Mosquitto ACL pattern `%u`, and a
store's Last Will may only be its own status. The hub itself uses a per-process account
whose name cannot be a store id (stores never have `_`).
"""

from __future__ import annotations

import errno
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

from hub.errors import HubError
from protocol import InvalidStoreId, topics

__all__ = ["HUB_USERNAME", "EmbeddedBroker", "free_port"]

log = logging.getLogger(__name__)
HUB_USERNAME = "_storelink-hub"
CheckPassword = Callable[[str, str], Awaitable[bool]]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on `host`."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True if something already listens on host:port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return True
            raise
    return False


class StoreAuthPlugin(BaseAuthPlugin):
    """Accept the hub's own account and stores with their current MQTT password."""

    @dataclass
    class Config:
        hub_password: str = ""
        check_store: Any = None

    async def authenticate(self, *, session: Any) -> bool:
        username, password = session.username, session.password
        if not username or password is None:
            return False
        if isinstance(password, bytes):
            password = password.decode("utf-8", "replace")
        if username == HUB_USERNAME:
            return secrets.compare_digest(password, self.config.hub_password)
        # amqtt publishes a will without asking the ACL plugin, so a store could otherwise
        # plant a retained message in another store's topics by disconnecting.
        if session.will_flag and session.will_topic != topics.status(username):
            log.warning("MQTT sign-in refused for %r: Last Will outside its status topic", username)
            return False
        try:
            return bool(await self.config.check_store(username, password))
        except Exception:  # a database outage must refuse, not hang the client
            log.warning("MQTT sign-in of %r refused: store credentials unavailable", username)
            return False


class StoreAclPlugin(BaseTopicPlugin):
    """Confine each store to its own topic tree; the hub may use every topic."""

    @dataclass
    class Config:
        pass

    async def topic_filtering(
        self, *, session: Any = None, topic: str | None = None, action: Any = None
    ) -> bool:
        username = getattr(session, "username", None)
        if username == HUB_USERNAME:
            return True
        if not username or not topic:
            return False
        try:
            prefix = topics.store_filter(username)[:-1]
        except InvalidStoreId:
            return False
        return topic.startswith(prefix)


class EmbeddedBroker:
    """amqtt broker as an async context manager bound to `host:port`."""

    def __init__(self, host: str, port: int, check_store: CheckPassword):
        self.host = host
        self.port = port
        self.hub_password = secrets.token_urlsafe(24)
        self._check_store = check_store
        self._broker: Broker | None = None

    def _config(self) -> dict[str, Any]:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "timeout_disconnect_delay": 0,
            "plugins": {
                f"{__name__}.StoreAuthPlugin": {
                    "hub_password": self.hub_password,
                    "check_store": self._check_store,
                },
                f"{__name__}.StoreAclPlugin": {},
            },
        }

    async def __aenter__(self) -> EmbeddedBroker:
        if port_in_use(self.host, self.port):
            raise HubError(
                f"MQTT port {self.host}:{self.port} is already in use (another broker?). "
                "Set [broker] port to a free port, or point [mqtt] host at that broker."
            )
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        logging.getLogger("transitions").setLevel(logging.WARNING)
        self._broker = Broker(self._config())
        await self._broker.start()
        log.info("embedded MQTT broker listening on %s:%d", self.host, self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
