"""Broker address, TLS and user/password for the fleet link, from files only (DESIGN: never from the YAML).

A relative path in mqtt.*_file is looked up in $CREDENTIALS_DIRECTORY, which systemd sets for LoadCredential=
(so the unit says `LoadCredential=mqtt-password:/etc/edgesort/mqtt-password` and the config says
`password_file: mqtt-password`). An absolute path is used as is.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from device.config import MqttConfig
from device.errors import ConfigError

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None


def parse_broker_url(url: str) -> BrokerAddress:
    """mqtt://host[:port] or mqtts://host[:port]; user info in the URL is refused (it belongs in files)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"mqtt.url {url!r} is not a valid URL ({exc})") from exc
    if parts.scheme not in DEFAULT_PORTS:
        raise ConfigError(f"mqtt.url {url!r}: the scheme must be mqtt:// or mqtts://")
    if parts.username or parts.password:
        raise ConfigError(
            "mqtt.url must not hold a user name or password; use mqtt.username_file/password_file"
        )
    if not parts.hostname:
        raise ConfigError(f"mqtt.url {url!r} names no host")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"mqtt.url {url!r}: only mqtt[s]://host:port is understood (no path or query)")
    return BrokerAddress(parts.hostname, port or DEFAULT_PORTS[parts.scheme], parts.scheme == "mqtts")


def resolve(path: Path, credentials_dir: str | None = None) -> Path:
    """A relative credential path is taken from $CREDENTIALS_DIRECTORY (systemd) when that is set."""
    base = credentials_dir if credentials_dir is not None else os.environ.get("CREDENTIALS_DIRECTORY")
    if not path.is_absolute() and base:
        return Path(base) / path
    return path


def _read_secret(path: Path, what: str, credentials_dir: str | None) -> str:
    p = resolve(path, credentials_dir)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the MQTT {what} file {p}: {exc.strerror}") from exc
    value = text.rstrip("\r\n")
    if not value:
        raise ConfigError(f"the MQTT {what} file {p} is empty")
    return value


def _existing(path: Path | None, what: str, credentials_dir: str | None) -> str | None:
    if path is None:
        return None
    p = resolve(path, credentials_dir)
    if not p.is_file():
        raise ConfigError(f"the MQTT {what} {p} does not exist")
    return str(p)


def tls_context(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None, credentials_dir: str | None = None
) -> ssl.SSLContext:
    """Verify the broker against ca_file (or the system CAs); present a client certificate when given."""
    ca = _existing(ca_file, "CA certificate", credentials_dir)
    cert = _existing(cert_file, "client certificate", credentials_dir)
    key = _existing(key_file, "client key", credentials_dir)
    if (cert is None) != (key is None):
        raise ConfigError("mqtt.cert_file and mqtt.key_file go together: give both or neither")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        if cert is not None:
            ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"the MQTT TLS files cannot be loaded: {exc}") from exc
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def load_credentials(
    cfg: MqttConfig, credentials_dir: str | None = None
) -> tuple[BrokerAddress, Credentials]:
    if cfg.url is None:
        raise ConfigError("mqtt.url is not set")
    address = parse_broker_url(cfg.url)
    uses_tls_files = any(p is not None for p in (cfg.ca_file, cfg.cert_file, cfg.key_file))
    if uses_tls_files and not address.tls:
        raise ConfigError("mqtt.ca_file/cert_file/key_file are set but mqtt.url is not mqtts://")
    ctx = tls_context(cfg.ca_file, cfg.cert_file, cfg.key_file, credentials_dir) if address.tls else None
    username = password = None
    if cfg.username_file is not None:
        username = _read_secret(cfg.username_file, "user name", credentials_dir)
    if cfg.password_file is not None:
        if username is None:
            raise ConfigError("mqtt.password_file needs mqtt.username_file as well")
        password = _read_secret(cfg.password_file, "password", credentials_dir)
    return address, Credentials(username, password, ctx)
