"""The belt encoder when no MCU simulator owns it (training crops, unit tests)."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Encoder(Protocol):
    """What the twin needs of whoever drives the belt: the MCU simulators implement the same two calls (and
    `exposure()`, the host time and count of one instant of a belt that may run late: see Twin.exposure)."""

    def set_speed(self, ticks_per_s: float) -> None: ...

    def count(self) -> int: ...


class FreeEncoder:
    """count = integral of the speed over time.monotonic(); thread-safe."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._t0 = clock()
        self._c0 = 0.0
        self._speed = 0.0

    def set_speed(self, ticks_per_s: float) -> None:
        with self._lock:
            now = self._clock()
            self._c0 += self._speed * (now - self._t0)
            self._t0, self._speed = now, ticks_per_s

    def count(self) -> int:
        with self._lock:
            return int(self._c0 + self._speed * (self._clock() - self._t0))
