"""WATCHDOG=1 only while the main loop makes progress.

A keep-alive sent from a timer thread proves only that the timer thread runs. This one is sent from the main
loop, and only when both a fresh camera frame and a fresh MCU heartbeat arrived since the previous ping, so a
hung loop, a stalled camera or a dead MCU link all stop the pings and systemd restarts the service after
WatchdogSec= (with SIGABRT: `faulthandler`, enabled by ServiceSignals, prints every thread's stack to the
journal first).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from device.service.notify import Notifier

log = logging.getLogger("edgesort.service")


class ProgressWatchdog:
    """Call `tick(frame_seq, mcu_heartbeat_ts)` once per main-loop iteration.

    `frame_seq` is the sequence number of the newest frame the loop handled; `mcu_heartbeat_ts` is the host
    `time.monotonic()` of the newest valid packet from the MCU (it must advance while the belt stands still).
    A ping goes out at half of $WATCHDOG_USEC, the rate sd_watchdog_enabled(3) recommends.
    """

    def __init__(self, notifier: Notifier, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._notifier = notifier
        self._clock = clock
        period = notifier.watchdog_period()
        self.interval_s: float | None = None if period is None else period / 2
        self._seq: int | None = None
        self._heartbeat = 0.0
        self._last_ping = 0.0
        self._withheld = False
        self.pings = 0

    @property
    def enabled(self) -> bool:
        return self.interval_s is not None

    def tick(self, frame_seq: int, mcu_heartbeat_ts: float) -> bool:
        """Ping if a ping is due and the loop made progress since the last one. True when a ping went out."""
        if self.interval_s is None:
            return False
        now = self._clock()
        if self._seq is None:  # the first tick is the baseline: progress is counted from here
            self._seq, self._heartbeat, self._last_ping = frame_seq, mcu_heartbeat_ts, now
            return False
        if now - self._last_ping < self.interval_s:
            return False
        fresh_frame = frame_seq != self._seq  # '!=': a camera reopened from seq 0 is progress too
        fresh_heartbeat = mcu_heartbeat_ts > self._heartbeat
        if fresh_frame and fresh_heartbeat:
            if self._withheld:
                log.info("watchdog: progress resumed after %.1f s; pinging again", now - self._last_ping)
                self._withheld = False
            self._notifier.watchdog()
            self._seq, self._heartbeat, self._last_ping = frame_seq, mcu_heartbeat_ts, now
            self.pings += 1
            return True
        if not self._withheld:
            checks = (("no new camera frame", fresh_frame), ("no MCU heartbeat", fresh_heartbeat))
            missing = " and ".join(what for what, ok in checks if not ok)
            log.warning("watchdog: %s for %.1f s; withholding WATCHDOG=1 (systemd restarts the service after "
                        "WatchdogSec)", missing, now - self._last_ping)
            self._notifier.status(f"stalled: {missing}")
            self._withheld = True
        return False
