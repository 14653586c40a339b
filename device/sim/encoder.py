"""The belt encoder when no MCU simulator owns it (training crops, unit tests)."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Encoder(Protocol):
    """What the twin needs of whoever drives the belt: the MCU simulators implement the same three calls.
    `exposure()` is the host time and count of one instant of the belt, for a camera's stamp: a simulator that
    runs late, or is paused, shows an earlier instant than now."""

    def set_speed(self, ticks_per_s: float) -> None: ...

    def count(self) -> int: ...

    def exposure(self) -> tuple[float, int]: ...


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
        return self.exposure()[1]

    def exposure(self) -> tuple[float, int]:
        """(now, the count now), read together under the lock: this belt never runs late."""
        with self._lock:
            now = self._clock()
            return now, int(self._c0 + self._speed * (now - self._t0))
