"""Hub configuration errors name the field and file."""

from __future__ import annotations

import pytest

from hub.config import HubSettings
from protocol import ConfigError, load_settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('database_url = "postgresql://u@h/db"\n', "driver 'postgresql' is not supported"),
        ('database_url = "not a url"\n', "database_url: Value error, not a database URL"),
        ("[broker]\nport = 0\n", "broker.port:"),
        ('[mqtt]\nhost = ""\n', "mqtt.host:"),
        ("[mqtt]\nshared_subscrption = true\n", "mqtt.shared_subscrption: unknown setting"),
        ('[mqtt]\nhost = "h"\nca_file = "/x.pem"\n', "mqtt.ca_file is set but mqtt.tls is false"),
    ],
)
def test_invalid_hub_file(tmp_path, text, expected):
    path = tmp_path / "hub.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(HubSettings, path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_defaults_need_no_file(monkeypatch, tmp_path):
    monkeypatch.setenv("STORELINK_STATE_DIR", str(tmp_path))
    settings = load_settings(HubSettings)
    assert settings.embedded_broker
    assert settings.resolved_database_url() == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'hub.db'}"
