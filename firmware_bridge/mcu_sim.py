"""A Python MCU that speaks the bridge protocol over a pty: fast tests and the demo, no simavr needed.

It behaves like firmware/ (same PROTOCOL.md) and owns the belt encoder: the physical count is the integral of
set_speed() over time.monotonic(). An ejection fires at the moment the count reaches its target; the simulator
computes that moment from the speed instead of polling, so the reported count is the target, as an MCU firing
from its encoder interrupt would report it. Wall-clock wake-up jitter of this thread only delays the callback,
never the recorded count or MCU time.

The MCU's own count starts at 0 at each (simulated) boot, as a real MCU's does; count() and the on_gate
callback give the physical count, which equals the MCU's until the first reset().
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import select
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from firmware_bridge import protocol as p
from firmware_bridge.protocol import McuState, MsgType, Result

log = logging.getLogger(__name__)

GateCallback = Callable[[int, bool, int], None]

FW_VERSION = 0x0100
RESET_POWER_ON = 0x01
RESET_EXTERNAL = 0x02
DEDUPE_DEPTH = 16
MAX_PULSE_MS = 2000
LOG_DEPTH = 10_000
# Kinds of timed event, in the order they are taken when due at the same instant: a pulse ends before a fire
# re-energises its gate, and both before the fail-safe.
_PULSE_END, _FIRE, _FAILSAFE = 0, 1, 2


@dataclass
class _Entry:
    item_id: int
    gate: int
    target: int  # MCU count (u32 on the wire; unwrapped here)
    pulse_ms: int


class McuSimulator:
    def __init__(
        self,
        on_gate: GateCallback | None = None,
        *,
        gate_count: int = 8,
        queue_capacity: int = 16,
        failsafe_s: float = p.FAILSAFE_TIMEOUT_S,
    ) -> None:
        self.on_gate = on_gate
        self.gate_count = gate_count
        self.queue_capacity = queue_capacity
        self.failsafe_s = failsafe_s
        self._lock = threading.RLock()
        self._master = -1
        self._slave = -1
        self._wake_r = -1
        self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.port = ""
        # encoder (physical)
        self._base_t = time.monotonic()
        self._base_count = 0.0
        self._speed = 0.0
        self._paused_until = 0.0  # fault injection: the MCU and the belt stand still until then
        self._paused_from = 0.0  # since when
        # the last fires (item, gate, target, actual), bounded: the demo runs this simulator for days
        self.fired_log: deque[tuple[int, int, int, int]] = deque(maxlen=LOG_DEPTH)
        self._boot(RESET_POWER_ON)

    # ---- encoder ---------------------------------------------------------------------------------------
    def _phys_at(self, t: float) -> float:
        # before _base_t only while paused: the belt stands still
        return self._base_count + self._speed * max(0.0, t - self._base_t)

    def _time_of_phys(self, count: int) -> float:
        if self._speed <= 0:
            return math.inf
        return self._base_t + (count - self._base_count) / self._speed

    def _mcu_count_at(self, t: float) -> int:
        return math.floor(self._phys_at(t) + 1e-6) - self._boot_phys

    def set_speed(self, ticks_per_s: float) -> None:
        if ticks_per_s < 0:
            raise ValueError("the belt runs forward only: ticks_per_s must be >= 0")
        with self._lock:
            now = time.monotonic()
            self._process(now)
            at = max(now, self._paused_until)  # a new speed set during a pause starts after it
            self._base_count = self._phys_at(at)
            self._base_t = at
            self._speed = float(ticks_per_s)
        self._wake()

    def count(self) -> int:
        with self._lock:
            return math.floor(self._phys_at(time.monotonic()) + 1e-6)

    def exposure(self) -> tuple[float, int]:
        """(host time, count) of one instant of the belt, for a camera: during a pause the belt shows where it
        stopped, and that is the moment the picture shows (as FirmwareSimulator.exposure for a late harness)."""
        with self._lock:
            now = time.monotonic()
            count = math.floor(self._phys_at(now) + 1e-6)
            return (self._paused_from if now < self._paused_until else now), count

    @property
    def speed(self) -> float:
        return self._speed

    # ---- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> str:
        self._master, self._slave = os.openpty()
        # raw mode: no echo, no CR/LF translation, or the MCU would read its own frames back
        tty.setraw(self._slave)
        tty.setraw(self._master)
        os.set_blocking(self._master, False)
        self._wake_r, self._wake_w = os.pipe()
        self.port = os.ttyname(self._slave)
        self._stop.clear()
        with self._lock:
            self._boot(RESET_POWER_ON)
        self._thread = threading.Thread(target=self._run, name="mcu-sim", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = self._wake_r = self._wake_w = -1

    def __enter__(self) -> McuSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Fault injection: the MCU reboots (queue lost, gates off, its count restarts at 0, BOOT sent)."""
        with self._lock:
            self._all_gates_off(time.monotonic())
            self._boot(RESET_EXTERNAL)
            self._send(MsgType.BOOT, reset_cause=self.reset_cause, fw_version=FW_VERSION, proto=p.PROTOCOL_VERSION)
        self._wake()

    def _boot(self, cause: int) -> None:
        now = time.monotonic()
        self.reset_cause = cause
        self.state = McuState.UNLINKED
        self._boot_t = now
        self._boot_phys = math.floor(self._phys_at(now) + 1e-6)
        self._queue: list[_Entry] = []
        self._gate_until: dict[int, float] = {}
        self._history: deque[tuple[int, int, int, int]] = deque(maxlen=DEDUPE_DEPTH)  # seq,type,result,extra
        self._tx_seq = 0
        self._last_host_seq: int | None = None
        self._last_rx = now
        self._stream_ms = p.ENCODER_STREAM_PERIOD_MS
        self._next_stream = now
        self._decoder = p.FrameDecoder()
        self.mcu_counters = {
            "rx_frames": 0,
            "tx_frames": 0,
            "seq_gaps": 0,
            "duplicates": 0,
            "fired": 0,
            "late": 0,
            "full": 0,
            "failsafes": 0,
            "tx_dropped": 0,
        }

    def pause(self, seconds: float) -> None:
        """Fault injection: the MCU stops for `seconds`, its clock and the belt with it, while the host runs on;
        afterwards its clock lags the host's by that much more. This is what a simulated MCU does when the
        machine does not run it (the simavr harness pauses its world when it falls 20 ms behind). Frames the
        host sends meanwhile wait in the pty, as on the UART."""
        if not 0 < seconds <= 10:
            raise ValueError("pause: seconds must be in (0, 10]")
        with self._lock:
            now = time.monotonic()
            self._process(now)
            until = now + seconds
            if now >= self._paused_until:
                self._paused_from = now
            self._base_count = self._phys_at(now)
            self._base_t = until
            self._boot_t += seconds
            self._gate_until = {g: t + seconds for g, t in self._gate_until.items()}
            self._next_stream += seconds
            self._last_rx += seconds
            self._paused_until = until
        self._wake()

    def _mcu_us(self, t: float) -> int:
        return int((t - self._boot_t) * 1e6) & 0xFFFFFFFF

    # ---- the MCU main loop -----------------------------------------------------------------------------
    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")

    def _run(self) -> None:
        while not self._stop.is_set():
            paused = self._paused_until - time.monotonic()
            if paused > 0:
                self._stop.wait(paused)
                continue
            with self._lock:
                now = time.monotonic()
                # bytes already waiting in the pty reached a real MCU's UART in time: the host was not silent
                self._process(now, failsafe=not self._input_waiting())
                timeout = max(0.0, self._next_deadline() - time.monotonic())
            try:
                ready, _, _ = select.select([self._master, self._wake_r], [], [], min(timeout, 0.05))
            except (OSError, ValueError):
                return
            if self._wake_r in ready:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 4096)
            if self._master in ready:
                try:
                    data = os.read(self._master, 4096)
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                        continue
                    return
                with self._lock:
                    now = time.monotonic()
                    # fires due before this frame arrived happen first; the fail-safe waits until it is handled
                    self._process(now, failsafe=False)
                    for frame in self._decoder.feed(data):
                        self._handle(frame, now)

    def _input_waiting(self) -> bool:
        try:
            return bool(select.select([self._master], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    def _next_event(self, failsafe: bool = True) -> tuple[float, int, object]:
        """The earliest of: a queued fire, a pulse's end, the fail-safe: (time, order, what)."""
        events: list[tuple[float, int, object]] = [(until, _PULSE_END, g) for g, until in self._gate_until.items()]
        events += [(self._time_of_phys(e.target + self._boot_phys), _FIRE, e) for e in self._queue]
        if failsafe and self.state == McuState.LINKED:
            events.append((self._last_rx + self.failsafe_s, _FAILSAFE, None))
        return min(events, key=lambda ev: ev[:2], default=(math.inf, 0, None))

    def _next_deadline(self) -> float:
        d = self._next_stream if self._stream_ms else math.inf
        return min(d, self._next_event()[0])

    def _process(self, now: float, failsafe: bool = True) -> None:
        """Everything due up to `now`, one event at a time in time order, as the firmware meets them.

        When this thread was held up (a loaded or frozen host), several events are due at once. Taking them in
        their own order matters: a pulse that ended before the next fire on the same gate must end first, or
        the twin sees one pulse from the first fire to the last and every item passing in between goes into
        that bin; and fires due after the fail-safe time are flushed with the queue, not fired.

        When this thread (not the host) was held up, the host's frames are already waiting in the pty: they
        reached a real MCU's UART in time, so `failsafe=False` keeps the fail-safe back until they are handled.
        """
        while True:
            t, kind, what = self._next_event(failsafe)
            if t > now:
                break
            if kind == _PULSE_END:
                assert isinstance(what, int)
                del self._gate_until[what]
                self._gate_cb(what, False, t)
            elif kind == _FIRE:
                assert isinstance(what, _Entry)
                self._fire(what, t)
            else:
                flushed = len(self._queue)
                self._queue.clear()
                self._all_gates_off(t)
                self.state = McuState.FAILSAFE
                self.mcu_counters["failsafes"] += 1
                self._send(MsgType.FAILSAFE, reason=p.FailsafeReason.HOST_SILENT, flushed=flushed)
        if self._stream_ms and now >= self._next_stream:
            self._send(MsgType.ENCODER, mcu_us=self._mcu_us(now), count=self._mcu_count_at(now) & 0xFFFFFFFF)
            self._next_stream = max(self._next_stream + self._stream_ms / 1000, now)

    def _fire(self, e: _Entry, t: float) -> None:
        """t is the moment the count reaches e.target (from the speed), so the count then is e.target: taken
        as is, since recomputing it from t in floating point can land a hair below the edge."""
        self._queue.remove(e)
        actual = e.target
        energised = e.gate in self._gate_until
        self._gate_until[e.gate] = max(self._gate_until.get(e.gate, 0.0), t + e.pulse_ms / 1000)
        if not energised:
            self._gate_cb(e.gate, True, t, count=e.target + self._boot_phys)
        self.mcu_counters["fired"] += 1
        self.fired_log.append((e.item_id, e.gate, e.target, actual))
        self._send(
            MsgType.FIRED,
            item_id=e.item_id,
            gate=e.gate,
            target=e.target & 0xFFFFFFFF,
            actual=actual & 0xFFFFFFFF,
            mcu_us=self._mcu_us(t),
        )

    def _gate_cb(self, gate: int, on: bool, t: float, count: int | None = None) -> None:
        if self.on_gate is not None:
            try:
                self.on_gate(gate, on, math.floor(self._phys_at(t) + 1e-6) if count is None else count)
            except Exception:  # a failing observer must not stop the MCU
                log.exception("on_gate callback failed")

    def _all_gates_off(self, now: float) -> None:
        for gate in list(self._gate_until):
            del self._gate_until[gate]
            self._gate_cb(gate, False, now)

    # ---- frames ----------------------------------------------------------------------------------------
    def _send(self, msg_type: MsgType, **fields: int) -> None:
        frame = p.encode_message(msg_type, self._tx_seq, **fields)
        self._tx_seq = (self._tx_seq + 1) & 0xFFFF
        if self._master < 0:
            return
        try:
            os.write(self._master, frame)
            self.mcu_counters["tx_frames"] += 1
        except OSError:  # nobody reads the pty: a UART's TX is never held back by the receiver either
            self.mcu_counters["tx_dropped"] += 1

    def _reply(self, cmd: p.Frame, **fields: int) -> None:
        self._send(MsgType(cmd.type | 0x80), acked_seq=cmd.seq, **fields)

    def _handle(self, f: p.Frame, now: float) -> None:
        self.mcu_counters["rx_frames"] += 1
        self._last_rx = now
        try:
            t = MsgType(f.type)
            args = f.fields()
        except ValueError:
            known = f.type in MsgType._value2member_map_
            self._send(
                MsgType.NAK,
                acked_seq=f.seq,
                result=Result.BAD_LENGTH if known else Result.UNKNOWN_TYPE,
                bad_type=f.type,
            )
            return
        if t >= 0x80:
            self._send(MsgType.NAK, acked_seq=f.seq, result=Result.UNKNOWN_TYPE, bad_type=f.type)
            return
        if t in p.WORLD_CHANGING:
            for seq, typ, result, extra in self._history:
                if seq == f.seq and typ == f.type:
                    self.mcu_counters["duplicates"] += 1
                    self._answer(f, t, result, extra)
                    return
        if (
            t != MsgType.HELLO
            and self._last_host_seq is not None
            and f.seq
            not in (
                self._last_host_seq,
                (self._last_host_seq + 1) & 0xFFFF,
            )
        ):
            self.mcu_counters["seq_gaps"] += 1
        self._last_host_seq = f.seq

        if t == MsgType.HELLO:
            self._queue.clear()
            self._all_gates_off(now)
            self._history.clear()
            self.state = McuState.LINKED
            self._reply(
                f,
                proto=p.PROTOCOL_VERSION,
                fw_version=FW_VERSION,
                queue_capacity=self.queue_capacity,
                gate_count=self.gate_count,
                reset_cause=self.reset_cause,
                mcu_us=self._mcu_us(now),
                count=self._mcu_count_at(now) & 0xFFFFFFFF,
            )
            return
        if t == MsgType.HEARTBEAT:
            self._reply(
                f,
                state=self.state,
                queue_depth=len(self._queue),
                mcu_us=self._mcu_us(now),
                count=self._mcu_count_at(now) & 0xFFFFFFFF,
            )
            return
        if t == MsgType.STATUS:
            dc = self._decoder.counters
            mc = self.mcu_counters
            gates = sum(1 << g for g in self._gate_until)
            self._reply(
                f,
                state=self.state,
                queue_depth=len(self._queue),
                mcu_us=self._mcu_us(now),
                count=self._mcu_count_at(now) & 0xFFFFFFFF,
                gates=gates,
                reset_cause=self.reset_cause,
                rx_frames=mc["rx_frames"],
                tx_frames=mc["tx_frames"] & 0xFFFFFFFF,
                crc_errors=min(dc["crc_errors"], 0xFFFF),
                cobs_errors=min(dc["cobs_errors"] + dc["short_frames"] + dc["version_errors"], 0xFFFF),
                overruns=min(dc["overruns"], 0xFFFF),
                seq_gaps=min(mc["seq_gaps"], 0xFFFF),
                duplicates=min(mc["duplicates"], 0xFFFF),
                fired=mc["fired"],
                late=min(mc["late"], 0xFFFF),
                full=min(mc["full"], 0xFFFF),
                failsafes=min(mc["failsafes"], 0xFFFF),
            )
            return
        if t == MsgType.SAFE:
            flushed = len(self._queue)
            self._queue.clear()
            self._all_gates_off(now)
            self._record(f, Result.OK, flushed)
            return
        if self.state != McuState.LINKED:
            # not recorded: after HELLO the host sends it again under a new sequence number
            self._answer(f, t, Result.NOT_LINKED, 0)
            return
        result, extra = Result.OK, 0
        if t == MsgType.QUEUE_EJECT:
            result = self._queue_eject(args, now)
        elif t == MsgType.CANCEL:
            before = len(self._queue)
            self._queue = [e for e in self._queue if e.item_id != args["item_id"]]
            result = Result.OK if len(self._queue) < before else Result.NOT_FOUND
        elif t == MsgType.TEST_PULSE:
            if args["gate"] >= self.gate_count or not 1 <= args["pulse_ms"] <= MAX_PULSE_MS:
                result = Result.BAD_ARG
            else:
                if args["gate"] not in self._gate_until:
                    self._gate_cb(args["gate"], True, now)
                self._gate_until[args["gate"]] = max(
                    self._gate_until.get(args["gate"], 0.0), now + args["pulse_ms"] / 1000
                )
        elif t == MsgType.CONFIGURE:
            if args["stream_period_ms"] > 1000:
                result = Result.BAD_ARG
            else:
                self._stream_ms = args["stream_period_ms"]
                self._next_stream = now
        self._record(f, result, extra)

    def _queue_eject(self, a: dict[str, int], now: float) -> Result:
        if a["gate"] >= self.gate_count or not 1 <= a["pulse_ms"] <= MAX_PULSE_MS:
            return Result.BAD_ARG
        count = self._mcu_count_at(now)
        # the wire carries u32: the target is the next count congruent to it (wrap-safe signed difference)
        diff = (a["fire_at_count"] - count) & 0xFFFFFFFF
        if diff == 0 or diff >= 0x80000000:
            self.mcu_counters["late"] += 1
            return Result.LATE
        if any(e.item_id == a["item_id"] for e in self._queue):
            self.mcu_counters["duplicates"] += 1
            return Result.OK
        if len(self._queue) >= self.queue_capacity:
            self.mcu_counters["full"] += 1
            return Result.FULL
        self._queue.append(_Entry(a["item_id"], a["gate"], count + diff, a["pulse_ms"]))
        return Result.OK

    def _record(self, f: p.Frame, result: int, extra: int) -> None:
        self._history.append((f.seq, f.type, result, extra))
        self._answer(f, MsgType(f.type), result, extra)

    def _answer(self, f: p.Frame, t: MsgType, result: int, extra: int) -> None:
        now = time.monotonic()
        if t == MsgType.QUEUE_EJECT:
            self._reply(f, result=result, queue_depth=len(self._queue), count=self._mcu_count_at(now) & 0xFFFFFFFF)
        elif t == MsgType.SAFE:
            self._reply(f, result=result, flushed=extra)
        else:
            self._reply(f, result=result)
