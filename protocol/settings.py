"""Shared settings base: a TOML file plus `STORELINK_*` environment overrides.

Edge and hub read their configuration the same way, so an installer learns one rule:
the file gives the values, any `STORELINK_<FIELD>` (nested: `STORELINK_MQTT__HOST`)
overrides it, and a bad value stops start-up with a message naming the field and file.
"""

from __future__ import annotations

import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BeforeValidator, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from protocol.errors import ProtocolError

__all__ = ["ConfigError", "LogLevel", "StorelinkSettings", "load_settings"]

_TOML_PATH: ContextVar[Path | None] = ContextVar("_TOML_PATH", default=None)
S = TypeVar("S", bound="StorelinkSettings")

LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR"],
    BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v),
]


class ConfigError(ProtocolError):
    """A configuration file or environment variable is missing or invalid."""


class StorelinkSettings(BaseSettings):
    """Base for `EdgeSettings` and `HubSettings`: env beats file beats defaults."""

    model_config = SettingsConfigDict(
        env_prefix="STORELINK_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order the sources: explicit arguments, then environment, then the TOML file."""
        path = _TOML_PATH.get()
        if path is None:
            return (init_settings, env_settings)
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, path))


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in err.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        env = "STORELINK_" + "__".join(str(p).upper() for p in item["loc"] if isinstance(p, str))
        if item["type"] == "extra_forbidden":
            lines.append(f"  {field}: unknown setting (check its spelling)")
        else:
            lines.append(f"  {field}: {item['msg']} (set it in the file or with {env})")
    return "\n".join(lines)


def load_settings(cls: type[S], path: Path | str | None = None) -> S:
    """Load `cls` from `path` (optional) and the environment, or raise `ConfigError`."""
    toml_path = Path(path) if path is not None else None
    if toml_path is not None:
        if not toml_path.is_file():
            raise ConfigError(f"configuration file {toml_path} does not exist")
        try:
            tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"configuration file {toml_path} is not valid TOML: {err}") from err
        except OSError as err:
            raise ConfigError(f"cannot read configuration file {toml_path}: {err}") from err
    env = "STORELINK_* environment variables"
    source = f"{toml_path} or the {env}" if toml_path else f"the {env} (no --config file given)"
    token = _TOML_PATH.set(toml_path)
    try:
        return cls()
    except ValidationError as err:
        raise ConfigError(_describe(err, source)) from err
    except SettingsError as err:
        raise ConfigError(f"invalid configuration in {source}: {err}") from err
    finally:
        _TOML_PATH.reset(token)
