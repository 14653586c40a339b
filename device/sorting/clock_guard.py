"""Which frames were placed on the belt through a broken clock mapping, and by how much they may be off.

A frame's belt position is the MCU's encoder count at the frame's capture time, found through the host <-> MCU
clock mapping (firmware_bridge/clock.py). If the MCU's clock moves against the host's (a simulated MCU that
paused while the host was starved; a real one that stalled), the mapping stays wrong until the next heartbeat
shows the jump, up to 100 ms later. Every frame captured in between may be placed off by the belt's travel
during the shift, and an ejection decided from one may fire on a neighbour.

The link reports each jump with its window: since (the last round trip that agreed) and detected, and the
shift. Mostly it also locates the pause (when the MCU's clock stopped, from the ENCODER stream) and from then on
maps every host time right, earlier ones included: the sorter then re-places the tracks last seen in the
window and queues their ejections again at once. A jump it could not locate leaves the positions in the window
uncertain: this guard turns it into a distance in mm at the belt's speed and answers, per capture time, how far
a position may be off; the sorter withdraws the ejections decided from such positions and decides no track on
one (device/sorting/tracking.py).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

KEEP_S = 10.0  # windows older than this are forgotten: no frame that old is still in the pipeline
# Jumps closer together than this, one of them not located, are a burst: the mapping keeps breaking where the
# link cannot say when, so no position from the burst is trusted and the line ejects nothing until HOLD_S after
# its last jump (the default bin is the safe answer). Located jumps, however close, are not a burst: the link
# locates each pause of a jump (several if the simulator paused again before a heartbeat showed the first,
# firmware_bridge/clock.py), and the tracker keeps each item's frames on its own track through the frames placed
# wrong before that (Tracker.frame_shift). Before those two (session 9), every burst stood the line down, and
# had to: with the rule off, tracks took their neighbours' items in jump windows and strokes came one pitch
# late. With both, scripted bursts of located jumps sort as well as no jumps (docs/BENCHMARKS.md, session 10).
BURST_GAP_S = 1.0
HOLD_S = 1.0
MIN_ERROR_MM = 1.0  # a jump that moved positions less than this (the belt stood still) is ignored


@dataclass(frozen=True, slots=True)
class JumpWindow:
    since: float  # host time.monotonic(): the first capture time that may be placed wrong
    detected: float  # the last: frames captured after it are placed with the corrected mapping
    shift_s: float  # how far the MCU clock moved against the host's (host - MCU offset, new minus old)
    located: bool = False  # the link found when the MCU's clock stopped: times in the window now map right
    error_mm: float = 0.0  # |shift| at the belt's speed: how far a position in the window may be off

    def covers(self, capture_ts: float) -> bool:
        return self.since <= capture_ts <= self.detected


class ClockGuard:
    """Clock jumps reported by the link (its thread), taken and measured by the sorter (its thread)."""

    def __init__(self) -> None:
        self._reported: deque[JumpWindow] = deque()
        self._lock = threading.Lock()
        self.windows: list[JumpWindow] = []  # measured; the sorter thread's only
        self.jumps = 0
        self.bursts = 0
        self.burst_since = 0.0  # the first capture time of the latest burst (its first jump's window start)
        self.unstable_until = 0.0  # host time until which the line must not eject (a burst of jumps)
        self._last: JumpWindow | None = None

    def report(self, since: float, detected: float, shift_s: float, located: bool = False) -> None:
        """From the link's event listener: one ClockJump."""
        with self._lock:
            self._reported.append(JumpWindow(since, detected, shift_s, located))

    def pending(self) -> bool:
        """Jumps reported and not yet taken (cheap: checked on every frame)."""
        return bool(self._reported)

    def take(self, belt_mm_per_s: float) -> list[JumpWindow]:
        """The jumps reported since the last call that moved positions by MIN_ERROR_MM or more, measured at the
        belt's current speed; they are remembered for `uncertainty_mm`."""
        with self._lock:
            new, self._reported = list(self._reported), deque()
        self.jumps += len(new)
        measured = [JumpWindow(w.since, w.detected, w.shift_s, w.located, abs(w.shift_s) * belt_mm_per_s)
                    for w in new]
        measured = [w for w in measured if w.error_mm >= MIN_ERROR_MM]
        for w in measured:
            last = self._last
            if last is not None and w.detected - last.detected < BURST_GAP_S and not (w.located and last.located):
                if self.unstable_until < last.detected:  # a new burst: it began with the previous jump
                    self.bursts += 1
                    self.burst_since = last.since
                self.unstable_until = max(self.unstable_until, w.detected + HOLD_S)
            self._last = w
        self.windows.extend(w for w in measured if not w.located)
        if self.windows:
            newest = max(w.detected for w in self.windows)
            self.windows = [w for w in self.windows if w.detected > newest - KEEP_S]
        return measured

    def unstable(self, now: float) -> bool:
        """Inside a burst of jumps, or less than HOLD_S after it: eject nothing."""
        return now < self.unstable_until

    def uncertainty_mm(self, capture_ts: float) -> float:
        """How far the belt position of a frame captured at capture_ts may be off (0: the mapping held)."""
        return max((w.error_mm for w in self.windows if w.covers(capture_ts)), default=0.0)
