"""Shared fixtures: real Mosquitto on a free port, a fresh PostgreSQL database per test,
and helpers that run a hub and an edge in-process (or as real processes) against them.

Outside CI a missing service skips the tests that need it, saying why; with CI=true the
same absence fails them, so CI can never pass by skipping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hub.broker import free_port

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PG_URL = os.environ.get("STORELINK_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parent.parent


def missing_service(reason: str) -> None:
    """Skip (developer machine) or fail (CI) a test whose service is unavailable."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def wait_port(port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


# --------------------------------------------------------------------------- Mosquitto


@dataclass
class Mosquitto:
    """A mosquitto process with its own config; restartable on the same port."""

    workdir: Path
    secure: bool
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    hub_user: str = "hubsvc"
    hub_password: str = "hub-secret"
    tls: tuple[Path, Path] | None = None  # (certfile, keyfile): the listener speaks only TLS

    @property
    def passwd(self) -> Path:
        return self.workdir / "passwd"

    def write_config(self) -> None:
        conf = [f"listener {self.port} 127.0.0.1"]
        if self.tls is not None:
            conf += [f"certfile {self.tls[0]}", f"keyfile {self.tls[1]}", "tls_version tlsv1.2"]
        conf += [
            "set_tcp_nodelay true",  # as deployed: see protocol.mqtt.tune_client
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if os.geteuid() == 0:
            # As root mosquitto drops to user "mosquitto", who cannot read pytest's 0700 dirs.
            conf.append("user root")
        if self.secure:
            self.passwd.touch(mode=0o600)
            self.add_user(self.hub_user, self.hub_password, reload=False)
            acl = self.workdir / "acl"
            acl.write_text(
                f"user {self.hub_user}\ntopic readwrite #\n\npattern readwrite storelink/v1/%u/#\n"
            )
            acl.chmod(0o600)
            conf += ["allow_anonymous false", f"password_file {self.passwd}", f"acl_file {acl}"]
        else:
            conf += ["allow_anonymous true"]
        (self.workdir / "mosquitto.conf").write_text("\n".join(conf) + "\n")

    def add_user(self, name: str, password: str, *, reload: bool = True) -> None:
        subprocess.run(
            ["mosquitto_passwd", "-b", str(self.passwd), name, password],
            check=True,
            capture_output=True,
        )
        if reload and self.proc is not None:
            self.proc.send_signal(signal.SIGHUP)
            time.sleep(0.2)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.workdir / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "mosquitto.log").open("ab"),
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[type[Mosquitto] | object]:
    """Start Mosquitto brokers: `mosquitto_factory(secure=True)` has passwords and ACLs."""
    if shutil.which("mosquitto") is None or shutil.which("mosquitto_passwd") is None:
        missing_service("mosquitto is not installed (apt-get install -y mosquitto)")
    started: list[Mosquitto] = []

    def make(*, secure: bool = False, tls: tuple[Path, Path] | None = None) -> Mosquitto:
        workdir = tmp_path / f"mosquitto-{len(started)}"
        workdir.mkdir()
        broker = Mosquitto(workdir, secure, tls=tls)
        broker.write_config()
        broker.start()
        started.append(broker)
        return broker

    yield make
    for broker in started:
        broker.stop()


# --------------------------------------------------------------------------- databases


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def _migrated(url: str) -> None:
    """Run the hub's migrations on `url` in a loop of its own (for session-wide templates)."""
    from hub.db import Database, migrate  # noqa: PLC0415

    async def run() -> None:
        database = Database.from_url(url)
        try:
            await migrate(database.engine)
        finally:
            await database.close()

    asyncio.run(run())


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str | None]:
    """A PostgreSQL database migrated once per session; each test's database is a copy of it.

    Migrating 20-odd revisions takes ~0.7 s, and about a thousand tests need a fresh hub
    database: `CREATE DATABASE … TEMPLATE` copies the migrated one in a fraction of that.
    None when PostgreSQL is unreachable (the tests that need it skip or fail then).
    """
    import asyncpg  # noqa: PLC0415

    dsn = _asyncpg_dsn(PG_URL)
    name = f"storelink_tpl_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> bool:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        try:
            await conn.execute(sql)
        finally:
            await conn.close()
        return True

    if not asyncio.run(admin(f'CREATE DATABASE "{name}"')):
        yield None
        return
    try:
        base = dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        _migrated(f"{base}/{name}")
        yield name
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def pg_database_url(pg_template: str | None) -> AsyncIterator[str]:
    """A fresh PostgreSQL database for this test with the hub's schema, dropped afterwards."""
    async with _pg_database(template=pg_template) as url:
        yield url


@pytest.fixture
async def empty_pg_database_url() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database (no schema), dropped afterwards."""
    async with _pg_database(template=None) as url:
        yield url


@asynccontextmanager
async def _pg_database(*, template: str | None) -> AsyncIterator[str]:
    import asyncpg  # noqa: PLC0415

    dsn = _asyncpg_dsn(PG_URL)
    try:
        admin = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as err:
        missing_service(f"PostgreSQL at {PG_URL} is unreachable ({err}); set STORELINK_TEST_PG_URL")
    name = f"storelink_t_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        base = dsn.rsplit("/", 1)[0]
        yield f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite hub database migrated once per session; each test gets a copy of the file."""
    path = tmp_path_factory.mktemp("hub-template") / "hub.db"
    _migrated(f"sqlite+aiosqlite:///{path}")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")  # folds the WAL into the file that gets copied
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The hub database URL with the schema in place, once per backend: every test using it runs on both."""
    if request.param == "sqlite":
        target = tmp_path / "hub.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite+aiosqlite:///{target}"
    return str(request.getfixturevalue("pg_database_url"))


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty hub database URL (no schema yet), once per backend."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    return str(request.getfixturevalue("empty_pg_database_url"))


# --------------------------------------------------------------------------- hub and edge


@dataclass
class BrokerSetup:
    """How hub and edges reach the broker under test."""

    kind: str
    hub_env: dict[str, str]
    mosquitto: Mosquitto | None = None

    @property
    def port(self) -> int:
        """Where edges connect."""
        if self.mosquitto is not None:
            return self.mosquitto.port
        return int(self.hub_env["broker"]["port"])  # type: ignore[index]

    async def register(self, store: str, password: str) -> None:
        """Give a store its MQTT password on the broker (the embedded one reads the hub DB)."""
        if self.mosquitto is not None:
            await asyncio.to_thread(self.mosquitto.add_user, store, password)


@pytest.fixture(params=["mosquitto", "amqtt"])
def broker(request: pytest.FixtureRequest) -> BrokerSetup:
    """The broker, once per kind: real Mosquitto with password+ACL, or the hub's embedded amqtt."""
    if request.param == "amqtt":
        return BrokerSetup("amqtt", {"broker": {"bind": "127.0.0.1", "port": free_port()}})
    mosq = request.getfixturevalue("mosquitto_factory")(secure=True)
    mqtt = {
        "host": "127.0.0.1",
        "port": mosq.port,
        "username": mosq.hub_user,
        "password": mosq.hub_password,
    }
    return BrokerSetup("mosquitto", {"mqtt": mqtt}, mosq)


def hub_settings(tmp_path: Path, database_url: str, broker: BrokerSetup, **extra: object):
    from hub.config import HubSettings  # noqa: PLC0415

    return HubSettings(
        state_dir=tmp_path / "hub",
        database_url=database_url,
        http_host="127.0.0.1",
        http_port=0,
        **broker.hub_env,
        **extra,
    )


@asynccontextmanager
async def running_hub(settings):
    from hub.service import Hub  # noqa: PLC0415

    async with Hub(settings) as hub:
        async with asyncio.timeout(10):
            await hub.link.connected.wait()
        yield hub


def edge_toml(
    path: Path,
    *,
    store: str,
    password: str,
    mqtt_port: int,
    keepalive: int = 30,
    backoff_cap: float = 30.0,
    http_port: int | None = None,
) -> Path:
    """Write an edge.toml for a test store and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'store = "{store}"\nstate_dir = "{path.parent / ("edge-" + store)}"\n'
        f'http_host = "127.0.0.1"\nhttp_port = {http_port or free_port()}\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\npassword = "{password}"\n'
        f"keepalive = {keepalive}\nbackoff_cap = {backoff_cap}\nstatus_interval = 5\n"
    )
    return path


def store_add_cli(config: Path, store: str) -> str:
    """Run `storelink-hub store add` as an installer would; return the password it printed."""
    out = subprocess.run(
        [sys.executable, "-m", "hub", "--config", str(config), "store", "add", store],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    match = re.search(r'password = "([^"]+)"', out)
    assert match, out
    assert "paste into the store's edge.toml" in out
    return match.group(1)


def spawn(module: str, config: Path, *args: str) -> subprocess.Popen[str]:
    """Start `python -m <module> --config <config> run` as a real process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDEVMODE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", module, "--config", str(config), "run", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 5.0) -> tuple[float, str]:
    """Signal a spawned process; return how long it took to exit and its stderr."""
    start = time.monotonic()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"process did not exit within {timeout}s of {sig!r}:\n{err}") from None
    return time.monotonic() - start, err
