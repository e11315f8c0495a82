"""`storelink-hub catalog import|export|publish`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hub.catalog_io import import_catalog
from hub.config import HubSettings
from hub.db import Database
from hub.link import MqttTarget
from protocol import encode, load_settings, topics

__all__ = ["add_commands"]

# Runs `work` with the database of the settings that `args` names (hub.cli provides it).
Runner = Callable[[argparse.Namespace, Callable[[Database], Awaitable[None]]], None]


class _Progress:
    """A bar on stderr when it is a terminal; otherwise a plain line per 10 %, so logs stay readable."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.shown = -1

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase == "checking":
            print("checking every row…", file=sys.stderr, flush=True)
            return
        tenth = 10 * done // max(total, 1)
        if self.tty:
            bar = "#" * (3 * tenth) + "." * (30 - 3 * tenth)
            end = "\n" if done >= total else ""
            print(f"\r{phase} [{bar}] {done}/{total}", end=end, file=sys.stderr, flush=True)
        elif tenth != self.shown:
            print(f"{phase} {done}/{total}", file=sys.stderr, flush=True)
        self.shown = tenth


def _import(run: Runner) -> Callable[[argparse.Namespace], None]:
    def command(args: argparse.Namespace) -> None:
        try:
            data = Path(args.file).read_bytes()
        except OSError as err:
            raise ValueError(f"cannot read {args.file}: {err.strerror or err}") from err
        failed = False

        async def work(db: Database) -> None:
            nonlocal failed
            report = await import_catalog(
                db,
                data,
                filename=args.file,
                mode=args.mode,
                create_categories=args.create_categories,
                actor="cli",
                progress=_Progress(),
            )
            for error in report.errors:
                print(f"row {error.row}, {error.column}: {error.message}")
            if report.ignored_columns:
                print(f"columns not imported: {', '.join(report.ignored_columns)}")
            print(f"{report.rows} rows: {report.imported} imported, {len(report.errors)} with errors")
            if report.errors and not report.written:
                print("nothing was imported; fix the rows above or use --mode valid-only", file=sys.stderr)
                failed = True

        run(args, work)
        if failed:
            sys.exit(1)

    return command


def _export(run: Runner) -> Callable[[argparse.Namespace], None]:
    def command(args: argparse.Namespace) -> None:
        from hub.catalog_io import export_catalog  # noqa: PLC0415

        csv = args.file.lower().endswith(".csv")

        async def work(db: Database) -> None:
            data = await export_catalog(db, fmt="csv" if csv else "xlsx")
            Path(args.file).write_bytes(data)  # noqa: ASYNC240 - a CLI with nothing else on its loop
            print(f"wrote {args.file}")

        run(args, work)

    return command


def _target(settings: HubSettings) -> MqttTarget | None:
    mqtt = settings.mqtt
    if not mqtt.host:
        return None
    return MqttTarget(
        mqtt.host,
        mqtt.port,
        username=mqtt.username,
        password=mqtt.password,
        tls=mqtt.tls,
        ca_file=str(mqtt.ca_file) if mqtt.ca_file else None,
        keepalive=mqtt.keepalive,
    )


def _publish(run: Runner) -> Callable[[argparse.Namespace], None]:
    def command(args: argparse.Namespace) -> None:
        from hub.catalog_stores import linked_stores, publish_store  # noqa: PLC0415
        from hub.snapshots import all_snapshots  # noqa: PLC0415

        target = _target(load_settings(HubSettings, args.config))

        async def work(db: Database) -> None:
            stores = args.store
            if not stores:
                async with db.session() as session:
                    stores = await linked_stores(session)
            if not stores:
                raise ValueError("no store links any products yet; link products to a store first")
            done = [await publish_store(db, store) for store in stores]
            for item in done:
                print(f"{item.store}: {item.products} products, catalog v{item.catalog_version}")
            if target is None:
                print(
                    "saved; the hub sends them to the stores when it next connects to its embedded broker."
                    " To send at once while the hub runs, use POST /api/v1/catalog/publish.",
                    file=sys.stderr,
                )
                return
            wanted = {(i.store, kind) for i in done for kind in ("catalog", "prices")}
            async with target.client() as client:
                for store, snapshot in await all_snapshots(db):
                    if (store, snapshot.kind.value) in wanted:
                        await client.publish(
                            topics.down_snapshot(store, snapshot.kind), encode(snapshot), qos=1, retain=True
                        )
            print(f"sent to broker {target.host}:{target.port}")

        run(args, work)

    return command


def add_commands(sub: Any, run: Runner) -> None:
    """Register `catalog import|export|publish` on the `storelink-hub` parser."""
    catalog = sub.add_parser("catalog", help="head-office catalog: import, export, publish to stores")
    cmd = catalog.add_subparsers(dest="catalog_cmd", required=True)
    imp = cmd.add_parser(
        "import", help="add or replace products from an .xlsx or .csv (商品编码, 商品名称, 售价, …)"
    )
    imp.add_argument("file", help="the .xlsx or .csv file")
    imp.add_argument(
        "--mode",
        choices=["all-or-nothing", "valid-only"],
        default="all-or-nothing",
        help="with bad rows: import nothing (default) or only the good rows",
    )
    imp.add_argument("--create-categories", action="store_true", help="create categories the file names")
    imp.set_defaults(func=_import(run))
    exp = cmd.add_parser("export", help="write the catalog to an .xlsx or .csv (by the file's extension)")
    exp.add_argument("file", help="the file to write")
    exp.set_defaults(func=_export(run))
    pub = cmd.add_parser(
        "publish", help="send stores their catalog and prices (default: every linking store)"
    )
    pub.add_argument("--store", action="append", help="a store to publish to (repeatable)")
    pub.set_defaults(func=_publish(run))
