"""The journal opens, migrates, reports its state, and refuses a corrupt file clearly."""

from __future__ import annotations

import sqlite3
import time

import pytest

from edge.errors import EdgeError, JournalCorrupt
from edge.journal import _MIGRATIONS, Journal


async def test_new_journal_starts_at_epoch_one_with_empty_outbox(tmp_path):
    path = tmp_path / "j.sqlite3"
    async with Journal(path) as journal:
        state = await journal.state()
    assert (state.acked_through, state.outbox_pending) == (0, 0)
    assert abs(state.epoch - time.time()) < 60  # a new journal's epoch is its creation time
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(_MIGRATIONS)
    conn.close()
    async with Journal(path) as journal:  # reopening does not re-run migrations
        assert (await journal.state()).epoch == state.epoch  # reopening keeps it


async def test_corrupt_journal_is_refused_not_replaced(tmp_path):
    path = tmp_path / "j.sqlite3"
    async with Journal(path):
        pass
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\x5a" * (4096 - 100)
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match="is corrupt") as info:
        async with Journal(path):
            pass
    assert str(path) in str(info.value)
    assert info.value.backup is not None
    assert str(info.value.backup) in str(info.value)  # the message names the backup to restore
    assert path.read_bytes() == bytes(data)  # untouched, kept for support
    conn = sqlite3.connect(info.value.backup)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


async def test_garbage_file_is_refused(tmp_path):
    path = tmp_path / "j.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalCorrupt):
        async with Journal(path):
            pass


async def test_locked_journal_is_not_called_corrupt(tmp_path):
    path = tmp_path / "j.sqlite3"
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    other.execute("CREATE TABLE placeholder (x)")  # an old, not yet migrated file
    other.execute("BEGIN EXCLUSIVE")  # rollback-journal mode: blocks readers too
    try:
        with pytest.raises(EdgeError, match="another storelink-edge") as info:
            async with Journal(path):
                pass
        assert not isinstance(info.value, JournalCorrupt)
    finally:
        other.execute("ROLLBACK")
        other.close()


async def test_old_idempotency_keys_are_purged_at_start(tmp_path):
    path = tmp_path / "j.sqlite3"
    async with Journal(path) as journal:
        await journal.transaction(
            lambda conn: conn.executemany(
                "INSERT INTO idempotency (key, request_hash, status, response, created_at) VALUES (?, 'h', 200, '{}', ?)",
                [("old", "2020-01-01T00:00:00+00:00"), ("new", "2999-01-01T00:00:00+00:00")],
            )
        )
    async with Journal(path) as journal:
        keys = await journal.read(lambda conn: [k for (k,) in conn.execute("SELECT key FROM idempotency")])
    assert keys == ["new"]
