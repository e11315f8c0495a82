"""Hub configuration: `hub.toml` plus `STORELINK_*` environment overrides."""

from __future__ import annotations

import re
from datetime import date, time
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from hub.messaging_settings import MessagingSettings
from protocol.settings import LogLevel, StorelinkSettings
from protocol.timeutil import DEFAULT_TIMEZONE

__all__ = ["BrokerSettings", "HubSettings", "JobsSettings", "MosquittoFiles", "MqttSettings"]

_ASYNC_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")


class MqttSettings(BaseModel):
    """An external broker (Mosquitto, EMQX); leave `host` unset for the embedded one."""

    model_config = ConfigDict(extra="forbid")

    host: str | None = Field(None, min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    keepalive: int = Field(30, ge=5, le=3600)
    shared_subscription: bool = Field(
        False, description="consume up/# via $share/storelink-hub/ so several hubs split the work"
    )


class MosquittoFiles(BaseModel):
    """Where `store add` keeps Mosquitto's password and ACL files (unset: it does not)."""

    model_config = ConfigDict(extra="forbid")

    password_file: Path | None = None
    acl_file: Path | None = None


class BrokerSettings(BaseModel):
    """The embedded amqtt broker, started only when `mqtt.host` is not set."""

    model_config = ConfigDict(extra="forbid")

    bind: str = "0.0.0.0"  # noqa: S104 - stores connect from other hosts on the LAN/WAN
    port: int = Field(1883, ge=1, le=65535)


class JobsSettings(BaseModel):
    """The nightly jobs (points expiry, level review, birthday points…) run by `hub.scheduler`."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="run the nightly jobs in `storelink-hub run`")
    nightly_at: str = Field("03:30", description="local time (HH:MM) the jobs run each day")
    timezone: str = Field(DEFAULT_TIMEZONE, description="the chain's time zone for nightly_at and the day")
    level_review_on: str = Field("01-01", description="MM-DD: the day of the year the level review runs")
    disabled: list[str] = Field(default_factory=list, description="job names the scheduler leaves out")
    stale_after_minutes: int = Field(
        120, ge=5, le=24 * 60, description="a run still 'running' this long was cut off and may run again"
    )

    @field_validator("nightly_at")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        if not re.fullmatch(r"\d{2}:\d{2}", value):
            raise ValueError(f'nightly_at must be a local time like "03:30", got {value!r}')
        try:
            time.fromisoformat(value)
        except ValueError:
            raise ValueError(f"nightly_at {value!r} is not a time of day (00:00-23:59)") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name such as 'Asia/Shanghai'"
            ) from None
        return value

    @field_validator("level_review_on")
    @classmethod
    def _month_day(cls, value: str) -> str:
        if not re.fullmatch(r"\d{2}-\d{2}", value):
            raise ValueError(f'level_review_on must be a month and day like "01-01", got {value!r}')
        try:
            date.fromisoformat(f"2023-{value}")  # a common year: 02-29 would skip three years in four
        except ValueError:
            raise ValueError(f"level_review_on {value!r} is not a day that every year has") from None
        return value

    @property
    def run_time(self) -> time:
        """`nightly_at` as a time of day."""
        return time.fromisoformat(self.nightly_at)

    @property
    def zone(self) -> ZoneInfo:
        """`timezone` as a ZoneInfo."""
        return ZoneInfo(self.timezone)

    def review_day(self, year: int) -> date:
        """The level review's day in `year`."""
        return date.fromisoformat(f"{year:04d}-{self.level_review_on}")


class HubSettings(StorelinkSettings):
    """Everything `storelink-hub` needs; see docs/configuration.md."""

    state_dir: Path = Path("storelink-data/hub")
    database_url: str | None = Field(None, description="SQLAlchemy async URL; default SQLite in state_dir")
    http_host: str = "0.0.0.0"  # noqa: S104 - head office reaches the API over the network
    http_port: int = Field(8800, ge=0, le=65535)
    mqtt: MqttSettings = MqttSettings()
    broker: BrokerSettings = BrokerSettings()
    mosquitto: MosquittoFiles = MosquittoFiles()
    token_ttl_hours: int = Field(12, ge=1, le=24 * 90)
    store_stale_after_s: int = Field(
        120, ge=10, description="a store whose last status is older than this shows offline"
    )
    login_max_failures: int = Field(5, ge=1)
    login_window_s: int = Field(300, ge=10)
    log_level: LogLevel = "INFO"
    jobs: JobsSettings = JobsSettings()
    messaging: MessagingSettings = MessagingSettings()  # outbox worker, SMS sender (docs/marketing.md)

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            backend = make_url(value).drivername
        except ArgumentError as err:
            raise ValueError(f"not a database URL: {err}") from err
        if backend not in _ASYNC_DRIVERS:
            raise ValueError(
                f"driver {backend!r} is not supported; use one of {', '.join(_ASYNC_DRIVERS)}"
                " (e.g. postgresql+asyncpg://user@host/db)"
            )
        return value

    @model_validator(mode="after")
    def _check_tls(self) -> HubSettings:
        if self.mqtt.ca_file is not None and not self.mqtt.tls:
            raise ValueError("mqtt.ca_file is set but mqtt.tls is false")
        return self

    @property
    def embedded_broker(self) -> bool:
        """True when the hub runs its own amqtt broker."""
        return self.mqtt.host is None

    def resolved_database_url(self) -> str:
        """The configured database URL, or SQLite under `state_dir`."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.state_dir / 'hub.db').resolve()}"
