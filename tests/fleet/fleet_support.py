"""Test support for tests/fleet: a real mosquitto (own port, own config file), certificates made here, and a
recording MQTT 5 subscriber. Fixtures live in conftest.py."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.fleet.reporter import no_delay


def _root_conftest() -> Any:
    """tests/conftest.py as a module (tests/ is not a package, so it cannot be imported by name from here)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "edgesort_tests_root", Path(__file__).parents[1] / "conftest.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


require_tool = _root_conftest().require_tool

BROKER_START_S = 10.0  # mosquitto binds within a second; the rest is slack for a CPU shared by six engineers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # a client certificate signed by another CA
    rogue_key: Path


def make_certs(folder: Path) -> TlsFiles:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, and one from a rogue CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return path

    def make_ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def issue(ca_key: Any, ca_cert: x509.Certificate, cn: str, server: bool) -> tuple[Any, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            b = b.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return key, b.sign(ca_key, hashes.SHA256())

    def pem(cert: x509.Certificate, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key, ca = make_ca("edgesort test CA")
    s_key, s_cert = issue(ca_key, ca, "localhost", server=True)
    c_key, c_cert = issue(ca_key, ca, "edgesort-0", server=False)
    r_ca_key, r_ca = make_ca("rogue CA")
    r_key, r_cert = issue(r_ca_key, r_ca, "edgesort-0", server=False)
    return TlsFiles(
        ca=pem(ca, folder / "ca.pem"),
        server_cert=pem(s_cert, folder / "server.pem"),
        server_key=write_key(s_key, folder / "server.key"),
        client_cert=pem(c_cert, folder / "client.pem"),
        client_key=write_key(c_key, folder / "client.key"),
        rogue_cert=pem(r_cert, folder / "rogue.pem"),
        rogue_key=write_key(r_key, folder / "rogue.key"),
    )


class Broker:
    """mosquitto on 127.0.0.1 with a config file written here. stop()/start() keep the port (outage tests)."""

    def __init__(
        self,
        folder: Path,
        *,
        tls: TlsFiles | None = None,
        persistence: bool = False,
        password_file: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.exe = require_tool("mosquitto")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls = tls
        self.conf = folder / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if password_file else 'true'}",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {folder}/",
            "max_queued_messages 100000",  # a subscriber reconnecting after an outage keeps its queue
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_dest stdout",
            "set_tcp_nodelay true",  # answers and PUBACKs without waiting for delayed ACKs (40 ms each)
        ]
        if password_file is not None:
            lines.append(f"password_file {password_file}")
        if tls is not None:
            lines += [
                f"cafile {tls.ca}",
                f"certfile {tls.server_cert}",
                f"keyfile {tls.server_key}",
                "require_certificate true",
                "tls_version tlsv1.2",
            ]
        lines += extra
        if os.geteuid() == 0:
            lines.append(
                "user root"
            )  # as root, mosquitto would switch to 'mosquitto' and lose the temp files
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self) -> Broker:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [self.exe, "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + BROKER_START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)  # waiting for mosquitto to bind its port
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file on the way out
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    correlation: bytes | None
    content_type: str | None

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Collector:
    """A paho MQTT 5 subscriber that records everything. With a session it survives a broker restart."""

    url: str
    filters: list[str]
    session_expiry_s: int = 0
    tls: Any = None  # ssl.SSLContext
    username: str | None = None
    password: str | None = None
    messages: list[Received] = field(default_factory=list)
    connects: int = 0

    def __post_init__(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self._lock = threading.Lock()
        self._arrived = threading.Condition()
        self._connected = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"collector-{free_port()}", protocol=mqtt.MQTTv5
        )
        self.client.reconnect_delay_set(0.1, 0.5)  # reconnect before the reporter's 1 s minimum back-off
        if self.tls is not None:
            self.client.tls_set_context(self.tls)
        if self.username is not None:
            self.client.username_pw_set(self.username, self.password)
        self.client.on_connect = self._on_connect
        self.client.on_socket_open = no_delay
        self.client.on_disconnect = lambda *a: self._connected.clear()
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        if self.session_expiry_s:
            props.SessionExpiryInterval = self.session_expiry_s
        host, port = self.url.split("://")[1].split(":")
        self.client.connect_async(
            host, int(port), keepalive=30, clean_start=not self.session_expiry_s, properties=props
        )
        self.client.loop_start()
        assert self._connected.wait(10), "the collector could not connect"
        self.wait_for(lambda: self._subscribed, 10, "subscription")

    _subscribed = False

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            return
        self.connects += 1
        self._subscribed = False
        client.on_subscribe = lambda *a: setattr(self, "_subscribed", True)
        client.subscribe([(f, 1) for f in self.filters])
        self._connected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        props = getattr(msg, "properties", None)
        with self._lock:
            self.messages.append(
                Received(
                    msg.topic,
                    bytes(msg.payload),
                    bool(msg.retain),
                    getattr(props, "CorrelationData", None),
                    getattr(props, "ContentType", None),
                )
            )
        with self._arrived:
            self._arrived.notify_all()

    def on(self, suffix: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            with self._arrived:
                self._arrived.wait(0.1)  # woken by each message; the timeout covers non-message state
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        retain: bool = False,
    ) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.PUBLISH)
        if response_topic:
            props.ResponseTopic = response_topic
        if correlation:
            props.CorrelationData = correlation
        self.client.publish(topic, payload, qos=1, retain=retain, properties=props).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def dedupe(events: list[Received]) -> tuple[dict[int, dict[str, Any]], int]:
    """seq -> payload, and how many raw messages were duplicates. A duplicate must be byte-identical."""
    by_seq: dict[int, dict[str, Any]] = {}
    raw: dict[int, bytes] = {}
    dups = 0
    for m in events:
        doc = m.json()
        seq = doc["seq"]
        if seq in raw:
            assert raw[seq] == m.payload, f"seq {seq} came twice with different payloads"
            dups += 1
        else:
            raw[seq] = m.payload
            by_seq[seq] = doc
    return by_seq, dups


class RecordingHandler:
    """A CommandHandler that records calls; set_config refuses a belt over 3 m/s (a daemon-side rule)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.configs: list[dict[str, Any]] = []

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")

    def set_config(self, doc: dict[str, Any]) -> list[str]:
        self.calls.append("set_config")
        if doc["line"]["max_belt_speed_mps"] > 3:
            return ["line.max_belt_speed_mps over 3 m/s needs a restart of the line"]
        self.configs.append(doc)
        return []

    def snapshot(self) -> bytes:
        import cv2
        import numpy as np

        self.calls.append("snapshot")
        img = np.zeros((48, 64, 3), np.uint8)
        img[:, :32] = (0, 200, 0)
        ok, buf = cv2.imencode(".jpg", img)
        assert ok
        return bytes(buf)
