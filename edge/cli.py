"""`storelink-edge`: run the store daemon, load the catalog, manage staff, paired devices and the journal."""

from __future__ import annotations

import argparse
import asyncio
import functools
import getpass
import io
import logging
import socket
import sqlite3
import sys
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import qrcode
from pydantic import ValidationError
from zeroconf import get_all_addresses

from drivers import SerialScale, WeightReading, encode
from drivers.discovery import scan_local
from edge import access, daemon, printing
from edge.catalog import CatalogStore
from edge.config import EdgeSettings
from edge.device_manager import preview
from edge.devices import DeviceEntry, load_registry, network_id, save_registry
from edge.discovery import KDS_PATH
from edge.errors import EdgeError
from edge.journal import Journal, daemon_lock, restore
from edge.print_queue import enqueue, recent_jobs
from edge.till import write_audit
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
    """Show a 6-digit code that pairs one phone or tablet within 5 minutes (and print it with a QR)."""
    settings = _settings(args)
    code = asyncio.run(_with_journal(settings, access.create_pairing_code))
    print(f"pairing code: {code}  (valid 5 minutes; enter it in the app or POST /api/v1/devices/pair)")
    if not args.print:
        return
    entry = load_registry(settings.state_dir).find("receipt")
    host = settings.http_host
    if host in ("0.0.0.0", "::"):  # noqa: S104 - listening everywhere: phones find the Pi by name
        host = f"{socket.gethostname()}.local"
    link = f"storelink://pair?api=http://{host}:{settings.http_port}/api/v1&code={code}"
    ticket = printing.pairing_ticket(code, link, store_name=settings.store_name)
    payload = encode(ticket, entry.profile())

    async def queue(journal: Journal) -> str:
        return await journal.transaction(lambda conn: enqueue(conn, entry.id, "pairing", None, payload))

    print(
        f"printed on {entry.name} with a QR the app scans (job {asyncio.run(_with_journal(settings, queue))})"
    )


def _lan_host(settings: EdgeSettings) -> str:
    """The address a tablet on the LAN opens: the bind address, else this machine's first LAN IPv4.

    An IP rather than `<host>.local`: many Android browsers do not resolve mDNS names.
    """
    if settings.http_host not in ("0.0.0.0", "::", ""):  # noqa: S104 - comparing, not binding
        return settings.http_host
    lan = [address for address in get_all_addresses() if not address.startswith("127.")]
    return lan[0] if lan else f"{socket.gethostname()}.local"


def _terminal_qr(text: str) -> str:
    qr = qrcode.QRCode(border=2)
    qr.add_data(text)
    qr.make(fit=True)
    out = io.StringIO()
    qr.print_ascii(out=out, invert=True)
    return out.getvalue()


def cmd_kds_qr(args: argparse.Namespace) -> None:
    """Pair a kitchen screen per station and show its page link as a QR (terminal and receipt printer)."""
    settings = _settings(args)
    screens = [screen.station for screen in settings.kds.screens]
    if not screens:
        raise ValueError("no kitchen screens yet; list them under [kds] screens in edge.toml")
    if args.station is not None and args.station not in screens:
        raise ValueError(
            f"no kitchen screen for station {args.station!r}; the screens are {', '.join(screens)}"
        )
    host = args.host or _lan_host(settings)
    receipt = None if args.no_print else load_registry(settings.state_dir).by_role("receipt")

    async def pair(journal: Journal, station: str) -> tuple[str, str, str | None]:
        code = await access.create_pairing_code(journal)
        device_id, token = await access.pair_device(journal, code, f"后厨屏 {station}")
        query = urllib.parse.urlencode({"station": station, "token": token})
        url = f"http://{host}:{settings.http_port}{KDS_PATH}?{query}"
        if receipt is None:
            return device_id, url, None
        slip = printing.kds_link_ticket(station, url, device_id, store_name=settings.store_name)
        payload = encode(slip, receipt.profile())
        job = await journal.transaction(lambda conn: enqueue(conn, receipt.id, "pairing", None, payload))
        return device_id, url, job

    for station in [args.station] if args.station is not None else screens:
        device_id, url, job = asyncio.run(_with_journal(settings, functools.partial(pair, station=station)))
        print(f"kitchen screen {station}: {url}")
        print(_terminal_qr(url))
        where = f"printed on {receipt.name} (job {job})" if receipt is not None and job else "not printed"
        print(f"device {device_id}; {where}; revoke with `storelink-edge paired --revoke {device_id}`")
    if receipt is None and not args.no_print:
        print("no receipt printer: scan the QR above from this screen")


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


def cmd_devices(args: argparse.Namespace) -> None:
    """List registered devices with roles and their last print job."""
    settings = _settings(args)
    registry = load_registry(settings.state_dir)
    if not registry.devices:
        print("no devices yet; add a printer with `storelink-edge devices add --host IP --name NAME`")
        return

    async def last_jobs(journal: Journal) -> dict[str, str]:
        def read(conn: sqlite3.Connection) -> dict[str, str]:
            out = {}
            for entry in registry.devices:
                jobs = recent_jobs(conn, entry.id, 1)
                out[entry.id] = f"last job {jobs[0].kind} {jobs[0].state}" if jobs else "no jobs yet"
            return out

        return await journal.read(read)

    last = asyncio.run(_with_journal(settings, last_jobs))
    for entry in registry.devices:
        role = registry.role_of(entry) or "-"
        paper = f"{entry.paper_mm}mm  {last[entry.id]}" if entry.kind == "printer" else ""
        print(f"{entry.id}  {entry.name}  {entry.kind}  role={role}  {entry.address}  {paper}".rstrip())


def cmd_devices_add(args: argparse.Namespace) -> None:
    """Register a printer, scanner, scale or pole display (and bind it to a role)."""
    settings = _settings(args)
    if sum(x is not None for x in (args.host, args.serial, args.evdev)) != 1:
        raise ValueError(
            "give one of --host (network printer), --serial (serial port) or --evdev (USB scanner id)"
        )
    fields: dict[str, object] = {
        "name": args.name,
        "kind": args.kind,
        "role": args.role,
        "paper_mm": args.paper,
        "encoding": args.encoding,
        "cjk_font": not args.no_cjk_font,
        "cutter": not args.no_cutter,
        "status_query": not args.no_status,
        "categories": args.categories,
        "scan_mode": args.scan_mode,
        "terminator": args.terminator,
    }
    if args.baud is not None:
        fields["baudrate"] = args.baud
    if args.host is not None:
        fields |= {"id": network_id(args.host, args.port), "transport": "network", "host": args.host}
        fields["port"] = args.port
    elif args.serial is not None:
        fields |= {"id": "serial-" + Path(args.serial).name, "transport": "serial", "path": args.serial}
    else:
        fields |= {"id": args.evdev, "transport": "evdev", "path": args.evdev}
    entry = DeviceEntry.model_validate(fields)
    save_registry(settings.state_dir, load_registry(settings.state_dir).upsert(entry))
    print(f"device {entry.id} ({entry.name}, {entry.address}) saved with role {entry.role or '-'}")


def cmd_devices_bind(args: argparse.Namespace) -> None:
    """Give a device a role (the role moves from any other device)."""
    settings = _settings(args)
    registry = load_registry(settings.state_dir)
    entry = registry.find(args.device).model_copy(update={"role": args.role})
    save_registry(settings.state_dir, registry.upsert(DeviceEntry.model_validate(entry.model_dump())))
    print(f"{entry.kind} {entry.id} now has the role {args.role}")


def cmd_devices_test(args: argparse.Namespace) -> None:
    """Queue a test page (the running daemon prints it within seconds) or read the scale."""
    settings = _settings(args)
    entry = load_registry(settings.state_dir).find(args.device)
    if entry.kind == "scale":
        reading = asyncio.run(_read_scale(entry))
        print(f"{entry.name}: {reading.grams} g{' net' if reading.net else ''}")
        return
    if entry.kind != "printer":
        print(f"{entry.kind} {entry.id}: test it through the daemon: POST /api/v1/devices/{entry.id}/test")
        return

    async def queue(journal: Journal) -> str:
        return await journal.transaction(lambda conn: enqueue(conn, entry.id, "test"))

    print(f"test page queued for {entry.name} (job {asyncio.run(_with_journal(settings, queue))})")


def cmd_devices_preview(args: argparse.Namespace) -> None:
    """Print what a printer's newest jobs put on paper, decoded from the bytes sent."""
    settings = _settings(args)
    registry = load_registry(settings.state_dir)
    jobs = asyncio.run(_with_journal(settings, lambda j: preview(j, registry, args.device, args.last)))
    if not jobs:
        print("no jobs yet for this device")
    for job in jobs:
        print(f"--- {job['kind']} {job['ref'] or ''} [{job['state']}] {job['created_at']}")
        print("\n".join(job["lines"]) if job["lines"] else f"(not laid out yet) {job['error'] or ''}")


async def _read_scale(entry: DeviceEntry) -> WeightReading:
    async with SerialScale(entry.path or "", baudrate=entry.baudrate) as scale:
        return await scale.read_weight()


def cmd_devices_discover(args: argparse.Namespace) -> None:
    """List what is plugged in now (USB printers, serial ports, USB scanners) with stable ids."""
    scan = asyncio.run(scan_local())
    registry = load_registry(_settings(args).state_dir)
    known = {e.id for e in registry.devices} | {e.path for e in registry.devices if e.path}
    for device in scan.devices:
        mark = "registered" if device.id in known else "new"
        where = device.device or device.usb_path or ", ".join(device.nodes)
        print(f"{device.id}  {device.kind}/{device.transport}  {device.name}  {where}  [{mark}]")
    for transport, why in scan.failed.items():
        print(f"cannot list {transport} devices: {why}", file=sys.stderr)
    if not scan.devices:
        print(
            "nothing found; network printers are found by the running daemon (GET /api/v1/devices/discovered)"
        )


def cmd_devices_drawer(args: argparse.Namespace) -> None:
    """Open the cash drawer through the receipt printer; audited as the installer with the reason."""
    settings = _settings(args)
    entry = load_registry(settings.state_dir).find("receipt")

    async def queue(journal: Journal) -> str:
        def work(conn: sqlite3.Connection) -> str:
            job = enqueue(conn, entry.id, "drawer")
            write_audit(
                conn, "installer", "drawer.open", None, f"{args.reason} (storelink-edge devices drawer)"
            )
            return job

        return await journal.transaction(work)

    print(f"drawer kick queued on {entry.name} (job {asyncio.run(_with_journal(settings, queue))})")


def _devices_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    devices = sub.add_parser("devices", help="printers, scanners, scales, displays and their roles")
    devices.set_defaults(func=cmd_devices)
    dev = devices.add_subparsers(dest="sub")
    add_dev = dev.add_parser("add", help="register a device: --host, --serial or --evdev")
    add_dev.add_argument("--name", required=True, help="e.g. 前台 or 热菜厨房")
    add_dev.add_argument("--kind", choices=["printer", "scanner", "scale", "display"], default="printer")
    add_dev.add_argument("--host", help="network printer address (raw TCP, usually port 9100)")
    add_dev.add_argument("--port", type=int, default=9100)
    add_dev.add_argument("--serial", help="serial device, e.g. /dev/serial/by-path/...")
    add_dev.add_argument("--evdev", help="USB scanner id from `storelink-edge devices discover`")
    add_dev.add_argument("--baud", type=int, help="serial speed (default 9600)")
    add_dev.add_argument(
        "--role", help="receipt, kitchen-<station> (e.g. kitchen-hot), label, display, scanner[-lane], scale"
    )
    add_dev.add_argument("--paper", type=int, choices=[58, 80], default=80, help="paper width in mm")
    add_dev.add_argument("--encoding", choices=["gb18030", "gbk", "big5", "utf-8"], default="gb18030")
    add_dev.add_argument("--no-cjk-font", action="store_true", help="no Chinese font: Chinese as images")
    add_dev.add_argument("--no-cutter", action="store_true")
    add_dev.add_argument("--no-status", action="store_true", help="printer does not answer DLE EOT")
    add_dev.add_argument("--categories", nargs="*", default=[], help="kitchen printers: catalog categories")
    add_dev.add_argument("--scan-mode", choices=["auto", "scanner"], default="auto", help="USB scanners")
    add_dev.add_argument("--terminator", choices=["enter", "tab", "any-eol", "etx"], default="enter")
    add_dev.set_defaults(func=cmd_devices_add)
    discover = dev.add_parser("discover", help="list what is plugged in, with stable ids")
    discover.set_defaults(func=cmd_devices_discover)
    drawer = dev.add_parser("drawer", help="open the cash drawer (audited)")
    drawer.add_argument("--reason", required=True)
    drawer.set_defaults(func=cmd_devices_drawer)
    bind = dev.add_parser("bind", help="give a device a role")
    bind.add_argument("device", help="device id or name")
    bind.add_argument("role")
    bind.set_defaults(func=cmd_devices_bind)
    test = dev.add_parser("test", help="print a test page, or read the scale")
    test.add_argument("device", help="device id, name or role")
    test.set_defaults(func=cmd_devices_test)
    prev = dev.add_parser("preview", help="show what the newest jobs printed")
    prev.add_argument("device", help="device id, name or role")
    prev.add_argument("--last", type=int, default=1, help="how many jobs")
    prev.set_defaults(func=cmd_devices_preview)


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

    _devices_parser(sub)

    pair = sub.add_parser("pair", help="show a code to pair a phone or tablet")
    pair.add_argument("--print", action="store_true", help="also print it with a QR on the receipt printer")
    pair.set_defaults(func=cmd_pair)
    kds_cmd = sub.add_parser("kds", help="kitchen screens").add_subparsers(dest="sub", required=True)
    kds_qr = kds_cmd.add_parser("qr", help="pair a kitchen screen and show/print its page link as a QR")
    kds_qr.add_argument("station", nargs="?", help="a station under [kds] screens (default: every screen)")
    kds_qr.add_argument("--host", help="address the tablets open (default: this machine's LAN address)")
    kds_qr.add_argument(
        "--no-print", action="store_true", help="only show it here, not on the receipt printer"
    )
    kds_qr.set_defaults(func=cmd_kds_qr)
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
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        print(f"storelink-edge: {where}: {first['msg']}", file=sys.stderr)
        sys.exit(2)
    except (ConfigError, EdgeError, ValueError) as err:
        print(f"storelink-edge: {err}", file=sys.stderr)
        sys.exit(2)
    except (OSError, sqlite3.Error) as err:  # e.g. the API port is taken, the disk is read-only
        print(f"storelink-edge: cannot start: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
