"""The store daemon: composes journal, hub link and local API into one asyncio process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from types import TracebackType

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from edge.api import VERSION, make_app
from edge.commands import CommandRunner
from edge.config import EdgeSettings
from edge.device_manager import DeviceManager
from edge.discovery import Discovery
from edge.events import EventBus
from edge.hublink import HubLink
from edge.inputs import InputManager
from edge.journal import Journal, daemon_lock
from edge.promotions import TillPromotions
from edge.rpc import RpcClient
from edge.snapshots import Snapshots
from edge.stock_tasks import register_stock_commands
from edge.till import Till
from protocol.aio import cancel_and_wait, wait_for_stop_signal

__all__ = ["EdgeDaemon", "run"]

log = logging.getLogger(__name__)
MAINTENANCE_S = 3600


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log without query strings: a WebSocket's `?token=` must never reach a log file."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %d %.1fms", request.remote, request.method, request.path, response.status, time * 1000
        )


class EdgeDaemon:
    """Every part of the edge as one async context manager, torn down in reverse order."""

    def __init__(self, settings: EdgeSettings):
        self.settings = settings
        self._stack = contextlib.AsyncExitStack()
        self.journal = Journal(settings.state_dir / "journal.sqlite3")
        self.snapshots = Snapshots(settings)
        self.bus = EventBus()
        self.inputs = InputManager(self.bus, lambda: self.snapshots.catalog)
        self.discovery = Discovery(
            settings.discovery, settings.state_dir, store=settings.store, http_port=lambda: self.http_port
        )
        self.devices = DeviceManager(
            settings, self.journal, lambda: self.snapshots.catalog, self.inputs, self.discovery
        )
        self.commands = CommandRunner(self.journal, self.bus)
        register_stock_commands(self.commands)
        self.rpc = RpcClient(
            lambda request: self.link.publish_rpc(request),  # noqa: PLW0108 - the link is made below
            lambda: self.snapshots.offline_policy(settings.offline),
        )
        self.link = HubLink(
            settings,
            self.journal,
            software=f"storelink-edge {VERSION}",
            on_snapshot=self.snapshots.apply,
            versions=lambda: dict(self.snapshots.applied.versions),
            commands=self.commands,
            on_rpc_reply=self.rpc.on_reply,
            devices=self.devices.health,
        )
        self.till = Till(
            settings,
            self.journal,
            self.bus,
            on_outbox=self.link.notify_outbox,
            queue_print=self.devices.queue_in,
            promotions=TillPromotions(lambda: self.snapshots.promotions, lambda: self.snapshots.catalog),
        )
        self.http_port: int | None = None

    async def __aenter__(self) -> EdgeDaemon:
        try:
            self._stack.enter_context(daemon_lock(self.settings.state_dir))
            await self._stack.enter_async_context(self.journal)
            await self._stack.enter_async_context(self.snapshots)
            await self._stack.enter_async_context(self.devices)
            await self._stack.enter_async_context(self.link)
            app = make_app(
                self.settings,
                journal=self.journal,
                link=self.link,
                snapshots=self.snapshots,
                till=self.till,
                bus=self.bus,
                rpc=self.rpc,
                devices=self.devices,
            )
            runner = web.AppRunner(app, shutdown_timeout=2, access_log_class=PathOnlyAccessLogger)
            await runner.setup()
            self._stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, self.settings.http_host, self.settings.http_port)
            await site.start()
            self.http_port = runner.addresses[0][1]
            await self._stack.enter_async_context(self.discovery)
            maintenance = asyncio.create_task(self._maintain(), name="edge-journal-maintenance")
            self._stack.push_async_callback(cancel_and_wait, maintenance, log)
        except BaseException:
            await self._stack.aclose()
            raise
        log.info(
            "edge for store '%s' serving http://%s:%d/api/v1/",
            self.settings.store,
            self.settings.http_host,
            self.http_port,
        )
        return self

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_S)
            try:
                await self.journal.maintain()
            except (sqlite3.Error, OSError) as err:
                log.error("journal maintenance (backup, purge) failed: %s", err)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()


async def run(settings: EdgeSettings) -> None:
    """Run the daemon until SIGINT or SIGTERM."""
    async with EdgeDaemon(settings):
        await wait_for_stop_signal()
