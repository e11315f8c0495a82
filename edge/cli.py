"""`storelink-edge`: run the store daemon, load the catalog, manage staff, paired devices and the journal."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from edge import access, daemon
from edge.catalog import CatalogStore
from edge.config import EdgeSettings
from edge.errors import EdgeError
from edge.journal import Journal, daemon_lock, restore
from protocol import ConfigError, load_settings

__all__ = ["main"]

SAMPLE_CATALOG = Path(__file__).with_name("sample_catalog.json")

T = TypeVar("T")


def _settings(args: argparse.Namespace) -> EdgeSettings:
    return load_settings(EdgeSettings, args.config)


def cmd_run(args: argparse.Namespace) -> None:
    """Start the daemon until SIGINT/SIGTERM."""
    settings = _settings(args)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(daemon.run(settings))


def cmd_catalog_load(args: argparse.Namespace) -> None:
    """Validate a CSV/JSON catalog and install it; a running daemon picks it up within seconds."""
    from edge.catalog_files import read_catalog_file  # noqa: PLC0415 - pulls in pypinyin

    settings = _settings(args)
    if (args.file is None) == (not args.sample):
        raise ValueError("give a catalog FILE or --sample")
    doc = read_catalog_file(Path(args.file) if args.file else SAMPLE_CATALOG)
    store = CatalogStore(settings.state_dir / "catalog.json")
    try:
        store.save(doc, force=args.force)
    finally:
        store.close()
    print(f"catalog version {doc.version} with {len(doc.products)} products installed")


def _read_pin(args: argparse.Namespace) -> str:
    if args.pin_stdin:
        return sys.stdin.readline().strip()
    pin = getpass.getpass("PIN (4-8 digits): ")
    if pin != getpass.getpass("repeat: "):
        raise ValueError("the two PINs differ")
    return pin


def cmd_staff_add(args: argparse.Namespace) -> None:
    """Add or replace a staff member (until the hub syncs staff)."""
    settings = _settings(args)
    member = access.add_staff(
        settings.state_dir / "staff.json", args.id, args.name, args.role, _read_pin(args)
    )
    print(f"staff '{member.id}' ({member.name}, {member.role}) saved")


async def _with_journal(settings: EdgeSettings, work: Callable[[Journal], Awaitable[T]]) -> T:
    # SQLite allows this second process next to a running daemon; writes take turns.
    async with Journal(settings.state_dir / "journal.sqlite3") as journal:
        return await work(journal)


def cmd_pair(args: argparse.Namespace) -> None:
    """Show a 6-digit code that pairs one phone or tablet within 5 minutes."""
    code = asyncio.run(_with_journal(_settings(args), access.create_pairing_code))
    print(f"pairing code: {code}  (valid 5 minutes; enter it in the app or POST /api/v1/devices/pair)")


def cmd_paired(args: argparse.Namespace) -> None:
    """List paired devices, or revoke one."""
    settings = _settings(args)
    if args.revoke:
        ok = asyncio.run(_with_journal(settings, lambda j: access.revoke_device(j, args.revoke)))
        print(f"device {args.revoke} revoked" if ok else f"no active device {args.revoke}")
        return

    async def listing(journal: Journal) -> list[tuple[str, ...]]:
        return await journal.read(
            lambda conn: conn.execute(
                "SELECT id, name, created_at, coalesce(revoked_at, '') FROM devices ORDER BY created_at"
            ).fetchall()
        )

    for row in asyncio.run(_with_journal(settings, listing)):
        print("  ".join(row) + ("  (revoked)" if row[3] else ""))


def cmd_journal_restore(args: argparse.Namespace) -> None:
    """Replace the journal with a backup under a new epoch (the daemon must be stopped)."""
    settings = _settings(args)
    path = settings.state_dir / "journal.sqlite3"
    backup = Path(args.backup) if args.backup else None
    with daemon_lock(settings.state_dir):
        if backup is None:
            backup = Journal(path).newest_backup()
            if backup is None:
                raise EdgeError(f"no backups in {settings.state_dir / 'backups'}; name a backup file")
        done = restore(backup, path)
    print(f"journal restored from {done.backup}")
    print(f"epoch {done.old_epoch} -> {done.new_epoch}; {done.resend} events will be sent to the hub again")
    if done.kept_as:
        print(f"the replaced journal is kept as {done.kept_as}")


def cmd_journal_backups(args: argparse.Namespace) -> None:
    """List the daily backups, newest last."""
    settings = _settings(args)
    for backup in sorted((settings.state_dir / "backups").glob("journal-*.sqlite3")):
        print(backup)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storelink-edge", description=__doc__)
    parser.add_argument("--config", type=Path, help="edge.toml (every setting also from STORELINK_* env)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the store daemon").set_defaults(func=cmd_run)

    catalog = sub.add_parser("catalog", help="the product catalog").add_subparsers(dest="sub", required=True)
    load = catalog.add_parser("load", help="install a catalog from a CSV or JSON file")
    load.add_argument("file", nargs="?", help="CSV or JSON catalog")
    load.add_argument("--sample", action="store_true", help="the bundled convenience store + café catalog")
    load.add_argument("--force", action="store_true", help="install even if older than the current one")
    load.set_defaults(func=cmd_catalog_load)

    staff = sub.add_parser("staff", help="store staff").add_subparsers(dest="sub", required=True)
    add = staff.add_parser("add", help="add or replace a staff member")
    add.add_argument("id", help="sign-in id, e.g. wang or 001")
    add.add_argument("--name", required=True)
    add.add_argument("--role", required=True, choices=[r.value for r in access.Role])
    add.add_argument("--pin-stdin", action="store_true", help="read the PIN from stdin")
    add.set_defaults(func=cmd_staff_add)

    journal = sub.add_parser("journal", help="the store journal").add_subparsers(dest="sub", required=True)
    journal.add_parser("backups", help="list the daily backups").set_defaults(func=cmd_journal_backups)
    restore_cmd = journal.add_parser("restore", help="restore a backup under a new epoch (daemon stopped)")
    restore_cmd.add_argument("backup", nargs="?", help="backup file (default: the newest)")
    restore_cmd.set_defaults(func=cmd_journal_restore)

    sub.add_parser("pair", help="show a code to pair a phone or tablet").set_defaults(func=cmd_pair)
    paired = sub.add_parser("paired", help="list paired devices (or --revoke ID)")
    paired.add_argument("--revoke", metavar="DEVICE_ID")
    paired.set_defaults(func=cmd_paired)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of `storelink-edge`."""
    args = _parser().parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        pass
    except (ConfigError, EdgeError, ValueError) as err:
        print(f"storelink-edge: {err}", file=sys.stderr)
        sys.exit(2)
    except (OSError, sqlite3.Error) as err:  # e.g. the API port is taken, the disk is read-only
        print(f"storelink-edge: cannot start: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
