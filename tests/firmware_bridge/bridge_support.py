"""Helpers for the firmware_bridge tests: the root conftest's tool policy, polling, gate and raw-port probes.

tests/firmware_bridge has its own conftest.py, so `import conftest` here would find that one: the root one is
loaded by path, keeping its skip-or-fail policy (EDGESORT_REQUIRE_ALL) in one place.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import serial

from firmware_bridge import protocol as p
from firmware_bridge.protocol import MsgType

REPO = Path(__file__).resolve().parents[2]

_spec = importlib.util.spec_from_file_location("edgesort_root_conftest", REPO / "tests" / "conftest.py")
assert _spec is not None and _spec.loader is not None
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)
require_tool: Callable[[str], str] = _root.require_tool


def require_file(path: str, apt: str) -> None:
    """Like require_tool, for a header or library file."""
    if not Path(path).exists():
        reason = f"{path} is missing (apt: {apt})"
        if os.environ.get("EDGESORT_REQUIRE_ALL") == "1":
            pytest.fail(reason + " and EDGESORT_REQUIRE_ALL=1")
        pytest.skip(reason)


def wait_for(cond: Callable[[], object], timeout: float = 30.0) -> None:
    """Poll until cond() holds; the timeout only bounds a hang, it is not a performance check (30 s: a starved
    VM has taken more than 10 s for the simulated MCU's 2 s of belt)."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


class Gates:
    """Records on_gate callbacks: (gate, energised, count)."""

    def __init__(self) -> None:
        self.events: list[tuple[int, bool, int]] = []
        self.lock = threading.Lock()

    def __call__(self, gate: int, on: bool, count: int) -> None:
        with self.lock:
            self.events.append((gate, on, count))

    def rises(self) -> list[tuple[int, int]]:
        with self.lock:
            return [(g, c) for g, on, c in self.events if on]

    def energised(self) -> set[int]:
        state: dict[int, bool] = {}
        with self.lock:
            for g, on, _ in self.events:
                state[g] = on
        return {g for g, on in state.items() if on}


class RawPort:
    """The pty driven by hand, for what BridgeLink would never send (duplicates, silence, corruption)."""

    def __init__(self, port: str) -> None:
        self.s = serial.serial_for_url(port, baudrate=p.DEFAULT_BAUD, timeout=0.05)
        self.dec = p.FrameDecoder()
        self.seq = 0
        self.backlog: list[p.Frame] = []

    def write(self, data: bytes) -> None:
        self.s.write(data)

    def send(self, t: MsgType, seq: int | None = None, **fields: int) -> int:
        if seq is None:
            self.seq += 1
            seq = self.seq
        self.s.write(p.encode_message(t, seq, **fields))
        return seq

    def expect(self, t: MsgType, timeout: float = 3.0) -> p.Frame:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for i, f in enumerate(self.backlog):
                if f.type == t:
                    return self.backlog.pop(i)
            self.backlog += self.dec.feed(self.s.read(self.s.in_waiting or 1))
        raise AssertionError(f"no {t.name} from the MCU")

    def close(self) -> None:
        self.s.close()


class LossyProxy:
    """A pty in front of the MCU's pty that drops the first reply to each QUEUE_EJECT sequence number, the way
    a CRC error on the way back would lose it. The host opens `proxy.port`."""

    def __init__(self, mcu_port: str) -> None:
        self.mcu = serial.serial_for_url(mcu_port, baudrate=p.DEFAULT_BAUD, timeout=0.01)
        self.master, self.slave = os.openpty()
        import tty

        tty.setraw(self.master)
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.dropped = 0
        self._seen: set[int] = set()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._host_to_mcu, daemon=True),
            threading.Thread(target=self._mcu_to_host, daemon=True),
        ]

    def __enter__(self) -> LossyProxy:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self.mcu.close()
        os.close(self.master)
        os.close(self.slave)

    def _host_to_mcu(self) -> None:
        import select

        while not self._stop.is_set():
            r, _, _ = select.select([self.master], [], [], 0.01)
            if r:
                try:
                    self.mcu.write(os.read(self.master, 4096))
                except OSError:
                    return

    def _mcu_to_host(self) -> None:
        dec = p.FrameDecoder()
        while not self._stop.is_set():
            data = self.mcu.read(self.mcu.in_waiting or 1)
            for f in dec.feed(data):
                if f.type == MsgType.QUEUE_REPLY:
                    acked = f.fields()["acked_seq"]
                    if acked not in self._seen:
                        self._seen.add(acked)
                        self.dropped += 1
                        continue
                os.write(self.master, p.encode(f.type, f.seq, f.payload))
