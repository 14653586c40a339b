"""Broker URL and credential files: every mistake is one clear sentence."""

from __future__ import annotations

from pathlib import Path

import pytest
from fleet_support import make_certs

from device.config import MqttConfig
from device.errors import ConfigError
from device.fleet.credentials import load_credentials, parse_broker_url


def test_broker_urls() -> None:
    assert parse_broker_url("mqtt://broker") == parse_broker_url("mqtt://broker:1883")
    a = parse_broker_url("mqtts://10.0.0.2")
    assert (a.host, a.port, a.tls) == ("10.0.0.2", 8883, True)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://broker", "mqtt:// or mqtts://"),
        ("mqtt://user:pw@broker", "must not hold a user name or password"),
        ("mqtt://broker:99999", "not a valid URL"),
        ("mqtt:///nohost", "names no host"),
        ("mqtt://broker/topic", "no path or query"),
    ],
)
def test_bad_broker_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_broker_url(url)


def _cfg(**kw: object) -> MqttConfig:
    return MqttConfig.model_validate(kw)


def test_credential_files_are_read_from_the_credentials_directory(tmp_path: Path) -> None:
    make_certs(tmp_path)
    (tmp_path / "user").write_text("line-3\n")
    (tmp_path / "pw").write_text("secret\n")
    address, creds = load_credentials(
        _cfg(
            url="mqtts://b:8884",
            ca_file="ca.pem",
            cert_file="client.pem",
            key_file="client.key",
            username_file="user",
            password_file="pw",
        ),
        credentials_dir=str(tmp_path),
    )
    assert address.port == 8884 and creds.tls is not None
    assert (creds.username, creds.password) == ("line-3", "secret")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"url": "mqtt://b", "ca_file": "ca.pem"}, "not mqtts://"),
        ({"url": "mqtts://b", "ca_file": "missing.pem"}, "does not exist"),
        ({"url": "mqtts://b", "cert_file": "client.pem"}, "go together"),
        ({"url": "mqtt://b", "password_file": "pw"}, "needs mqtt.username_file"),
        ({"url": "mqtt://b", "username_file": "empty"}, "is empty"),
        ({"url": "mqtt://b", "username_file": "nope"}, "cannot read the MQTT user name file"),
        ({"url": "mqtts://b", "ca_file": "client.key"}, "cannot be loaded"),
    ],
)
def test_credential_mistakes(tmp_path: Path, kw: dict[str, str], message: str) -> None:
    make_certs(tmp_path)
    (tmp_path / "pw").write_text("x")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=message):
        load_credentials(_cfg(**kw), credentials_dir=str(tmp_path))
