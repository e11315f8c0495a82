"""Edge configuration: `edge.toml` plus `STORELINK_*` environment overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.kds import KdsSettings
from edge.queue_calls import QueueSettings
from edge.rpc import OfflinePolicy
from protocol import StoreId
from protocol.barcodes import ScaleLayout
from protocol.settings import LogLevel, StorelinkSettings

__all__ = ["EdgeSettings", "HubMqttSettings", "ScaleSettings"]


class HubMqttSettings(BaseModel):
    """How this store reaches the hub's broker, with the credentials `store add` printed."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    keepalive: int = Field(30, ge=2, le=3600, description="seconds; the hub sees a dead edge after 1.5x")
    status_interval: float = Field(30.0, ge=1, le=600, description="seconds between status heartbeats")
    backoff_cap: float = Field(30.0, ge=1, le=600, description="longest wait between reconnect attempts")


class ScaleSettings(BaseModel):
    """How label scales in this store print weighed goods (EAN-13 with an embedded value)."""

    model_config = ConfigDict(extra="forbid")

    prefix: str = Field("2", pattern=r"^[0-9]{1,2}$")
    plu_digits: int = Field(6, ge=1, le=10)
    value_digits: int = Field(5, ge=1, le=10)
    value_kind: Literal["price", "weight"] = "price"

    @model_validator(mode="after")
    def _fits_ean13(self) -> ScaleSettings:
        if len(self.prefix) + self.plu_digits + self.value_digits + 1 != 13:
            raise ValueError("prefix + plu_digits + value_digits + 1 check digit must make 13 digits")
        return self

    def layout(self) -> ScaleLayout:
        """The barcode layout for `protocol.barcodes`."""
        return ScaleLayout(self.prefix, self.plu_digits, self.value_digits, self.value_kind)


class DiscoverySettings(BaseModel):
    """`[discovery]`: what the daemon looks for and announces."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    advertise: bool = True
    mdns_browse: bool = True
    auto_bind: bool = True
    interval_s: float = Field(3.0, ge=0.5, le=60)
    misses: int = Field(3, ge=1, le=20, description="missed scans before a device counts as gone")


class EdgeSettings(StorelinkSettings):
    """Everything `storelink-edge` needs; see docs/configuration.md."""

    store: StoreId
    store_name: str | None = None
    timezone: str = "Asia/Shanghai"
    cutover_hour: int = Field(4, ge=0, le=23, description="business day starts at this local hour")
    state_dir: Path = Path("storelink-data/edge")
    http_host: str = "0.0.0.0"  # noqa: S104 - phones and screens on the store LAN call it
    http_port: int = Field(8700, ge=0, le=65535)
    mqtt: HubMqttSettings
    scale: ScaleSettings = ScaleSettings()
    offline: OfflinePolicy = OfflinePolicy()
    discovery: DiscoverySettings = DiscoverySettings()
    kds: KdsSettings = KdsSettings()
    queue: QueueSettings = QueueSettings()
    log_level: LogLevel = "INFO"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like Asia/Shanghai)") from err
        return value

    @model_validator(mode="after")
    def _check_tls(self) -> EdgeSettings:
        if self.mqtt.ca_file is not None and not self.mqtt.tls:
            raise ValueError("mqtt.ca_file is set but mqtt.tls is false")
        return self
