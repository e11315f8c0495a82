"""`storelink-hub`: run the hub, the demo, manage stores and head-office users, move members in and out."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import secrets
import sys
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from hub import auth, catalog_cli
from hub.config import HubSettings
from hub.db import Database, migrate
from hub.errors import HubError
from hub.mosquitto import write_acl, write_password
from hub.service import Hub
from hub.stores import add_store
from protocol import ConfigError, ProtocolError, load_settings
from protocol.aio import wait_for_stop_signal

__all__ = ["main"]


def _settings(args: argparse.Namespace) -> HubSettings:
    return load_settings(HubSettings, args.config)


async def _with_db(settings: HubSettings, work: Callable[[Database], Awaitable[None]]) -> None:
    db = Database.from_url(settings.resolved_database_url())
    try:
        await migrate(db.engine)
        await work(db)
    finally:
        await db.close()


async def _run(settings: HubSettings) -> None:
    async with Hub(settings) as hub:
        where = "embedded broker" if hub.broker else f"broker {settings.mqtt.host}"
        print(
            f"storelink hub: API http://{settings.http_host}:{hub.http_port}/api/v1/, "
            f"{where} on port {hub.mqtt_port}; Ctrl-C stops",
            flush=True,
        )
        await wait_for_stop_signal()


def cmd_run(args: argparse.Namespace) -> None:
    """Start the hub until SIGINT/SIGTERM."""
    settings = _settings(args)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_run(settings))


def cmd_migrate(args: argparse.Namespace) -> None:
    """Bring the database schema up to date."""

    async def work(db: Database) -> None:
        print(f"database {db.engine.url.render_as_string(hide_password=True)} is up to date")

    asyncio.run(_with_db(_settings(args), work))


def cmd_store_add(args: argparse.Namespace) -> None:
    """Register a store, print its MQTT credentials once, keep Mosquitto's files current."""
    settings = _settings(args)

    async def work(db: Database) -> None:
        creds = await add_store(db, args.store, args.name, timezone=args.timezone, rotate=args.rotate)
        print(f"store '{creds.store}' {'has new credentials' if args.rotate else 'added'}.")
        files = settings.mosquitto
        if files.password_file is not None:
            write_password(files.password_file, creds.username, creds.password)
            if settings.mqtt.username and settings.mqtt.password:
                write_password(files.password_file, settings.mqtt.username, settings.mqtt.password)
            print(f"updated {files.password_file}")
        if files.acl_file is not None and settings.mqtt.username:
            write_acl(files.acl_file, settings.mqtt.username)
            print(f"updated {files.acl_file}")
        if files.password_file is not None or files.acl_file is not None:
            print("reload Mosquitto to apply: systemctl reload mosquitto (or kill -HUP its pid)")
        host = settings.mqtt.host or "<this hub's address>"
        port = settings.mqtt.port if settings.mqtt.host else settings.broker.port
        print("\npaste into the store's edge.toml (shown only now):\n")
        print(f'store = "{creds.store}"\n\n[mqtt]\nhost = "{host}"\nport = {port}')
        print(f'password = "{creds.password}"')
        if settings.mqtt.tls:
            print("tls = true")

    asyncio.run(_with_db(settings, work))


def _read_password(args: argparse.Namespace) -> tuple[str, bool]:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if first != getpass.getpass("repeat: "):
            raise ValueError("the two passwords differ")
        return first, False
    return secrets.token_urlsafe(12), True


def cmd_user_add(args: argparse.Namespace) -> None:
    """Create a head-office user with a role and optional store scope."""
    stores = [s for s in (args.stores or "").split(",") if s]
    password, generated = _read_password(args)

    async def work(db: Database) -> None:
        user = await auth.add_user(db, args.name, password, args.role, stores)
        scope = ", ".join(stores) if stores else "all stores"
        print(f"user '{user.name}' added with role {user.role} ({scope}).")
        if generated:
            print(f"generated password (shown only now): {password}")

    asyncio.run(_with_db(_settings(args), work))


def cmd_user_passwd(args: argparse.Namespace) -> None:
    """Set a user's password and revoke their tokens."""
    password, generated = _read_password(args)

    async def work(db: Database) -> None:
        await auth.set_password(db, args.name, password)
        print(f"password of '{args.name}' changed; their tokens are revoked.")
        if generated:
            print(f"generated password (shown only now): {password}")

    asyncio.run(_with_db(_settings(args), work))


def _progress_bar(phase: str, done: int, total: int) -> None:
    """Progress on stderr, so stdout keeps only the report."""
    if phase == "checking":
        print("checking every row…", file=sys.stderr, flush=True)
        return
    width = 30
    filled = width * done // max(total, 1)
    end = "\n" if done >= total else ""
    bar = "#" * filled + "." * (width - filled)
    print(f"\r{phase} [{bar}] {done}/{total}", end=end, file=sys.stderr, flush=True)


def cmd_members_import(args: argparse.Namespace) -> None:
    """Import members from an .xlsx; nothing is written if a row is invalid, unless --skip-invalid."""
    from hub.member_io import import_members  # noqa: PLC0415 - openpyxl only when needed

    try:
        data = Path(args.file).read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {args.file}: {err.strerror or err}") from err
    failed = False

    async def work(db: Database) -> None:
        nonlocal failed
        report = await import_members(
            db,
            data,
            skip_invalid=args.skip_invalid,
            default_store=args.store,
            welcome=args.welcome,
            progress=_progress_bar,
        )
        for error in report.errors:
            print(f"row {error.row}, {error.column}: {error.message}")
        if report.ignored_columns:
            print(f"columns not imported: {', '.join(report.ignored_columns)}")
        counts = f"{report.imported} imported, {report.skipped} skipped, {len(report.errors)} errors"
        print(f"{report.rows} rows: {counts}")
        if report.errors and not report.written:
            print("nothing was imported; fix the rows above or use --skip-invalid", file=sys.stderr)
            failed = True

    asyncio.run(_with_db(_settings(args), work))
    if failed:
        sys.exit(1)


def cmd_members_export(args: argparse.Namespace) -> None:
    """Export members (all, or those a search finds) to an .xlsx."""
    from hub.member_io import export_members  # noqa: PLC0415 - openpyxl only when needed
    from hub.member_search import MemberQuery  # noqa: PLC0415

    query = MemberQuery(
        phone=args.phone,
        name=args.name,
        level=args.level,
        tag=args.tag,
        segment=args.segment,
        include_merged=args.include_merged,
        stores=frozenset({args.store}) if args.store else None,
    )

    async def work(db: Database) -> None:
        data = await export_members(db, query)
        await asyncio.to_thread(Path(args.file).write_bytes, data)
        print(f"wrote {args.file}")

    asyncio.run(_with_db(_settings(args), work))


def _day_arg(raw: str) -> date:
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a day looks like 2026-11-23, not {raw!r}") from None


def cmd_jobs_list(args: argparse.Namespace) -> None:
    """The nightly jobs, when they run, and each one's latest run."""
    from hub.scheduler import JOBS, last_runs  # noqa: PLC0415 - the jobs block keeps its imports

    settings = _settings(args)
    jobs = settings.jobs

    async def work(db: Database) -> None:
        state = "on" if jobs.enabled else "off (jobs.enabled = false; run them by hand)"
        print(f"nightly at {jobs.nightly_at} {jobs.timezone}: {state}")
        for job in JOBS:
            latest = await last_runs(db, job=job.name, limit=1)
            off = " [disabled]" if job.name in jobs.disabled else ""
            print(f"\n{job.name}{off}: {job.description}")
            if not latest:
                print("  never run")
                continue
            run = latest[0]
            at = f"{run.started_at:%Y-%m-%d %H:%M:%S} UTC"
            print(f"  {run.day} {run.status} (run {run.runs}x, last by {run.started_by} at {at})")
            print(f"  {run.error if run.error else run.summary}")

    asyncio.run(_with_db(settings, work))


def cmd_jobs_run(args: argparse.Namespace) -> None:
    """Run one nightly job now (for --day, default today), whether or not that day already ran."""
    from hub.scheduler import run_by_hand  # noqa: PLC0415 - the jobs block keeps its imports

    settings = _settings(args)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    failed = False

    async def work(db: Database) -> None:
        nonlocal failed
        run = await run_by_hand(db, args.name, args.day, settings.jobs, started_by="cli")
        print(f"{run.job} for {run.day}: {run.status} (run {run.runs}x for that day)")
        print(run.error if run.error else run.summary)
        failed = run.status != "ok"

    asyncio.run(_with_db(settings, work))
    if failed:
        sys.exit(1)


def cmd_members_segments(args: argparse.Namespace) -> None:
    """Recompute every member's RFM segment and every rule tag now, and print the counts."""
    from datetime import UTC, date, datetime  # noqa: PLC0415
    from zoneinfo import ZoneInfo  # noqa: PLC0415

    from hub.member_segments import recompute_segments  # noqa: PLC0415

    try:
        as_of = (
            date.fromisoformat(args.as_of)
            if args.as_of
            else datetime.now(UTC).astimezone(ZoneInfo(args.tz)).date()
        )
    except ValueError:
        raise ValueError(f"--as-of must be a date like 2026-06-30, got {args.as_of!r}") from None

    async def work(db: Database) -> None:
        done = await recompute_segments(db, as_of, window_days=args.window_days)
        print(f"RFM as of {done.as_of} over {done.window_days} days: {done.scored} members scored")
        for name, count in done.segments.items():
            print(f"  {name:<20} {count:>9,}")
        for code, count in done.tags.items():
            print(f"rule tag {code}: {count:,} members")
        print(f"done in {done.seconds:.1f} s")

    asyncio.run(_with_db(_settings(args), work))


def cmd_demo(args: argparse.Namespace) -> None:
    """Hub + embedded broker + SQLite + one simulated store, all on this machine."""
    from hub.demo import run_demo  # noqa: PLC0415 - only the demo needs it

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The demo is self-contained: a STORELINK_DATABASE_URL or STORELINK_STORE meant for a
    # real deployment must not make it rotate real credentials or rename its store.
    ignored = sorted(k for k in os.environ if k.startswith("STORELINK_"))
    for key in ignored:
        del os.environ[key]
    if ignored:
        print(f"demo: ignoring {', '.join(ignored)}", file=sys.stderr)
    asyncio.run(run_demo(Path(args.dir), hub_port=args.port, cwd=Path.cwd()))


def _add_tag_segment_options(members: Any, exp: argparse.ArgumentParser) -> None:
    """`members export --tag/--segment` and `members segments`."""
    exp.add_argument("--tag", help="only members with this tag (its code)")
    exp.add_argument("--segment", help="only members in this RFM segment (e.g. champions, at_risk)")
    seg = members.add_parser(
        "segments", help="recompute RFM segments and rule tags now (as the nightly job does)"
    )
    seg.add_argument("--as-of", help="the business day to compute for (default: today)")
    seg.add_argument(
        "--tz", default="Asia/Shanghai", help="timezone that decides today (default Asia/Shanghai)"
    )
    seg.add_argument("--window-days", type=int, default=365, help="days of orders to score (default 365)")
    seg.set_defaults(func=cmd_members_segments)


def _parser() -> argparse.ArgumentParser:  # noqa: PLR0915 - one flat list of every command
    parser = argparse.ArgumentParser(prog="storelink-hub", description=__doc__)
    parser.add_argument("--config", type=Path, help="hub.toml (every setting also from STORELINK_* env)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("run", help="start the hub").set_defaults(func=cmd_run)
    sub.add_parser("migrate", help="upgrade the database schema").set_defaults(func=cmd_migrate)

    demo = sub.add_parser("demo", help="run hub, embedded broker and a simulated store")
    demo.add_argument("--dir", default="storelink-demo", help="state directory of the demo")
    demo.add_argument("--port", type=int, default=8800, help="hub HTTP port (a free one if taken)")
    demo.set_defaults(func=cmd_demo)

    store = sub.add_parser("store", help="manage stores").add_subparsers(dest="store_cmd", required=True)
    store_add = store.add_parser("add", help="register a store and create its MQTT credentials")
    store_add.add_argument("store", help="store id: a-z, 0-9 and '-', at most 32 characters")
    store_add.add_argument("--name", help="display name, e.g. 人民路店")
    store_add.add_argument("--timezone", default="Asia/Shanghai")
    store_add.add_argument("--rotate", action="store_true", help="give an existing store a new password")
    store_add.set_defaults(func=cmd_store_add)

    user = sub.add_parser("user", help="manage head-office users").add_subparsers(
        dest="user_cmd", required=True
    )
    user_add = user.add_parser("add", help="create a user")
    user_add.add_argument("name")
    user_add.add_argument("--role", required=True, choices=[r.value for r in auth.Role])
    user_add.add_argument("--stores", help="comma-separated store ids this user may see")
    user_add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    user_add.set_defaults(func=cmd_user_add)
    passwd = user.add_parser("passwd", help="set a user's password (revokes their tokens)")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true")
    passwd.set_defaults(func=cmd_user_passwd)

    members = sub.add_parser(
        "members", help="import and export members (Excel), recompute segments"
    ).add_subparsers(dest="members_cmd", required=True)
    imp = members.add_parser(
        "import", help="add members from an .xlsx (columns 手机号, 姓名, 性别, 生日, 门店, …)"
    )
    imp.add_argument("file", help="the .xlsx file")
    imp.add_argument(
        "--skip-invalid", action="store_true", help="import the good rows even if some are invalid"
    )
    imp.add_argument("--store", help="source store of rows that name none")
    imp.add_argument(
        "--welcome", action="store_true", help="treat them as new sign-ups: entry level, registration points"
    )
    imp.set_defaults(func=cmd_members_import)
    exp = members.add_parser("export", help="write members to an .xlsx")
    exp.add_argument("file", help="the .xlsx file to write")
    exp.add_argument("--phone", help="only numbers ending in these digits")
    exp.add_argument("--name", help="only names containing this")
    exp.add_argument("--store", help="only members registered at this store")
    exp.add_argument("--level", help="only members at this level (its code)")
    exp.add_argument("--include-merged", action="store_true", help="also members merged into another")
    exp.set_defaults(func=cmd_members_export)
    _add_tag_segment_options(members, exp)

    catalog_cli.add_commands(sub, lambda args, work: asyncio.run(_with_db(_settings(args), work)))

    jobs = sub.add_parser("jobs", help="nightly jobs: list them with their last runs, run one by hand")
    jobs_cmd = jobs.add_subparsers(dest="jobs_cmd", required=True)
    jobs_cmd.add_parser("list", help="each job and its latest run").set_defaults(func=cmd_jobs_list)
    jobs_run = jobs_cmd.add_parser(
        "run", help="run a job now, even if its day already ran (jobs are idempotent)"
    )
    jobs_run.add_argument("name", help="the job, e.g. points.expire (see jobs list)")
    jobs_run.add_argument("--day", type=_day_arg, help="the day to run it for (default today, jobs.timezone)")
    jobs_run.set_defaults(func=cmd_jobs_run)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of `storelink-hub`."""
    args = _parser().parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        pass
    except (ConfigError, HubError, ProtocolError, ValueError) as err:
        print(f"storelink-hub: {err}", file=sys.stderr)
        sys.exit(2)
    except (OSError, SQLAlchemyError) as err:  # port taken, database unreachable, …
        print(f"storelink-hub: cannot start: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
