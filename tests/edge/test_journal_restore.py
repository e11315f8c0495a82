"""Restoring a journal backup: a new epoch, the outbox renumbered from 1, nothing counted as acked."""

from __future__ import annotations

import sqlite3
import time

import pytest

from edge.cli import main
from edge.errors import EdgeError
from edge.journal import Journal, append_event, daemon_lock, restore
from edge.outbox import apply_ack, read_batch


async def _events(journal: Journal, n: int, start: int = 0) -> None:
    def write(conn):
        for i in range(start, start + n):
            append_event(conn, "order.paid", f'{{"id": "o{i}"}}', "2026-11-24T08:00:00+00:00")

    await journal.transaction(write)


def _backup(journal_path, target) -> None:
    source = sqlite3.connect(journal_path)
    copy = sqlite3.connect(target)
    source.backup(copy)
    copy.close()
    source.close()


async def test_restore_bumps_the_epoch_and_renumbers_the_outbox(tmp_path):
    path = tmp_path / "journal.sqlite3"
    async with Journal(path) as journal:
        await _events(journal, 5)
        old_epoch = (await journal.state()).epoch
        await journal.transaction(lambda conn: apply_ack(conn, old_epoch, 2))  # o0, o1 acked and gone
        _backup(path, tmp_path / "backup.sqlite3")  # holds o2..o4, unacked
        await _events(journal, 3, start=5)  # sold after the backup: lost with the card
    done = restore(tmp_path / "backup.sqlite3", path)
    assert done.old_epoch == old_epoch
    assert done.new_epoch >= max(old_epoch + 1, int(time.time()) - 5)
    assert done.resend == 3
    assert done.kept_as is not None
    assert done.kept_as.exists()
    async with Journal(path) as journal:
        state = await journal.state()
        assert (state.epoch, state.acked_through, state.outbox_pending) == (done.new_epoch, 0, 3)
        batch = await journal.read(lambda conn: read_batch(conn, "shop-1", 0))
        assert batch is not None
        assert (batch.epoch, batch.seq_from, batch.seq_to) == (done.new_epoch, 1, 3)
        assert [e.body["id"] for e in batch.events] == ["o2", "o3", "o4"]
        # the next sale continues the new numbering
        await _events(journal, 1, start=100)
        assert (await journal.state()).outbox_pending == 4
        seqs = await journal.read(lambda c: [r[0] for r in c.execute("SELECT seq FROM outbox ORDER BY seq")])
        assert seqs == [1, 2, 3, 4]
    # restoring the same backup again still moves the epoch forward
    assert restore(tmp_path / "backup.sqlite3", path).new_epoch > done.new_epoch


async def test_restore_refuses_a_bad_backup_and_keeps_the_journal(tmp_path):
    path = tmp_path / "journal.sqlite3"
    async with Journal(path) as journal:
        await _events(journal, 2)
    before = path.read_bytes()
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(EdgeError, match="not a usable journal"):
        restore(bad, path)
    with pytest.raises(EdgeError, match="no backup file"):
        restore(tmp_path / "missing.sqlite3", path)
    assert path.read_bytes() == before


def test_restore_is_refused_while_a_daemon_holds_the_state_dir(tmp_path, capsys):
    toml = tmp_path / "edge.toml"
    state = tmp_path / "state"
    toml.write_text(f'store = "shop-1"\nstate_dir = "{state}"\n[mqtt]\nhost = "127.0.0.1"\n')
    with daemon_lock(state), pytest.raises(SystemExit) as exit_:
        main(["--config", str(toml), "journal", "restore", str(tmp_path / "x.sqlite3")])
    assert exit_.value.code == 2
    assert "another storelink-edge is running" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--config", str(toml), "journal", "restore"])
    assert "no backups in" in capsys.readouterr().err
