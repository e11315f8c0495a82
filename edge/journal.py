"""The store's durable journal (SQLite, WAL): epoch, outbox and acknowledgement state.

This first version holds what the hub link reports; orders arrive with the till. All
SQLite work runs on one dedicated thread: fsyncs never block the event loop, and calls
are serialised even when the awaiting task is cancelled half-way (the call is shielded,
so the connection is never used by two threads at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from edge.errors import EdgeError, JournalCorrupt
from protocol import new_id

__all__ = ["Journal", "JournalState", "Restored", "append_event", "daemon_lock", "restore"]

T = TypeVar("T")
KEEP_BACKUPS = 7
IDEMPOTENCY_TTL = timedelta(days=7)
# Longer than the hub keeps re-sending a command that has no result yet.
COMMAND_TTL = timedelta(days=90)

_MIGRATIONS: list[str] = [
    # 1: baseline
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
    INSERT INTO meta (key, value) VALUES ('epoch', 1), ('acked_through', 0), ('next_seq', 1);
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY,
        epoch INTEGER NOT NULL,
        event_id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        ts TEXT NOT NULL,
        body TEXT NOT NULL
    ) STRICT;
    """,
    # 2: the till
    """
    CREATE TABLE orders (
        id TEXT PRIMARY KEY,
        number INTEGER NOT NULL,
        business_day TEXT NOT NULL,
        status TEXT NOT NULL,
        doc TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (business_day, number)
    ) STRICT;
    CREATE INDEX orders_by_status ON orders (status, business_day);
    CREATE TABLE day_counters (business_day TEXT PRIMARY KEY, last_number INTEGER NOT NULL) STRICT;
    CREATE TABLE idempotency (
        key TEXT PRIMARY KEY,
        request_hash TEXT NOT NULL,
        status INTEGER NOT NULL,
        response TEXT NOT NULL,
        created_at TEXT NOT NULL
    ) STRICT;
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    ) STRICT;
    CREATE TABLE pairing_codes (
        code_hash TEXT PRIMARY KEY,
        expires_at TEXT NOT NULL
    ) STRICT;
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        staff_id TEXT NOT NULL,
        device_id TEXT NOT NULL REFERENCES devices (id),
        expires_at TEXT NOT NULL
    ) STRICT;
    CREATE TABLE pin_failures (
        staff_id TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        locked_until TEXT
    ) STRICT;
    CREATE TABLE shifts (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        doc TEXT NOT NULL
    ) STRICT;
    CREATE UNIQUE INDEX one_open_shift ON shifts (status) WHERE status = 'open';
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        ts TEXT NOT NULL,
        staff_id TEXT NOT NULL,
        action TEXT NOT NULL,
        order_id TEXT,
        detail TEXT NOT NULL
    ) STRICT;
    """,
    # 3: commands from the hub, each run once
    """
    CREATE TABLE commands (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        body TEXT NOT NULL,
        received_at TEXT NOT NULL,
        ok INTEGER NOT NULL,
        detail TEXT NOT NULL
    ) STRICT;
    CREATE INDEX commands_by_type ON commands (type, received_at);
    """,
    # 4: print jobs, printed at most once each
    """
    CREATE TABLE print_jobs (
        id TEXT PRIMARY KEY,
        printer TEXT NOT NULL,
        kind TEXT NOT NULL,
        ref TEXT,
        payload BLOB,
        state TEXT NOT NULL CHECK (state IN ('queued', 'printing', 'done', 'failed', 'unknown')),
        attempts INTEGER NOT NULL,
        error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    ) STRICT;
    CREATE INDEX print_jobs_queue ON print_jobs (printer, state, created_at);
    """,
    # 5: what each kitchen station has been sent of each order
    """
    CREATE TABLE kitchen_sent (order_id TEXT PRIMARY KEY, state TEXT NOT NULL) STRICT;
    """,
    # 6: stored-value top-ups taken at this till (the hub holds the balance; this is the slip)
    """
    CREATE TABLE topups (
        id TEXT PRIMARY KEY,
        shift_id TEXT NOT NULL,
        ts TEXT NOT NULL,
        doc TEXT NOT NULL
    ) STRICT;
    """,
    # 7: kitchen display screens, hold-and-fire, queue calling, pickup numbers (edge/kds.py, queue_calls.py)
    """
    CREATE TABLE live_versions (channel TEXT PRIMARY KEY, version INTEGER NOT NULL) STRICT;
    CREATE TABLE kitchen_orders (order_id TEXT PRIMARY KEY, pickup INTEGER NOT NULL) STRICT;
    CREATE TABLE kitchen_plan (
        order_id TEXT NOT NULL,
        line_id TEXT NOT NULL,
        course INTEGER NOT NULL,
        held INTEGER NOT NULL,
        PRIMARY KEY (order_id, line_id)
    ) STRICT;
    CREATE TABLE kds_tickets (
        id TEXT PRIMARY KEY,
        station TEXT NOT NULL,
        order_id TEXT NOT NULL,
        order_number INTEGER NOT NULL,
        title TEXT NOT NULL,
        pickup INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('new', 'in_progress', 'ready', 'served')),
        items TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    ) STRICT;
    CREATE INDEX kds_tickets_station ON kds_tickets (station, state, created_at);
    CREATE INDEX kds_tickets_version ON kds_tickets (station, version);
    CREATE INDEX kds_tickets_order ON kds_tickets (order_id);
    CREATE TABLE queue_tickets (
        id TEXT PRIMARY KEY,
        business_day TEXT NOT NULL,
        category TEXT NOT NULL,
        number INTEGER NOT NULL,
        party_size INTEGER,
        order_id TEXT UNIQUE,
        state TEXT NOT NULL CHECK (state IN ('waiting', 'called', 'seated', 'skipped', 'cancelled')),
        calls INTEGER NOT NULL,
        taken_at TEXT NOT NULL,
        called_at TEXT,
        done_at TEXT,
        UNIQUE (business_day, category, number)
    ) STRICT;
    CREATE INDEX queue_tickets_state ON queue_tickets (business_day, state, category, number);
    CREATE TABLE queue_calls (
        id INTEGER PRIMARY KEY,
        ticket_id TEXT NOT NULL REFERENCES queue_tickets (id),
        at TEXT NOT NULL,
        text TEXT NOT NULL
    ) STRICT;
    """,
    # stock tasks from the hub (ship, receive, count) and SKUs blocked from sale (edge/stock_tasks.py)
    """
    CREATE TABLE stock_tasks (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('ship', 'receive', 'count')),
        ref TEXT NOT NULL,
        doc TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('open', 'done', 'cancelled')),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    ) STRICT;
    CREATE INDEX stock_tasks_by_state ON stock_tasks (state, created_at);
    CREATE TABLE stock_task_lines (
        task_id TEXT NOT NULL REFERENCES stock_tasks (id),
        sku TEXT NOT NULL,
        expected_milli INTEGER,
        qty_milli INTEGER NOT NULL,
        damaged_milli INTEGER NOT NULL DEFAULT 0,
        discrepancy TEXT,
        note TEXT NOT NULL DEFAULT '',
        reported_milli INTEGER NOT NULL DEFAULT 0,
        settled INTEGER NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (task_id, sku)
    ) STRICT;
    CREATE TABLE blocked_skus (sku TEXT PRIMARY KEY, reason TEXT NOT NULL, since TEXT NOT NULL) STRICT;
    """,
    # tables: floor plan, seatings (a party at one or more tables) and their bills (edge/tables.py)
    """
    CREATE TABLE floor_areas (id TEXT PRIMARY KEY, name TEXT NOT NULL, position INTEGER NOT NULL) STRICT;
    CREATE TABLE floor_tables (
        id TEXT PRIMARY KEY,
        area_id TEXT NOT NULL REFERENCES floor_areas (id),
        name TEXT NOT NULL,
        seats INTEGER NOT NULL CHECK (seats BETWEEN 1 AND 99),
        position INTEGER NOT NULL,
        active INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE seatings (
        id TEXT PRIMARY KEY,
        party_size INTEGER NOT NULL,
        seated_at TEXT NOT NULL,
        opened_by TEXT NOT NULL,
        bill_requested_at TEXT,
        closed_at TEXT,
        closed_reason TEXT
    ) STRICT;
    CREATE TABLE seated_tables (
        table_id TEXT PRIMARY KEY REFERENCES floor_tables (id),
        seating_id TEXT NOT NULL REFERENCES seatings (id)
    ) STRICT;
    CREATE TABLE seating_orders (
        order_id TEXT PRIMARY KEY REFERENCES orders (id),
        seating_id TEXT NOT NULL REFERENCES seatings (id),
        role TEXT NOT NULL CHECK (role IN ('main', 'part', 'merged')),
        even_parts INTEGER
    ) STRICT;
    CREATE INDEX seating_orders_by_seating ON seating_orders (seating_id);
    """,
]


@dataclass(frozen=True)
class JournalState:
    """What `status` reports about the journal."""

    epoch: int
    acked_through: int
    outbox_pending: int


class Journal:
    """Open, check and migrate the journal; one connection used from one worker thread."""

    def __init__(self, path: Path):
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._synchronous = "FULL"

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._thread is None:
            raise RuntimeError("journal is not open; use `async with Journal(path)`")
        loop = asyncio.get_running_loop()
        return await asyncio.shield(loop.run_in_executor(self._thread, fn))

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            result = conn.execute("PRAGMA quick_check").fetchone()
            if result is None or result[0] != "ok":
                detail = str(result[0] if result else "no result")
                raise JournalCorrupt(str(self.path), detail, self.newest_backup())
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                conn.executescript(f"BEGIN IMMEDIATE; {script}; PRAGMA user_version={number}; COMMIT;")
            if version == 0:
                # A new journal's epoch is its creation time, so a re-imaged Pi never reuses
                # an epoch (and its seqs) that the hub has already seen for this store.
                conn.execute("UPDATE meta SET value = ? WHERE key = 'epoch'", (int(time.time()),))
        except sqlite3.OperationalError as err:  # locked, read-only, disk full: not corruption
            conn.close()
            raise EdgeError(
                f"cannot open journal {self.path}: {err}. Is another storelink-edge running, "
                "or is the disk full or read-only?"
            ) from err
        except sqlite3.DatabaseError as err:
            conn.close()
            raise JournalCorrupt(str(self.path), str(err), self.newest_backup()) from err
        except BaseException:
            conn.close()
            raise
        self._maintain(conn)
        return conn

    def _maintain(self, conn: sqlite3.Connection) -> None:
        self._daily_backup(conn)
        # Idempotency keys only need to outlive a phone's retries; a week is generous.
        cutoff = (datetime.now(UTC) - IDEMPOTENCY_TTL).isoformat()
        conn.execute("DELETE FROM idempotency WHERE created_at < ?", (cutoff,))
        cutoff = (datetime.now(UTC) - COMMAND_TTL).isoformat()
        conn.execute("DELETE FROM commands WHERE received_at < ?", (cutoff,))

    async def maintain(self) -> None:
        """Daily backup and purge of old idempotency keys (the daemon calls this hourly)."""
        await self._call(lambda: self._maintain(self._require()))

    @property
    def backup_dir(self) -> Path:
        """Where the daily copies of the journal go."""
        return self.path.parent / "backups"

    def newest_backup(self) -> Path | None:
        """The most recent daily backup, if any."""
        found = sorted(self.backup_dir.glob(f"{self.path.stem}-*.sqlite3"))
        return found[-1] if found else None

    def _daily_backup(self, conn: sqlite3.Connection) -> None:
        # A checked-good copy per day (SQLite's online backup), the newest KEEP_BACKUPS kept:
        # what an installer restores when the card fails. A restored journal must get a
        # new epoch before it syncs again (see the sync design).
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        target = self.backup_dir / f"{self.path.stem}-{datetime.now(UTC):%Y%m%d}.sqlite3"
        if target.exists():
            return
        partial = target.with_suffix(".partial")
        copy = sqlite3.connect(partial)
        try:
            conn.backup(copy)
        finally:
            copy.close()
        partial.replace(target)
        for old in sorted(self.backup_dir.glob(f"{self.path.stem}-*.sqlite3"))[:-KEEP_BACKUPS]:
            old.unlink()

    def _transaction(self, fn: Callable[[sqlite3.Connection], T], durable: bool) -> T:
        conn = self._require()
        level = "FULL" if durable else "NORMAL"
        if self._synchronous != level:
            conn.execute(f"PRAGMA synchronous={level}")
            self._synchronous = level
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            # Also when COMMIT itself fails (disk full, I/O error): otherwise the connection
            # stays inside the transaction, later reads see data that was never saved, and
            # every later BEGIN fails.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    async def transaction(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = False) -> T:
        """Run `fn(conn)` in one write transaction on the journal thread; all or nothing.

        `durable=True` commits with `synchronous=FULL` (fsync of the WAL before COMMIT
        returns): used for everything that closes money, so a paid order survives power
        loss. Other changes use NORMAL, which WAL keeps safe across a process crash.
        """
        return await self._call(lambda: self._transaction(fn, durable))

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read-only `fn(conn)` on the journal thread."""
        return await self._call(lambda: fn(self._require()))

    def _state(self) -> JournalState:
        conn = self._require()
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        pending = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        return JournalState(epoch=meta["epoch"], acked_through=meta["acked_through"], outbox_pending=pending)

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("journal is not open; use `async with Journal(path)`")
        return self._conn

    async def state(self) -> JournalState:
        """Current epoch, acknowledged seq and outbox depth."""
        return await self._call(self._state)

    async def __aenter__(self) -> Journal:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        try:
            self._conn = await self._call(self._open)
        except BaseException:
            self._thread.shutdown(wait=False)
            self._thread = None
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._thread is None:
            return
        if self._conn is not None:
            await self._call(self._conn.close)
            self._conn = None
        thread, self._thread = self._thread, None
        await asyncio.to_thread(thread.shutdown, wait=True)


def append_event(conn: sqlite3.Connection, event_type: str, body: str, ts: str) -> int:
    """Add an event to the outbox inside the caller's transaction; return its seq.

    The seq comes from `meta.next_seq`, a per-store counter that never wraps or reuses a
    number, even after acknowledged rows are deleted.
    """
    meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('next_seq', 'epoch')").fetchall())
    seq, epoch = meta["next_seq"], meta["epoch"]
    conn.execute(
        "INSERT INTO outbox (seq, epoch, event_id, type, ts, body) VALUES (?, ?, ?, ?, ?, ?)",
        (seq, epoch, str(new_id()), event_type, ts, body),
    )
    conn.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq + 1,))
    return int(seq)


@dataclass(frozen=True)
class Restored:
    """What `restore` did."""

    backup: Path
    old_epoch: int
    new_epoch: int
    resend: int
    kept_as: Path | None


@contextlib.contextmanager
def daemon_lock(state_dir: Path) -> Iterator[None]:
    """Hold the lock that says a daemon owns this state directory (released on exit or crash)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "edge.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise EdgeError(
                f"another storelink-edge is running on {state_dir}; "
                "stop it first (systemctl stop storelink-edge)"
            ) from err
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def restore(backup: Path, journal: Path) -> Restored:
    """Replace `journal` with a checked copy of `backup` under a new epoch; the daemon must be stopped.

    The backup's outbox is renumbered from seq 1 under the new epoch and nothing counts as
    acknowledged, so the store sends everything it still holds again; the hub recognises
    orders it already has by their ids. The replaced journal is kept next to it.
    """
    if not backup.is_file():
        raise EdgeError(f"no backup file at {backup}")
    source = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    try:
        result = source.execute("PRAGMA quick_check").fetchone()
        if result is None or result[0] != "ok":
            raise sqlite3.DatabaseError(str(result[0] if result else "no result"))
        partial = journal.with_name(journal.name + ".restoring")
        partial.unlink(missing_ok=True)
        copy = sqlite3.connect(partial, isolation_level=None)
        try:
            source.backup(copy)
            old_epoch, new_epoch, resend = _renumber(copy, _current_epoch(journal))
        finally:
            copy.close()
    except sqlite3.DatabaseError as err:
        raise EdgeError(
            f"backup {backup} is not a usable journal ({err}); choose an older one from {backup.parent}"
        ) from err
    finally:
        source.close()
    kept_as = None
    if journal.exists():
        kept_as = journal.with_name(f"{journal.name}.replaced-{datetime.now(UTC):%Y%m%dT%H%M%S%f}")
        journal.replace(kept_as)
    # A stale WAL next to the restored file would be replayed into it: move it with the old one.
    for suffix in ("-wal", "-shm"):
        stale = journal.with_name(journal.name + suffix)
        if stale.exists():
            target = kept_as.with_name(kept_as.name + suffix) if kept_as else stale.with_suffix(".stale")
            stale.replace(target)
    partial.replace(journal)
    return Restored(backup, old_epoch, new_epoch, resend, kept_as)


def _current_epoch(journal: Path) -> int:
    """The epoch of the journal being replaced, or 0 if it is missing or unreadable."""
    try:
        conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row else 0


def _renumber(conn: sqlite3.Connection, current_epoch: int) -> tuple[int, int, int]:
    conn.execute("BEGIN IMMEDIATE")
    old_epoch = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0]
    # Never an epoch the hub has seen: later than the backup's, than the journal it replaces
    # (a second restore within the same second) and than any journal created before now.
    new_epoch = max(old_epoch + 1, current_epoch + 1, int(time.time()))
    rows = conn.execute("SELECT event_id, type, ts, body FROM outbox ORDER BY epoch, seq").fetchall()
    conn.execute("DELETE FROM outbox")
    conn.executemany(
        "INSERT INTO outbox (seq, epoch, event_id, type, ts, body) VALUES (?, ?, ?, ?, ?, ?)",
        [(seq, new_epoch, *row) for seq, row in enumerate(rows, start=1)],
    )
    conn.executemany(
        "UPDATE meta SET value = ? WHERE key = ?",
        [(new_epoch, "epoch"), (0, "acked_through"), (len(rows) + 1, "next_seq")],
    )
    conn.execute("COMMIT")
    return int(old_epoch), new_epoch, len(rows)
