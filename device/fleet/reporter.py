"""FleetReporter: the daemon's one link to the fleet (DESIGN: MQTT (fleet); docs/MQTT.md is the contract).

    item_event()/alarm() ─▶ Outbox (SQLite WAL, seq in the same transaction) ─▶ feeder ─▶ paho ─▶ broker
                                       ▲ delete on PUBACK ◀── on_publish ◀────────────────────┘
    telemetry(): daemon's pure snapshot ─▶ telemetry_payload() ─▶ telemetry timer (QoS 0, stop-event paced)
    status: `offline` Last Will; `online` on each connect; `stopped` on stop()            (retained, QoS 1)
    cmd/<verb>, config/desired ─▶ CommandProcessor (worker thread) ─▶ result topic, config/reported

paho runs its own network thread (connect_async + loop_start) and reconnects with back-off. At each new
connection the feeder drops what paho still holds in memory (`drop_out_messages`) and replays the outbox
from its oldest row, so after an outage events go out in seq order straight from disk. paho's in-memory
queue never holds more than the feed window (max_inflight / max_queued), whatever the length of the outage.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from device.config import DeviceConfig
from device.errors import EdgesortError, require
from device.fleet import topics
from device.fleet.commands import CommandHandler, CommandProcessor, Incoming, ReplayGuard
from device.fleet.credentials import BrokerAddress, Credentials, load_credentials
from device.fleet.outbox import Outbox, Row
from device.fleet.payloads import AlarmEvent, ItemEvent, Status, Telemetry, dumps

log = logging.getLogger("edgesort.fleet")

WINDOW = 100  # events handed to paho and not yet acknowledged (also capped by the broker's Receive Maximum)
RESERVED_INFLIGHT = 4  # of the broker's Receive Maximum, kept for status/results beside the event window
EXTRA_QUEUED = 64  # room in paho's queue for status, results and config/reported beside the event window
FEED_POLL_S = 0.5  # the feeder wakes on every event/ack/connect; the poll only bounds a missed wake-up
EXPIRE_PERIOD_S = 60.0  # how often the age bound of the outbox is applied
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 30  # paho's doubling back-off after a lost or refused connection
RETRY_REFUSED_S = 5.0  # wait after the broker refuses an event for a transient reason (quota, not authorized)
FEEDER_RETRY_S = 1.0  # after an unexpected outbox error (disk, lock) the feeder waits this long
STOP_PUBLISH_TIMEOUT_S = 2.0  # how long stop() waits for `stopped` to be acknowledged before disconnecting
# PUBACK reasons that will never succeed on a retry (topic name invalid, packet too large, payload format
# invalid): the event is dropped and counted as rejected.
PERMANENT_REFUSALS = frozenset({0x90, 0x95, 0x99})
_RESERVED = frozenset({"v", "seq", "device", "site", "stream"})
THERMAL = Path("/sys/class/thermal")
MQTT_ERR_SUCCESS, MQTT_ERR_NO_CONN = 0, 4  # paho.mqtt.enums.MQTTErrorCode values (paho is imported lazily)


def software_version() -> str:
    """The installed edgesort version (from package metadata: `device.__version__` is not importable where a
    test tree puts a namespace `device/` first on sys.path)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgesort")
    except PackageNotFoundError:
        return "unknown"


def no_delay(client: Any, userdata: Any, sock: Any) -> None:
    """paho leaves Nagle's algorithm on: a small PUBLISH then waits for the peer's delayed ACK (40 ms on
    Linux), which would cap a command round trip at ~12/s and slow every PUBACK."""
    import socket

    with contextlib.suppress(OSError, AttributeError):  # not a TCP socket (a unix or websocket transport)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PahoNoise(logging.Filter):
    """paho logs 'Client is not connected' as an error at every back-off step of an outage; our own
    disconnect warning already says so once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Client is not connected")


@dataclass
class _FeedState:
    cursor: int = 0  # id of the last row handed to paho on this connection
    inflight: dict[int, int] = field(default_factory=dict)  # paho mid -> outbox row id
    epoch: int = -1
    next_expire: float = field(default_factory=lambda: time.monotonic() + EXPIRE_PERIOD_S)
    retry: dict[int, float] = field(default_factory=dict)  # refused row id -> when to send it again


class EventError(EdgesortError):
    """An event payload the reporter cannot send (a bug in the caller, reported as one sentence)."""


def _plain(obj: Any) -> Any:
    """JSON fallback for numpy scalars and arrays, which the daemon's payloads often hold."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def read_temperatures(root: Path = THERMAL) -> dict[str, float]:
    """Thermal zones in degrees Celsius (Jetson: CPU-therm, GPU-therm, ...); empty where there are none."""
    out: dict[str, float] = {}
    for zone in sorted(root.glob("thermal_zone*")):
        try:
            name = (zone / "type").read_text().strip() or zone.name
            out[name] = int((zone / "temp").read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
    return out


def telemetry_payload(
    snapshot: dict[str, Any] | Exception,
    *,
    device: str,
    site: str,
    session: int,
    outbox: dict[str, Any],
    mqtt: dict[str, Any],
    commands: dict[str, int],
    temperatures: dict[str, float],
    now: float,
) -> bytes:
    """Pure: the daemon's snapshot plus the reporter's own counters, validated. A snapshot that does not fit
    the schema is left out with the reason, so a bad field never silences the reporter's own figures."""
    own: dict[str, Any] = {
        "ts": now,
        "device": device,
        "site": site,
        "session": session,
        "outbox": outbox,
        "mqtt": mqtt,
        "commands": commands,
    }
    read = {"temperatures_c": temperatures} if temperatures else {}  # the daemon's own reading wins
    if isinstance(snapshot, Exception):
        return dumps(
            Telemetry.model_validate({**read, **own, "snapshot_error": f"snapshot failed: {snapshot}"[:500]})
        )
    try:
        clean = json.loads(json.dumps(snapshot, default=_plain, allow_nan=False))
        if not isinstance(clean, dict):
            raise TypeError(f"the snapshot is a {type(snapshot).__name__}, not a dict")
        return dumps(Telemetry.model_validate({**read, **clean, **own}))
    except (TypeError, ValueError) as exc:  # ValidationError is a ValueError
        reason = (
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            if isinstance(exc, ValidationError)
            else str(exc)
        )
        return dumps(
            Telemetry.model_validate({**read, **own, "snapshot_error": f"snapshot left out: {reason}"[:500]})
        )


class FleetReporter:
    """See the module docstring. Thread-safe: item_event/alarm may be called from any thread."""

    def __init__(
        self,
        cfg: DeviceConfig,
        *,
        versions: dict[str, str],
        telemetry: Callable[[], dict[str, Any]],
        commands: CommandHandler | None = None,
        window: int = WINDOW,
    ) -> None:
        self.cfg = cfg
        self.topics = topics.DeviceTopics(cfg.device.site, cfg.device.id)
        self.versions = {"edgesort": software_version(), **{k: str(v) for k, v in versions.items()}}
        self._telemetry_fn = telemetry
        self._handler = commands
        self.window = max(1, window)
        m = cfg.mqtt
        self.outbox = Outbox(
            cfg.paths.outbox,
            max_bytes=int(m.outbox_max_mb * 2**20),
            max_age_s=m.outbox_max_age_h * 3600,
            fsync=m.outbox_fsync,
        )
        self.stream = self.outbox.stream
        self.session = 0
        self._broker: BrokerAddress | None = None
        self._creds: Credentials | None = None
        if m.url is not None:
            self._broker, self._creds = load_credentials(m)  # bad files fail here, before anything starts
        self._client: Any = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._telemetry_now = threading.Event()
        self._connected = threading.Event()
        self._acks: collections.deque[tuple[int, int]] = collections.deque()
        self._epoch = 0  # bumped at each successful connection: the feeder then replays from the oldest row
        self._effective_window = self.window
        self._threads: list[threading.Thread] = []
        self._started = False
        self.connects = 0
        self.disconnects = 0
        self._down_logged = False
        self._processor: CommandProcessor | None = None
        self._replay: ReplayGuard | None = None

    # -- public API --------------------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.session = self.outbox.incr("session")
        self._start_ts = time.time()
        if self.outbox.recovered_from is not None:
            self.alarm(
                "outbox_reset",
                f"the outbox was unreadable and was moved to {self.outbox.recovered_from}",
                severity="error",
            )
        self.outbox.expire()
        self._threads = [threading.Thread(target=self._feed_loop, name="fleet-feeder", daemon=True)]
        if self._broker is not None:
            self._replay = ReplayGuard(self.cfg.paths.outbox)
            self._processor = CommandProcessor(
                self.cfg,
                self._handler,
                reply=self._publish_reply,
                report=self._publish_reported,
                state=self.outbox,
                replay=self._replay,
            )
            self._processor.start()
            self._client = self._make_client()
            self._threads.append(
                threading.Thread(target=self._telemetry_loop, name="fleet-telemetry", daemon=True)
            )
        for t in self._threads:
            t.start()
        if self._client is not None:
            assert self._broker is not None
            self._client.connect_async(
                self._broker.host, self._broker.port, keepalive=self.cfg.mqtt.keepalive_s, clean_start=True
            )
            self._client.loop_start()
        log.info(
            "fleet reporter started: session %d, %d events pending, broker %s",
            self.session,
            self.outbox.stats()["pending"],
            self.cfg.mqtt.url or "none (outbox only)",
        )

    def item_event(self, payload: dict[str, Any]) -> int:
        """Store an item event durably and queue it for the broker. Returns its seq."""
        return self._event(self.topics.item, ItemEvent, payload)

    def alarm(self, kind: str, message: str, **fields: Any) -> int:
        """Store an alarm event (kind: e.g. camera_stalled; severity= info|warning|error|critical)."""
        return self._event(self.topics.alarm, AlarmEvent, {**fields, "kind": kind, "message": message})

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every stored event has been acknowledged by the broker (tests, benchmarks, stop())."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox.stats()["pending"] == 0:
                return True
            time.sleep(0.02)  # polling the outbox count; PUBACKs arrive on paho's thread
        return self.outbox.stats()["pending"] == 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def stats(self) -> dict[str, Any]:
        return {
            "outbox": self.outbox.stats(),
            "mqtt": {"connected": self.connected, "connects": self.connects, "disconnects": self.disconnects},
            "commands": {
                "accepted": self._processor.accepted if self._processor else 0,
                "refused": self._processor.refused if self._processor else 0,
            },
        }

    def stop(self, drain_s: float = 2.0) -> None:
        """Publish `stopped`, disconnect cleanly (so the Last Will is not sent), and close the outbox.
        Waits up to drain_s for pending events to be acknowledged; the rest stay on disk for the next run."""
        if not self._started:
            self.outbox.close()
            return
        if self.connected and drain_s > 0:
            self.wait_idle(drain_s)
        self._stop.set()
        self._wake.set()
        self._telemetry_now.set()
        if self._processor is not None:
            self._processor.stop()
        if self._client is not None:
            if self.connected:
                info = self._client.publish(self.topics.status, self._status("stopped"), qos=1, retain=True)
                deadline = time.monotonic() + STOP_PUBLISH_TIMEOUT_S
                while not info.is_published() and self.connected and time.monotonic() < deadline:
                    time.sleep(0.01)  # waiting for the broker's PUBACK of `stopped`
            self._client.disconnect()
            self._client.loop_stop()
        for t in self._threads:
            t.join(timeout=10)
        if self._replay is not None:
            self._replay.close()
        self.outbox.close()
        self._started = False
        log.info("fleet reporter stopped")

    # -- events ------------------------------------------------------------------------------------

    def _event(self, topic: str, model: type[ItemEvent] | type[AlarmEvent], payload: dict[str, Any]) -> int:
        if not isinstance(payload, dict):
            raise EventError(f"an event payload must be a dict, not {type(payload).__name__}")
        clash = _RESERVED & payload.keys()
        if clash:
            raise EventError(f"event fields {sorted(clash)} are set by the reporter; leave them out")
        ts = payload.get("ts")
        base = {
            **payload,
            "ts": time.time() if ts is None else ts,
            "v": 1,
            "device": self.topics.device,
            "site": self.topics.site,
            "stream": self.stream,
        }
        try:
            plain = json.loads(json.dumps(base, default=_plain, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise EventError(f"the event payload is not JSON: {exc}") from exc

        def build(seq: int) -> bytes:
            doc = {**plain, "seq": seq}
            try:
                model.model_validate(doc)
            except ValidationError as exc:
                reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise EventError(f"invalid {topic.rsplit('/', 1)[-1]} event: {reasons}") from None
            return dumps(doc)

        seq = self.outbox.append(topic, build)
        self._wake.set()
        return seq

    # -- MQTT --------------------------------------------------------------------------------------

    def _status(self, state: Literal["online", "stopped", "offline"]) -> bytes:
        return dumps(
            Status(
                state=state,
                device=self.topics.device,
                site=self.topics.site,
                session=self.session,
                stream=self.stream,
                ts=time.time(),
                versions=self.versions,
            )
        )

    def _make_client(self) -> Any:
        mqtt = require("paho.mqtt.client", "fleet reporting over MQTT", "pip install 'paho-mqtt>=2'")

        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.cfg.mqtt.client_id or self.topics.device,
            protocol=mqtt.MQTTv5,
        )
        client.suppress_exceptions = True  # a bug in a callback is logged; it must not end the network thread
        paho_log = logging.getLogger("edgesort.fleet.paho")
        if not any(isinstance(f, _PahoNoise) for f in paho_log.filters):
            paho_log.addFilter(_PahoNoise())
        client.enable_logger(paho_log)
        client.max_inflight_messages_set(self.window)
        client.max_queued_messages_set(self.window + EXTRA_QUEUED)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        assert self._creds is not None
        if self._creds.tls is not None:
            client.tls_set_context(self._creds.tls)
        if self._creds.username is not None:
            client.username_pw_set(self._creds.username, self._creds.password)
        client.will_set(self.topics.status, self._status("offline"), qos=1, retain=True)
        client.on_socket_open = no_delay
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            if not self._down_logged:
                log.error("the broker %s refused the connection: %s", self.cfg.mqtt.url, reason.getName())
                self._down_logged = True
            return  # paho retries with back-off; nothing is published on a refused connection
        receive_max = getattr(properties, "ReceiveMaximum", None)
        # The broker's Receive Maximum caps unacknowledged PUBLISHes; keep some of it for status and results.
        if receive_max:
            self._effective_window = max(1, min(self.window, receive_max - RESERVED_INFLIGHT))
        log.debug("broker receive maximum %s: event window %d", receive_max, self._effective_window)
        dropped = (
            client.drop_out_messages()
        )  # the outbox replays events; stale results are not worth resending
        self._epoch += 1
        self.connects += 1
        self._down_logged = False
        client.publish(self.topics.status, self._status("online"), qos=1, retain=True)
        client.subscribe([(self.topics.cmd_filter, 1), (self.topics.config_desired, 1)])
        if self._processor is not None:
            self._processor.publish_reported()
        self._connected.set()
        self._wake.set()
        self._telemetry_now.set()
        log.info(
            "connected to %s (session %d; %d in-memory messages left to the outbox replay)",
            self.cfg.mqtt.url,
            self.session,
            len(dropped),
        )

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self._cannot_connect("unreachable")

    def _cannot_connect(self, why: str) -> None:
        if not self._down_logged:  # once per outage, not at every back-off step
            log.warning(
                "cannot connect to the broker %s (%s); retrying with back-off, events wait in the outbox",
                self.cfg.mqtt.url,
                why,
            )
            self._down_logged = True

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if self._stop.is_set():
            return
        if not was:  # the connection failed before CONNACK (TLS refused, broker closed on us)
            self._cannot_connect(reason.getName())
            return
        self.disconnects += 1
        log.warning(
            "disconnected from %s (%s); events wait in the outbox", self.cfg.mqtt.url, reason.getName()
        )

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        # Runs with paho's message lock held: only hand the ack over, never touch the outbox here.
        self._acks.append((mid, reason.value if reason.is_failure else 0))
        self._wake.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        props = getattr(msg, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            return
        if topic == self.topics.config_desired and not msg.payload:
            return  # someone cleared the retained desired config: nothing to apply
        if self._processor is not None:
            self._processor.submit(Incoming(topic, bytes(msg.payload), response_topic, correlation))

    def _publish_reply(self, topic: str, payload: bytes, correlation: bytes | None) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = "application/json"
        if correlation is not None:
            props.CorrelationData = correlation
        self._client.publish(topic, payload, qos=1, properties=props)

    def _publish_reported(self, payload: bytes) -> None:
        self._client.publish(self.topics.config_reported, payload, qos=1, retain=True)

    # -- threads -----------------------------------------------------------------------------------

    def _feed_loop(self) -> None:
        st = _FeedState()
        while True:
            self._wake.wait(FEED_POLL_S)
            self._wake.clear()
            try:
                if not self._feed_once(st):
                    return
            except Exception:  # e.g. the disk failed: log, wait, try again; events stay on disk meanwhile
                log.exception("the outbox feeder failed; retrying in %.0f s", FEEDER_RETRY_S)
                if self._stop.wait(FEEDER_RETRY_S):
                    return

    def _feed_once(self, st: _FeedState) -> bool:
        """One pass: apply PUBACKs, then hand paho the next rows. Returns False once stopping."""
        epoch = self._epoch  # read before the acks: acks of an older connection are all queued by now
        acked, rejected = [], 0
        while self._acks:
            mid, code = self._acks.popleft()
            rid = st.inflight.pop(mid, None)
            if rid is None:
                continue  # the ack of a status, result or telemetry message
            if code == 0:
                acked.append(rid)
            elif code in PERMANENT_REFUSALS:
                log.error("the broker refused event row %d for good (reason 0x%02x); dropped", rid, code)
                acked.append(rid)
                rejected += 1
            else:  # transient (quota, not authorized): retried on its own, the rows behind it go on
                log.warning(
                    "the broker refused event row %d (reason 0x%02x); retrying it in %.0f s",
                    rid,
                    code,
                    RETRY_REFUSED_S,
                )
                st.retry[rid] = time.monotonic() + RETRY_REFUSED_S
        self.outbox.ack(acked, rejected=rejected)
        if self._stop.is_set():
            return False
        if epoch != st.epoch:  # a new connection: paho's memory was dropped, replay from the oldest row
            st.epoch, st.cursor = epoch, 0
            st.inflight.clear()
            st.retry.clear()
        if time.monotonic() >= st.next_expire:
            st.next_expire = time.monotonic() + EXPIRE_PERIOD_S
            self.outbox.expire()
        if not self._connected.is_set() or self._client is None:
            return True
        now = time.monotonic()
        due = [rid for rid, t in st.retry.items() if t <= now]
        for row in self.outbox.rows(due):  # refused rows whose wait is over (gone if a bound dropped them)
            if not self._hand_over(st, row):
                return True
        for rid in due:
            st.retry.pop(rid, None)
        room = self._effective_window - len(st.inflight)
        for row in self.outbox.next_after(st.cursor, room) if room > 0 else []:
            if not self._hand_over(st, row):
                break
            st.cursor = row.id
        return True

    def _hand_over(self, st: _FeedState, row: Row) -> bool:
        info = self._client.publish(row.topic, row.payload, qos=1)
        if info.rc not in (MQTT_ERR_SUCCESS, MQTT_ERR_NO_CONN):  # NO_CONN: paho keeps it until reconnect
            return False  # paho's queue is full (status and results use the extra room): next wake-up
        st.inflight[info.mid] = row.id
        return True

    def _telemetry_loop(self) -> None:
        period = self.cfg.mqtt.telemetry_period_s
        while True:
            self._telemetry_now.wait(period)  # set at each connection (and at stop), else one period
            self._telemetry_now.clear()
            if self._stop.is_set():
                return
            if self._connected.is_set():
                try:
                    self._publish_telemetry()
                except Exception:  # a telemetry failure must not end the timer
                    log.exception("could not publish telemetry")

    def _publish_telemetry(self) -> None:
        try:
            snap: dict[str, Any] | Exception = self._telemetry_fn()
        except Exception as exc:  # the daemon's snapshot must not stop the reporter
            log.exception("telemetry snapshot failed")
            snap = exc
        s = self.stats()
        payload = telemetry_payload(
            snap,
            device=self.topics.device,
            site=self.topics.site,
            session=self.session,
            outbox=s["outbox"],
            mqtt=s["mqtt"],
            commands=s["commands"],
            temperatures=read_temperatures(),
            now=time.time(),
        )
        self._client.publish(self.topics.telemetry, payload, qos=0)
