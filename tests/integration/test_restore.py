"""A store's journal restored from a backup syncs under a new epoch: no order doubled, none lost."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from sqlalchemy import func, select

from edge.journal import restore
from hub.models import Reconciliation, SyncState
from hub.stores import add_store
from tests.conftest import BrokerSetup, hub_settings, running_hub
from tests.integration.test_sync import _edge, _hub_counts, _sell, _until_synced

pytestmark = pytest.mark.slow


async def test_restored_journal_resends_under_a_new_epoch_without_duplicates(
    tmp_path, database_url, mosquitto_factory
):
    mosq = mosquitto_factory(secure=True)
    mqtt = {"host": "127.0.0.1", "port": mosq.port, "username": mosq.hub_user, "password": mosq.hub_password}
    setup = BrokerSetup("mosquitto", {"mqtt": mqtt}, mosq)
    backup = tmp_path / "backup.sqlite3"
    async with running_hub(hub_settings(tmp_path, database_url, setup)) as hub:
        creds = await add_store(hub.db, "shop-1")
        await setup.register("shop-1", creds.password)
        mosq.stop()
        async with _edge(tmp_path, mosq.port, creds.password) as daemon:
            first = await _sell(daemon, 5)
            old_epoch = (await daemon.journal.state()).epoch

            def take_backup(conn: sqlite3.Connection) -> None:
                copy = sqlite3.connect(backup)
                conn.backup(copy)
                copy.close()

            await daemon.journal.read(take_backup)  # the 5 orders, not yet at the hub
            mosq.start()
            second = await _sell(daemon, 3)
            await _until_synced(hub, daemon, 8, within=30)
        journal = tmp_path / "edge-shop-1" / "journal.sqlite3"
        done = restore(backup, journal)  # the card died; the installer restores last night's copy
        assert done.resend == 6  # the shift opening and the 5 orders
        async with _edge(tmp_path, mosq.port, creds.password) as daemon:
            async with asyncio.timeout(30):
                while (await daemon.journal.state()).outbox_pending:
                    await asyncio.sleep(0.1)
            orders, gross, _ = await _hub_counts(hub)
            assert (orders, gross) == (8, first + second)
            third = await _sell(daemon, 2)
            await _until_synced(hub, daemon, 10, within=30)
        orders, gross, _ = await _hub_counts(hub)
        assert (orders, gross) == (10, first + second + third)
        async with hub.db.session() as session:
            conflicts = await session.scalar(select(func.count()).select_from(Reconciliation))
            epochs = dict((await session.execute(select(SyncState.epoch, SyncState.acked_through))).all())
        assert conflicts == 0
        assert done.new_epoch > old_epoch
        assert epochs[done.new_epoch] == 8  # 6 resent + 2 new, contiguous from 1
