"""TLS with a client certificate the test makes, and user/password, all read from credential files
($CREDENTIALS_DIRECTORY, as systemd's LoadCredential= provides them)."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fleet_support import Broker, Collector, TlsFiles, make_certs, require_tool

from device.config import DeviceConfig
from device.fleet.credentials import tls_context
from device.fleet.reporter import FleetReporter

pytestmark = pytest.mark.mqtt


@pytest.fixture
def certs(tmp_path: Path) -> TlsFiles:
    return make_certs(tmp_path / "certs")


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    exe = require_tool("mosquitto_passwd")
    path = tmp_path / "passwd"
    subprocess.run([exe, "-b", "-c", str(path), "line-3", "s3cret-pass"], check=True, capture_output=True)
    return path


def _credentials_dir(
    tmp_path: Path, certs: TlsFiles, *, rogue: bool = False, password: str = "s3cret-pass"
) -> Path:
    creds = tmp_path / "credentials"
    creds.mkdir()
    shutil.copy(certs.ca, creds / "ca.pem")
    shutil.copy(certs.rogue_cert if rogue else certs.client_cert, creds / "client.pem")
    shutil.copy(certs.rogue_key if rogue else certs.client_key, creds / "client.key")
    (creds / "mqtt-user").write_text("line-3\n")
    (creds / "mqtt-password").write_text(password + "\n")
    return creds


def _reporter(url: str, state: Path) -> FleetReporter:
    cfg = DeviceConfig.model_validate(
        {
            "device": {"id": "tls-0", "site": "test"},
            "mqtt": {
                "url": url,
                "telemetry_period_s": 60,
                # relative names: looked up in $CREDENTIALS_DIRECTORY
                "ca_file": "ca.pem",
                "cert_file": "client.pem",
                "key_file": "client.key",
                "username_file": "mqtt-user",
                "password_file": "mqtt-password",
            },
            "paths": {"state_dir": str(state)},
        }
    )
    rep = FleetReporter(cfg, versions={}, telemetry=dict)
    rep.start()
    return rep


def test_tls_with_client_certificate_and_password_from_credential_files(
    broker_factory: Callable[..., Broker],
    collector_factory: Callable[..., Collector],
    certs: TlsFiles,
    password_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = broker_factory(tls=certs, password_file=password_file)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(_credentials_dir(tmp_path, certs)))
    sub = collector_factory(
        broker.url,
        ["edgesort/v1/test/tls-0/#"],
        tls=tls_context(certs.ca, certs.client_cert, certs.client_key),
        username="line-3",
        password="s3cret-pass",
    )
    rep = _reporter(broker.url, tmp_path / "state")
    seqs = [rep.item_event({"item": i, "grade": "S"}) for i in range(20)]
    sub.wait_for(lambda: len(sub.on("events/item")) >= 20, 15, "20 events over TLS")
    assert sorted(m.json()["seq"] for m in sub.on("events/item")) == seqs
    assert any(m.json()["state"] == "online" for m in sub.on("/status"))
    rep.stop()


@pytest.mark.parametrize("case", ["client certificate from another CA", "wrong password"])
def test_a_refused_client_keeps_its_events_and_keeps_running(
    broker_factory: Callable[..., Broker],
    certs: TlsFiles,
    password_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    broker = broker_factory(tls=certs, password_file=password_file)
    creds = _credentials_dir(
        tmp_path,
        certs,
        rogue=case.startswith("client"),
        password="wrong" if case == "wrong password" else "s3cret-pass",
    )
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    caplog.set_level(logging.WARNING, logger="edgesort.fleet")
    rep = _reporter(broker.url, tmp_path / "state")
    assert rep.item_event({"item": 1}) == 1
    time.sleep(3)  # several connection attempts (back-off 1 s, 2 s)
    assert not rep.connected
    assert rep.outbox.stats()["pending"] == 1
    expected = "refused the connection" if case == "wrong password" else "cannot connect to the broker"
    assert any(expected in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
    rep.stop()
