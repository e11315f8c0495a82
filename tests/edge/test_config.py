"""Edge configuration: file plus env, and start-up refused with the field and file named."""

from __future__ import annotations

import pytest

from edge.config import EdgeSettings
from protocol import ConfigError, load_settings


def _write(tmp_path, text: str):
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return path


def test_file_values_and_env_override(tmp_path, monkeypatch):
    path = _write(tmp_path, 'store = "shop-1"\n[mqtt]\nhost = "hub.example"\nport = 1884\n')
    settings = load_settings(EdgeSettings, path)
    assert (settings.store, settings.mqtt.host, settings.mqtt.port) == (
        "shop-1",
        "hub.example",
        1884,
    )
    monkeypatch.setenv("STORELINK_MQTT__PORT", "8883")
    monkeypatch.setenv("STORELINK_CUTOVER_HOUR", "6")
    settings = load_settings(EdgeSettings, path)
    assert settings.mqtt.port == 8883
    assert settings.cutover_hour == 6


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('store = "Shop 1"\n[mqtt]\nhost = "h"\n', "store: Value error, invalid store id 'Shop 1'"),
        ('store = "s"\n[mqtt]\nhost = "h"\nport = "many"\n', "mqtt.port:"),
        ('store = "s"\ncutover_hour = 25\n[mqtt]\nhost = "h"\n', "cutover_hour:"),
        (
            'store = "s"\ntimezone = "Mars/Base"\n[mqtt]\nhost = "h"\n',
            "unknown time zone 'Mars/Base'",
        ),
        ('store = "s"\nstorre = "x"\n[mqtt]\nhost = "h"\n', "storre: unknown setting"),
        ('store = "s"\n', "mqtt: Field required"),
        ('store = "s"\nlog_level = "verbose"\n[mqtt]\nhost = "h"\n', "log_level: Input should be"),
        ('store = "s"\n[mqtt]\nhost = "h"\nusername = "other"\n', "mqtt.username: unknown setting"),
    ],
)
def test_invalid_file_names_field_and_file(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(EdgeSettings, path)
    message = str(info.value)
    assert str(path) in message
    assert expected in message


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(EdgeSettings, tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_settings(EdgeSettings, _write(tmp_path, "store = \n"))


def test_cli_refuses_bad_config_with_exit_2(tmp_path, capsys):
    from edge.cli import main  # noqa: PLC0415

    path = _write(tmp_path, 'store = "s"\n[mqtt]\nhost = "h"\nkeepalive = 0\n')
    with pytest.raises(SystemExit) as info:
        main(["--config", str(path), "run"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "mqtt.keepalive" in err
    assert str(path) in err


def test_bad_env_value_is_a_config_error_naming_the_environment(tmp_path, monkeypatch):
    path = _write(tmp_path, 'store = "s"\n[mqtt]\nhost = "h"\n')
    monkeypatch.setenv("STORELINK_MQTT", "{not json")
    with pytest.raises(ConfigError, match="STORELINK_"):
        load_settings(EdgeSettings, path)


def test_log_level_is_case_insensitive(tmp_path):
    path = _write(tmp_path, 'store = "s"\nlog_level = "warning"\n[mqtt]\nhost = "h"\n')
    assert load_settings(EdgeSettings, path).log_level == "WARNING"
