"""The host side of the bridge: owns the serial port (any pyserial URL) and a reader thread.

Data flow:
    caller ──queue_eject()──▶ _command ──encode──▶ port.write        (retried by sequence until acknowledged)
    port.read ─▶ reader thread ─▶ FrameDecoder ─▶ replies  ─▶ the waiting caller (by acked sequence)
                                               ├─▶ ENCODER ─▶ (mcu time, count) samples ─▶ encoder_count_at()
                                               ├─▶ FIRED   ─▶ fired listeners (in the reader thread: be quick)
                                               └─▶ BOOT / FAILSAFE ─▶ epoch, relink by the heartbeat thread
    heartbeat thread: HEARTBEAT every 100 ms (the MCU goes safe after 500 ms without a valid frame); each
    round trip is a clock sample (host time ↔ MCU time) for the mapping.
"""

from __future__ import annotations

import bisect
import contextlib
import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import serial

from firmware_bridge import protocol as p
from firmware_bridge.clock import ClockJump, ClockMapping, locate_pauses
from firmware_bridge.protocol import McuState, MsgType, Result

log = logging.getLogger(__name__)

ENCODER_WINDOW = 400  # encoder samples kept (4 s at the default 10 ms stream period)
SPEED_WINDOW_S = 0.1  # the belt's recent speed is the slope of the encoder samples over this much MCU time
READ_TIMEOUT_S = 0.02  # reader thread poll, so close() returns promptly
PROBE_DELAY_S = 0.02  # an ENCODER sample this much later than the clock mapping expects triggers a heartbeat
# An Arduino resets when its port is opened (DTR) and its bootloader listens for ~1-2 s before the firmware
# answers, so connect() keeps saying HELLO this long.
CONNECT_TIMEOUT_S = 3.0
MAX_IN_FLIGHT = 8  # QUEUE_EJECTs sent at once by queue_ejects (the most items one frame decides, in practice)


class BridgeError(IOError):
    """Anything wrong with the link to the MCU; the message is one sentence for the operator."""


class BridgeTimeout(BridgeError):  # noqa: N818 (the names are the interface)
    """The MCU did not acknowledge a command after every retry."""


class BridgeNotConnected(BridgeError):  # noqa: N818 (the names are the interface)
    """The port cannot be opened, was closed, or failed."""


class BridgeRejected(BridgeError):  # noqa: N818 (the names are the interface)
    """The MCU refused a command (bad argument, unknown type, wrong version)."""


class BridgeReset(BridgeError):  # noqa: N818 (the names are the interface)
    """The MCU rebooted: its queue and count were lost, so a command or a time from before is void."""


class QueueResult(enum.Enum):
    QUEUED = "queued"
    LATE = "late"
    FULL = "full"


@dataclass(frozen=True)
class FiredEvent:
    item_id: int
    gate: int
    target_count: int
    actual_count: int
    host_ts: float  # the fire time on the MCU clock, mapped to host time.monotonic()


@dataclass(frozen=True)
class McuInfo:
    proto: int
    fw_version: int
    queue_capacity: int
    gate_count: int
    reset_cause: int


@dataclass
class _Pending:
    msg_type: int
    event: threading.Event = field(default_factory=threading.Event)
    reply: p.Frame | None = None
    rx_ts: float = 0.0
    error: BridgeError | None = None


class _Unwrap:
    """u32 wire value -> unbounded int, assuming successive values differ by less than 2**31."""

    def __init__(self) -> None:
        self.raw: int | None = None
        self.value = 0

    def __call__(self, raw: int) -> int:
        if self.raw is not None:
            d = (raw - self.raw) & 0xFFFFFFFF
            self.value += d - (1 << 32) if d >= 1 << 31 else d
        else:
            self.value = raw
        self.raw = raw
        return self.value

    def near(self, raw: int) -> int:
        """Unwrap a value near the current one without advancing."""
        if self.raw is None:
            return raw
        d = (raw - self.raw) & 0xFFFFFFFF
        return self.value + (d - (1 << 32) if d >= 1 << 31 else d)


class BridgeLink:
    def __init__(
        self,
        url: str,
        baud: int = p.DEFAULT_BAUD,
        ack_timeout_s: float = p.ACK_TIMEOUT_S,
        retries: int = p.RETRIES,
        *,
        heartbeat_s: float = p.HEARTBEAT_PERIOD_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.baud = baud
        self.ack_timeout_s = ack_timeout_s
        self.retries = retries
        self.heartbeat_s = heartbeat_s
        self.connect_timeout_s = connect_timeout_s
        self.info: McuInfo | None = None
        self.epoch = 0  # +1 at every MCU boot seen; counts of different epochs are unrelated
        self.last_heartbeat_ts = 0.0  # host time of the last heartbeat the MCU answered (for the watchdog)
        self._port: Any = None
        self._write_lock = threading.Lock()
        self._relink_lock = threading.Lock()
        self._seq = 0
        self._link_gen = 0  # +1 per successful HELLO, so two threads never relink (and flush) twice
        self._stale_gen = 0
        self._pending: dict[int, _Pending] = {}
        self._decoder = p.FrameDecoder()
        self._counters: dict[str, int] = dict.fromkeys(
            (
                "tx_frames",
                "retries",
                "timeouts",
                "seq_gaps",
                "stale_replies",
                "naks",
                "fired",
                "failsafes",
                "mcu_resets",
                "relinks",
                "heartbeats",
                "heartbeat_failures",
                "listener_errors",
                "clock_jumps",
                "clock_probes",
            ),
            0,
        )
        self._fired_listeners: list[Callable[[FiredEvent], None]] = []
        self._event_listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._stop = threading.Event()
        self._stop_heart = threading.Event()
        self._need_relink = threading.Event()
        self._wake_heart = threading.Event()  # a relink, close() or a clock probe: do not wait for the period
        self._last_probe_ts = 0.0
        self._reader: threading.Thread | None = None
        self._heart: threading.Thread | None = None
        self._failure: BridgeError | None = None
        self._last_mcu_seq: int | None = None
        self._sync_lock = threading.Lock()
        self._pool: Any = None  # threads for queue_ejects, made on first use
        self._reset_sync()

    # ---- lifecycle -------------------------------------------------------------------------------------
    def connect(self) -> BridgeLink:
        try:
            self._port = serial.serial_for_url(self.url, baudrate=self.baud, timeout=READ_TIMEOUT_S)
        except (serial.SerialException, ValueError, OSError) as exc:
            raise BridgeNotConnected(f"cannot open the MCU port {self.url}: {exc}") from exc
        self._stop.clear()
        self._stop_heart.clear()
        self._failure = None
        with contextlib.suppress(Exception):
            self._port.reset_input_buffer()
        self._decoder.resync()  # the flushed port is mid-frame: its tail is not a frame, not a CRC error
        self._reader = threading.Thread(target=self._read_loop, name="bridge-reader", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.connect_timeout_s
        try:
            self._write(b"\x00")  # ends any partial frame the MCU holds, so our first frame parses
            while True:
                try:
                    self._hello()
                    break
                except BridgeTimeout:
                    if time.monotonic() >= deadline:
                        raise
            # A HELLO that needed retries (an MCU still booting) is a wide clock sample; one clean round trip
            # now, so that positions are right from the first frame rather than from the first heartbeat.
            self._heartbeat()
        except BridgeError:
            self._shutdown_threads()
            raise
        self._heart = threading.Thread(target=self._heartbeat_loop, name="bridge-heartbeat", daemon=True)
        self._heart.start()
        return self

    def close(self) -> None:
        """Leave the MCU safe (queue flushed, gates off), stop the threads, close the port."""
        if self._port is None:
            return
        self._stop_heart.set()
        self._wake_heart.set()
        if self._heart is not None:
            self._heart.join(timeout=2)
            self._heart = None
        if self._failure is None:
            try:
                self.safe_state()
            except BridgeError as exc:
                # the MCU still goes safe on its own 500 ms after our last frame
                log.warning("could not command the MCU safe on close: %s", exc)
        self._shutdown_threads()

    def _shutdown_threads(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
        self._stop_heart.set()
        self._stop.set()
        if self._reader is not None:
            self._reader.join(timeout=2)
            self._reader = None
        if self._port is not None:
            with contextlib.suppress(Exception):
                self._port.close()
            self._port = None

    def __enter__(self) -> BridgeLink:
        if self._port is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- public commands -------------------------------------------------------------------------------
    def queue_eject(
        self, item_id: int, gate: int, fire_at_count: int | float, pulse_ms: int, *, epoch: int | None = None
    ) -> QueueResult:
        """Queue an ejection at an encoder count. `epoch` (from link.epoch when the count was computed) makes
        a count from before an MCU reboot raise BridgeReset instead of firing at a wrong place."""
        info = self._require_info()
        if not 0 <= item_id <= 0xFFFFFFFF:
            raise ValueError(f"item_id {item_id} does not fit in 32 bits")
        if not 0 <= gate < info.gate_count:
            raise ValueError(f"gate {gate} does not exist: the MCU has gates 0..{info.gate_count - 1}")
        if not 1 <= pulse_ms <= 0xFFFF:
            raise ValueError(f"pulse_ms {pulse_ms} is outside 1..65535")
        target = round(fire_at_count)
        if target < 0:
            return QueueResult.LATE
        r = self._command(
            MsgType.QUEUE_EJECT,
            epoch=epoch,
            item_id=item_id,
            gate=gate,
            fire_at_count=target & 0xFFFFFFFF,
            pulse_ms=pulse_ms,
        )
        res = Result(r["result"])
        if res == Result.OK:
            return QueueResult.QUEUED
        if res == Result.LATE:
            return QueueResult.LATE
        if res == Result.FULL:
            return QueueResult.FULL
        raise BridgeRejected(f"the MCU refused ejection of item {item_id}: {res.name}")

    def queue_ejects(
        self, ejections: Sequence[tuple[int, int, int | float, int]], *, epoch: int | None = None
    ) -> list[QueueResult | BridgeError]:
        """Several QUEUE_EJECTs (item_id, gate, fire_at_count, pulse_ms) in flight at once, for the decisions
        of one frame: the frames go out back to back and the replies are matched by sequence, so n ejections
        cost about one round trip instead of n. Each gets its QueueResult, or the BridgeError it raised."""
        if len(ejections) <= 1:
            return [self._queue_eject_or_error(e, epoch) for e in ejections]
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            # one waiting thread per command in flight: _transact blocks on its reply event
            self._pool = ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT, thread_name_prefix="bridge-eject")
        return list(self._pool.map(lambda e: self._queue_eject_or_error(e, epoch), ejections))

    def _queue_eject_or_error(
        self, e: tuple[int, int, int | float, int], epoch: int | None
    ) -> QueueResult | BridgeError:
        try:
            return self.queue_eject(*e, epoch=epoch)
        except BridgeError as exc:
            return exc

    def cancel(self, item_id: int) -> bool:
        """True if the item was queued and is now cancelled."""
        return Result(self._command(MsgType.CANCEL, item_id=item_id)["result"]) == Result.OK

    def test_pulse(self, gate: int, pulse_ms: int) -> None:
        info = self._require_info()
        if not 0 <= gate < info.gate_count:
            raise ValueError(f"gate {gate} does not exist: the MCU has gates 0..{info.gate_count - 1}")
        res = Result(self._command(MsgType.TEST_PULSE, gate=gate, pulse_ms=pulse_ms)["result"])
        if res != Result.OK:
            raise BridgeRejected(f"the MCU refused a test pulse on gate {gate}: {res.name}")

    def configure(self, *, stream_period_ms: int) -> None:
        res = Result(self._command(MsgType.CONFIGURE, stream_period_ms=stream_period_ms)["result"])
        if res != Result.OK:
            raise BridgeRejected(f"the MCU refused stream_period_ms={stream_period_ms}: {res.name}")

    def safe_state(self) -> int:
        """Flush the MCU queue and de-energise every gate; returns how many queued ejections were dropped."""
        return int(self._command(MsgType.SAFE)["flushed"])

    def status(self) -> dict[str, Any]:
        f: dict[str, Any] = dict(self._transact(MsgType.STATUS, b"")[0].fields())
        f.pop("acked_seq", None)
        f["state"] = McuState(f["state"]).name
        return f

    def ping(self) -> float:
        """One heartbeat round trip, in seconds."""
        _, rtt = self._heartbeat()
        return rtt

    def add_fired_listener(self, cb: Callable[[FiredEvent], None]) -> None:
        self._fired_listeners.append(cb)

    def add_event_listener(self, cb: Callable[[str, dict[str, Any]], None]) -> None:
        """cb(kind, detail) for "failsafe", "mcu_reset", "relinked", "heartbeat_failed", and "clock_jump"
        (detail: since, detected, shift_s as in ClockJump; located: the pause was found, and encoder_count_at now
        maps the host times in the window right)."""
        self._event_listeners.append(cb)

    @property
    def counters(self) -> dict[str, int]:
        c = dict(self._counters)
        dc = self._decoder.counters
        c["rx_frames"] = dc["frames"]
        c["rx_bytes"] = dc["bytes"]
        for k in ("crc_errors", "cobs_errors", "short_frames", "version_errors", "overruns"):
            c[k] = dc[k]
        return c

    @property
    def connected(self) -> bool:
        return self._port is not None and self._failure is None

    # ---- time and encoder mapping ----------------------------------------------------------------------
    def _reset_sync(self) -> None:
        with self._sync_lock:
            self._us = _Unwrap()
            self._cnt = _Unwrap()
            self._clock = ClockMapping()  # host time <-> MCU time, from the heartbeat round trips
            self._enc_t: deque[float] = deque(maxlen=ENCODER_WINDOW)  # MCU seconds
            self._enc_c: deque[int] = deque(maxlen=ENCODER_WINDOW)
            self._enc_rx: deque[float] = deque(maxlen=ENCODER_WINDOW)  # host time each sample was received

    def _add_encoder_sample(self, mcu_us: int, count: int, rx_ts: float) -> tuple[float, int]:
        t = self._us(mcu_us) / 1e6
        c = self._cnt(count)
        if not self._enc_t or t > self._enc_t[-1]:
            self._enc_t.append(t)
            self._enc_c.append(c)
            self._enc_rx.append(rx_ts)
        return t, c

    def _locate_pauses_locked(self, jump: ClockJump, margin_s: float) -> int:
        """After a clock jump that put the MCU behind (a pause, or several before a heartbeat showed the
        first), find when its clock stopped (firmware_bridge.clock.locate_pauses), so that host times before
        each stop keep the offset that held then: encoder_count_at then places every frame right, in hindsight.
        Only the samples from the last one received before the jump's window opened are read (an earlier
        pause, already located, would read as part of this one). Call with _sync_lock held; returns how many
        pauses it added to the mapping (0: not located)."""
        if jump.shift_s <= 0:
            return 0
        new = self._clock.offset
        assert new is not None
        rx = list(self._enc_rx)
        first = max((i for i, r in enumerate(rx) if r < jump.since), default=0)
        pauses = locate_pauses(list(self._enc_t)[first:], rx[first:], jump.offset_before, new, margin_s)
        self._clock.pauses.extend(pauses)
        return len(pauses)

    def _add_clock_sample(
        self, t_send: float, t_recv: float, mcu_s: float, req_len: int, rep_len: int
    ) -> ClockJump | None:
        """Adds one round trip to the mapping; returns the jump it revealed, if any (emit it outside the lock)."""
        jumps = self._clock.jumps
        self._clock.add(t_send, t_recv, mcu_s, req_len, rep_len)
        if self._clock.jumps == jumps:
            return None
        self._counters["clock_jumps"] += 1
        return self._clock.last_jump

    def _emit_clock_jump(self, jump: ClockJump | None, located: bool = False) -> None:
        """Tell the listeners of a jump. Its window of wrong placements ends now, when the mapping is right,
        not when the reply that showed the jump arrived: a frame captured in between and placed before this
        thread took the lock (on a starved host, tens of ms later) went through the old mapping."""
        if jump is not None:
            log.warning("the MCU clock moved %+.1f ms against the host's (detected %.0f ms after the last good "
                        "sample)%s", jump.shift_s * 1e3, (jump.detected - jump.since) * 1e3,
                        "; pause located, earlier host times re-mapped" if located else "")
            self._emit("clock_jump", {"since": jump.since, "detected": time.monotonic(),
                                      "shift_s": jump.shift_s, "located": located})

    def mcu_to_host(self, mcu_s: float) -> float:
        if self._clock.offset is None:
            raise BridgeError("no clock sample from the MCU yet")
        return self._clock.to_host(mcu_s)

    def encoder_count_at(self, host_ts: float) -> float:
        """The MCU encoder count at host time.monotonic() host_ts (interpolated, or extrapolated from the
        recent belt speed for times after the last sample). BridgeReset for a time before the MCU's boot."""
        with self._sync_lock:
            if self._clock.offset is None or not self._enc_t:
                raise BridgeError("no encoder samples from the MCU yet")
            t = self._clock.to_mcu(host_ts)
            if t < 0:
                raise BridgeReset("that time precedes the MCU's last boot, so its encoder count is unknown")
            ts, cs = self._enc_t, self._enc_c
            i = bisect.bisect_left(ts, t)
            if 0 < i < len(ts):
                t0, t1, c0, c1 = ts[i - 1], ts[i], cs[i - 1], cs[i]
                return c0 + (c1 - c0) * (t - t0) / (t1 - t0)
            if i == 0 and len(ts) and t < ts[0] - 0.5:
                raise BridgeError("that time is older than the encoder samples the link keeps")
            # extrapolate with the speed over the last ~100 ms of samples
            j = len(ts) - 1 if i >= len(ts) else 0
            k = self._recent_start() if j else min(len(ts) - 1, 10)
            if k == j:
                return float(cs[j])
            speed = (cs[-1] - cs[k]) / (ts[-1] - ts[k]) if j else (cs[k] - cs[0]) / (ts[k] - ts[0])
            return cs[j] + speed * (t - ts[j])

    def encoder_speed(self) -> float:
        """Encoder ticks per second of the MCU's own clock, over its last ~100 ms of samples: unlike counts
        at host times, it does not go through the clock mapping, so a clock jump does not disturb it."""
        with self._sync_lock:
            ts, cs = self._enc_t, self._enc_c
            if len(ts) < 2:
                return 0.0
            k = min(self._recent_start(), len(ts) - 2)
            return (cs[-1] - cs[k]) / (ts[-1] - ts[k])

    def _recent_start(self) -> int:
        """Index of the first encoder sample within SPEED_WINDOW_S of the newest (call with _sync_lock held)."""
        return bisect.bisect_left(self._enc_t, self._enc_t[-1] - SPEED_WINDOW_S)

    # ---- internals: commands ---------------------------------------------------------------------------
    def _require_info(self) -> McuInfo:
        if self.info is None or self._port is None:
            raise BridgeNotConnected("the bridge is not connected: call connect() first")
        return self.info

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            self._port_write(data)

    def _write_numbered(self, msg_type: MsgType, payload: bytes, pend: _Pending) -> tuple[int, bytes]:
        """Give a message the next sequence number and write it in one step: (seq, frame). The MCU counts a
        sequence that goes backwards as a gap, and two threads (the heartbeat and a command) that took their
        numbers first and wrote later could cross on a starved host (CI saw two such "gaps" at 55% steal).
        Numbers are only taken here, under the write lock."""
        with self._write_lock:
            self._seq = seq = (self._seq + 1) & 0xFFFF
            frame = p.encode(msg_type, seq, payload)
            self._pending[seq] = pend  # before the write: the reply may come back before write() returns
            try:
                self._port_write(frame)
            except BridgeNotConnected:
                self._pending.pop(seq, None)
                raise
            return seq, frame

    def _port_write(self, data: bytes) -> None:
        """Write under the write lock (the caller holds it)."""
        if self._port is None:
            raise BridgeNotConnected("the bridge is not connected")
        try:
            self._port.write(data)
        except (serial.SerialException, OSError) as exc:
            raise BridgeNotConnected(f"writing to {self.url} failed: {exc}") from exc

    def _transact(self, msg_type: MsgType, payload: bytes) -> tuple[p.Frame, float, float, int]:
        """Send until acknowledged by sequence: (reply, send time, rx time, length).

        The send time is the first try's: a reply can answer any try (the MCU answers a repeat from its
        history), so only the first send and the reply bracket the moment the MCU handled the command. With
        the last try's time, a late answer to the first made a clock sample that contradicted the others
        (counted as a clock jump, and every good sample thrown away)."""
        if self._failure is not None:
            raise self._failure
        pend = _Pending(msg_type)
        t_first = time.monotonic()
        seq, frame = self._write_numbered(msg_type, payload, pend)
        try:
            for attempt in range(self.retries + 1):
                if attempt:
                    self._counters["retries"] += 1
                    log.info("no reply to %s (seq %d) in %.0f ms: sent again", msg_type.name, seq,
                             self.ack_timeout_s * 1000)
                    self._write(frame)
                self._counters["tx_frames"] += 1
                # ack_timeout_s: a reply takes ~1.4 ms at 250000 baud (3 at 115200); past the timeout the frame or its
                # reply was lost (CRC error, overrun), so the same sequence is sent again (the MCU dedupes)
                if pend.event.wait(self.ack_timeout_s):
                    if pend.error is not None:
                        raise pend.error
                    assert pend.reply is not None
                    return pend.reply, t_first, pend.rx_ts, len(frame)
            self._counters["timeouts"] += 1
            raise BridgeTimeout(
                f"the MCU did not acknowledge {msg_type.name} (seq {seq}) in {self.retries + 1} tries of "
                f"{self.ack_timeout_s * 1000:.0f} ms on {self.url}"
            )
        finally:
            self._pending.pop(seq, None)

    def _command(self, msg_type: MsgType, *, epoch: int | None = None, **fields: int) -> dict[str, int]:
        """A world-changing command; relinks once if the MCU went fail-safe, never across a reboot."""
        start_epoch = self.epoch if epoch is None else epoch
        if start_epoch != self.epoch:
            raise BridgeReset(f"the MCU rebooted since that {msg_type.name} was planned; it was not sent")
        payload = p.pack_payload(msg_type, **fields)
        for attempt in range(2):
            gen = self._link_gen
            reply = self._transact(msg_type, payload)[0]
            if reply.type == MsgType.NAK:
                self._counters["naks"] += 1
                nak = reply.fields()
                raise BridgeRejected(f"the MCU refused {msg_type.name}: {Result(nak['result']).name}")
            r = reply.fields()
            if r.get("result") != Result.NOT_LINKED:
                return r
            if self.epoch != start_epoch:
                raise BridgeReset(f"the MCU rebooted while {msg_type.name} was in flight; it was not executed")
            if attempt == 0:
                # the MCU went fail-safe (host silent for 500 ms): its queue is flushed but its count goes on
                self._relink(gen)
                if self.epoch != start_epoch:
                    raise BridgeReset(f"the MCU rebooted while {msg_type.name} was in flight")
        raise BridgeError(f"the MCU stays unlinked: {msg_type.name} was not executed")

    def _hello(self) -> None:
        reply, t_send, t_recv, n = self._transact(MsgType.HELLO, b"")
        if reply.type != MsgType.HELLO_REPLY:
            raise BridgeRejected(f"the MCU answered HELLO with {reply.name}")
        f = reply.fields()
        if f["proto"] != p.PROTOCOL_VERSION:
            raise BridgeRejected(f"the MCU speaks protocol {f['proto']}, this host {p.PROTOCOL_VERSION}")
        self.info = McuInfo(f["proto"], f["fw_version"], f["queue_capacity"], f["gate_count"], f["reset_cause"])
        with self._sync_lock:
            mcu_s, _ = self._add_encoder_sample(f["mcu_us"], f["count"], t_recv)
            jump = self._add_clock_sample(t_send, t_recv, mcu_s, n,
                                          len(p.encode(reply.type, reply.seq, reply.payload)))
        self._emit_clock_jump(jump)
        self.last_heartbeat_ts = t_recv
        self._link_gen += 1
        self._need_relink.clear()

    def _relink(self, gen: int | None = None) -> None:
        with self._relink_lock:
            if gen is not None and gen != self._link_gen:
                return  # another thread relinked meanwhile; a second HELLO would flush what it queued since
            self._hello()
            self._counters["relinks"] += 1
            log.warning("relinked to the MCU on %s (epoch %d)", self.url, self.epoch)
            self._emit("relinked", {"epoch": self.epoch})

    def _heartbeat(self, after_jump: bool = False) -> tuple[dict[str, int], float]:
        reply, t_send, t_recv, n = self._transact(MsgType.HEARTBEAT, b"")
        if reply.type != MsgType.HEARTBEAT_REPLY:
            raise BridgeRejected(f"the MCU answered HEARTBEAT with {reply.name}")
        f = reply.fields()
        provisional = 0
        with self._sync_lock:
            mcu_s, _ = self._add_encoder_sample(f["mcu_us"], f["count"], t_recv)
            jump = self._add_clock_sample(t_send, t_recv, mcu_s, n,
                                          len(p.encode(reply.type, reply.seq, reply.payload)))
            offset = self._clock.offset
            if jump is not None and not after_jump:
                # From this sample on the new offset maps every host time, those before the pause too, until
                # the pause is located: a frame captured before it and placed meanwhile would stand the whole
                # shift off. Located now, in the same hold of the lock; put right after the next round trip.
                provisional = self._locate_pauses_locked(jump, margin_s=t_recv - t_send + 0.001)
        self.last_heartbeat_ts = t_recv
        self._counters["heartbeats"] += 1
        if jump is not None and not after_jump:
            # The round trip that showed the jump may itself be a poor one (sent before a paused MCU stopped,
            # answered after): its offset can be off by most of its round trip, for every frame until the next
            # heartbeat. A clean round trip now puts the mapping right; the window of wrong mapping ends there.
            rtt: float | None = None
            try:
                _, rtt = self._heartbeat(after_jump=True)
                shift = (self._clock.offset or 0.0) - (offset or 0.0)
                jump = ClockJump(jump.since, self.last_heartbeat_ts, jump.shift_s + shift, jump.offset_before)
            except BridgeError as exc:
                log.warning("no round trip after the clock jump: %s", exc)
            with self._sync_lock:  # the provisional stops give way to those of the clean round trip, if any
                for _ in range(provisional):
                    self._clock.pauses.pop()
                located = rtt is not None and self._locate_pauses_locked(jump, margin_s=rtt + 0.001) > 0
            self._emit_clock_jump(jump, located)
        return f, t_recv - t_send

    def _flag_relink(self) -> None:
        self._stale_gen = self._link_gen
        self._need_relink.set()
        self._wake_heart.set()

    def _heartbeat_loop(self) -> None:
        next_t = time.monotonic()
        while not self._stop_heart.is_set():
            try:
                if self._need_relink.is_set():
                    self._relink(self._stale_gen)
                else:
                    f, _ = self._heartbeat()
                    if f["state"] != McuState.LINKED:
                        self._flag_relink()
                        continue
            except BridgeNotConnected as exc:
                log.error("%s", exc)
                return
            except BridgeError as exc:
                self._counters["heartbeat_failures"] += 1
                log.warning("heartbeat failed: %s", exc)
                self._emit("heartbeat_failed", {"error": str(exc)})
            # heartbeat_s (100 ms): well inside the MCU's 500 ms fail-safe even with every retry spent
            next_t = max(next_t + self.heartbeat_s, time.monotonic())
            self._wake_heart.wait(max(0.0, next_t - time.monotonic()))
            self._wake_heart.clear()
            if self._stop_heart.is_set():
                return

    # ---- internals: reader -----------------------------------------------------------------------------
    def _read_loop(self) -> None:
        port = self._port
        while not self._stop.is_set():
            try:
                data = port.read(port.in_waiting or 1)
            except Exception as exc:  # pyserial raises SerialException, OSError or TypeError on a closed fd
                if self._stop.is_set():
                    return
                self._fail(BridgeNotConnected(f"reading from {self.url} failed: {exc}"))
                return
            if not data:
                continue
            rx_ts = time.monotonic()
            for frame in self._decoder.feed(data):
                try:
                    self._dispatch(frame, rx_ts)
                except p.ProtocolError as exc:
                    self._counters["naks"] += 1
                    log.warning("malformed %s from the MCU: %s", frame.name, exc)

    def _fail(self, err: BridgeError) -> None:
        self._failure = err
        log.error("%s", err)
        for pend in list(self._pending.values()):
            pend.error = err
            pend.event.set()

    def _dispatch(self, f: p.Frame, rx_ts: float) -> None:
        if f.type == MsgType.BOOT:
            self._last_mcu_seq = f.seq
            b = f.fields()
            self.epoch += 1
            self._reset_sync()
            if self.info is None:  # the MCU came up while we connected (a simulator starting, DTR reset)
                log.info("the MCU booted (reset cause 0x%02x)", b["reset_cause"])
            else:
                self._counters["mcu_resets"] += 1
                log.warning("the MCU rebooted (reset cause 0x%02x): its queue is lost", b["reset_cause"])
            self._emit("mcu_reset", {"reset_cause": b["reset_cause"], "epoch": self.epoch})
            hello_in_flight = any(
                pp.msg_type == MsgType.HELLO and not pp.event.is_set() for pp in list(self._pending.values())
            )
            if not hello_in_flight:  # else that HELLO reaches the new boot and links it
                self._flag_relink()
            return
        if self._last_mcu_seq is not None and f.seq != (self._last_mcu_seq + 1) & 0xFFFF:
            self._counters["seq_gaps"] += 1
        self._last_mcu_seq = f.seq
        if f.type & 0x80 and f.type not in (MsgType.ENCODER, MsgType.FIRED, MsgType.FAILSAFE):
            if len(f.payload) < 2:
                raise p.ProtocolError("reply without an acknowledged sequence")
            acked = int.from_bytes(f.payload[:2], "little")
            pend = self._pending.get(acked)
            if pend is None or pend.event.is_set():
                self._counters["stale_replies"] += 1  # the answer to a retry already answered
                return
            pend.reply, pend.rx_ts = f, rx_ts
            pend.event.set()
        elif f.type == MsgType.ENCODER:
            e = f.fields()
            with self._sync_lock:
                mcu_s, _ = self._add_encoder_sample(e["mcu_us"], e["count"], rx_ts)
                offset = self._clock.offset
            # A sample that arrives long after the mapping says it was sent: the MCU's clock may have jumped (a
            # paused simulator), or this thread was held up. A heartbeat now tells which, within milliseconds
            # instead of at the next period: ejections decided meanwhile can still be withdrawn.
            if offset is not None and rx_ts - (mcu_s + offset) > PROBE_DELAY_S and rx_ts - self._last_probe_ts > 0.05:
                self._last_probe_ts = rx_ts
                self._counters["clock_probes"] += 1
                self._wake_heart.set()
        elif f.type == MsgType.FIRED:
            self._on_fired(f.fields())
        elif f.type == MsgType.FAILSAFE:
            self._counters["failsafes"] += 1
            log.warning("the MCU went fail-safe (host silent): %d queued ejections dropped", f.fields()["flushed"])
            self._emit("failsafe", f.fields())
            self._flag_relink()

    def _on_fired(self, e: dict[str, int]) -> None:
        self._counters["fired"] += 1
        with self._sync_lock:
            target = self._cnt.near(e["target"])
            actual = self._cnt.near(e["actual"])
            mcu_s = self._us.near(e["mcu_us"]) / 1e6
            host_ts = self._clock.to_host(mcu_s) if self._clock.offset is not None else time.monotonic()
        ev = FiredEvent(e["item_id"], e["gate"], target, actual, host_ts)
        for cb in self._fired_listeners:
            try:
                cb(ev)
            except Exception:
                self._counters["listener_errors"] += 1
                log.exception("fired listener failed")

    def _emit(self, kind: str, detail: dict[str, Any]) -> None:
        for cb in self._event_listeners:
            try:
                cb(kind, detail)
            except Exception:
                self._counters["listener_errors"] += 1
                log.exception("event listener failed")
