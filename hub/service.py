"""The hub process: database, broker (embedded or external), MQTT link, HTTP API and nightly jobs."""

from __future__ import annotations

import contextlib
import logging
from functools import partial
from types import TracebackType

from aiohttp import web

from hub.api import make_app
from hub.broker import HUB_USERNAME, EmbeddedBroker
from hub.config import HubSettings
from hub.db import Database, migrate
from hub.link import BrokerLink, MqttTarget
from hub.messaging_worker import build_outbox
from hub.scheduler import Clock, Scheduler
from hub.stores import check_store_password

__all__ = ["Hub"]

log = logging.getLogger(__name__)


class Hub:
    """All parts of one hub instance as an async context manager."""

    def __init__(self, settings: HubSettings, *, db: Database | None = None, clock: Clock | None = None):
        self.settings = settings
        self.db = db or Database.from_url(settings.resolved_database_url())
        self._owns_db = db is None
        self._stack = contextlib.AsyncExitStack()
        self.broker: EmbeddedBroker | None = None
        if settings.embedded_broker:
            self.broker = EmbeddedBroker(
                settings.broker.bind, settings.broker.port, partial(check_store_password, self.db)
            )
        self.link = BrokerLink(self.db, self._target())
        self.http_port: int | None = None
        # Checked here, so a typo in jobs.disabled stops the start instead of a job silently running.
        self.scheduler = Scheduler(self.db, settings.jobs, clock=clock) if settings.jobs.enabled else None
        # Campaign releases, group-buy expiry and message sending (hub.messaging_worker).
        self.outbox = build_outbox(self.db, settings.messaging) if settings.messaging.enabled else None

    @property
    def mqtt_port(self) -> int:
        """Port of the broker the hub uses."""
        return self.broker.port if self.broker is not None else self.settings.mqtt.port

    def _target(self) -> MqttTarget:
        if self.broker is not None:
            local = self.broker.host in ("0.0.0.0", "", "::")  # noqa: S104 - comparing, not binding
            host = "127.0.0.1" if local else self.broker.host
            return MqttTarget(
                host, self.broker.port, username=HUB_USERNAME, password=self.broker.hub_password
            )
        mqtt = self.settings.mqtt
        return MqttTarget(
            mqtt.host or "",
            mqtt.port,
            username=mqtt.username,
            password=mqtt.password,
            tls=mqtt.tls,
            ca_file=str(mqtt.ca_file) if mqtt.ca_file else None,
            keepalive=mqtt.keepalive,
            shared=mqtt.shared_subscription,
        )

    async def __aenter__(self) -> Hub:
        try:
            if self._owns_db:
                self._stack.push_async_callback(self.db.close)
            await migrate(self.db.engine)
            if self.broker is not None:
                await self._stack.enter_async_context(self.broker)
            await self._stack.enter_async_context(self.link)
            runner = web.AppRunner(make_app(self.db, self.settings, self.link), shutdown_timeout=2)
            await runner.setup()
            self._stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, self.settings.http_host, self.settings.http_port)
            await site.start()
            self.http_port = runner.addresses[0][1]
            if self.scheduler is not None:  # last in, first out: stopped before the API and the database
                await self._stack.enter_async_context(self.scheduler)
            if self.outbox is not None:
                await self._stack.enter_async_context(self.outbox)
        except BaseException:
            await self._stack.aclose()
            raise
        log.info("hub API on http://%s:%d/api/v1/", self.settings.http_host, self.http_port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()
