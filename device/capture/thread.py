"""The capture thread: reads a source as fast as it delivers, keeps only the latest frame, and never waits on
the consumer. A frame replaced before anyone took it is counted as dropped (STYLE 10).

Views of one exposure (a multi-view source delivers them one after the other with the same capture time)
are kept together: the latest exposure wins, not the latest view.

A source that delivers nothing for `stall_timeout_s`, or fails, is closed and reopened with exponential
back-off; the reopen count and the current state are in `stats()`. A finite source that ends sets `ended`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from device.capture.base import CaptureError, CaptureSource, EndOfStreamError
from device.frames import Frame

log = logging.getLogger(__name__)

READ_POLL_S = 0.1  # how long one read waits, so stop() and stall checks are never later than this
BACKOFF_FIRST_S = 0.25  # first wait before a reopen; doubles after each failed reopen
BACKOFF_MAX_S = 8.0  # a camera unplugged for an hour is retried every 8 s, not hammered


class CaptureThread:
    def __init__(
        self,
        source: CaptureSource,
        *,
        stall_timeout_s: float = 2.0,
        reopen: bool = True,
        backoff_first_s: float = BACKOFF_FIRST_S,
        backoff_max_s: float = BACKOFF_MAX_S,
    ) -> None:
        self.source = source
        self.stall_timeout_s = stall_timeout_s
        self.reopen = reopen
        self.backoff_first_s = backoff_first_s
        self.backoff_max_s = backoff_max_s
        self._cond = threading.Condition()
        self._slot: deque[Frame] = deque()  # the views of the latest exposure not yet taken
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ended = False
        self.error: CaptureError | None = None  # set when the thread gave up (reopen disabled)
        self.frames = 0
        self.dropped = 0
        self.stalls = 0
        self.reopens = 0
        self.state = "closed"
        self._last_frame_ts = 0.0
        self._arrivals: deque[float] = deque(maxlen=256)

    # lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Open the source here (so a wrong URI fails the caller at once), then read in a thread."""
        self.source.open()
        self.state = "running"
        self._last_frame_ts = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.source.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)  # a driver stuck in read: give up on it rather than hang shutdown
            if self._thread.is_alive():
                log.warning(
                    "%s: capture thread did not stop within 5 s (driver blocked in read)", self.source.name
                )
        self._close_source()
        self.state = "closed"

    def __enter__(self) -> CaptureThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # consumer side ---------------------------------------------------------------------------------------
    def get(self, timeout: float) -> Frame | None:
        """The newest frame not yet taken, waiting up to `timeout`; None on timeout or at the end."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._slot:
                if self.ended or self.error is not None or self._stop.is_set():
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self._slot.popleft()

    @property
    def finished(self) -> bool:
        """True when no frame will come again (ended, or failed with reopen off) and the slot is empty."""
        with self._cond:
            return not self._slot and (self.ended or self.error is not None)

    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        a = list(self._arrivals)
        fps = (len(a) - 1) / (a[-1] - a[0]) if len(a) > 1 and a[-1] > a[0] else 0.0
        return {
            "frames": self.frames,
            "dropped": self.dropped,
            "stalls": self.stalls,
            "reopens": self.reopens,
            "fps": fps,
            "state": "stalled"
            if self.state == "running" and now - self._last_frame_ts > self.stall_timeout_s
            else self.state,
        }

    # reader side -----------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.source.read(READ_POLL_S)
            except EndOfStreamError as exc:
                log.info("%s", exc)
                self._finish(ended=True)
                return
            except CaptureError as exc:
                if not self._recover(f"read failed: {exc}"):
                    return
                continue
            except Exception as exc:  # a driver/OpenCV error must not kill the thread silently
                if not self._recover(f"read raised {type(exc).__name__}: {exc}"):
                    return
                continue
            now = time.monotonic()
            if frame is None:
                if now - self._last_frame_ts > self.stall_timeout_s:
                    self.stalls += 1
                    if not self._recover(f"no frame for {now - self._last_frame_ts:.1f} s (stalled)"):
                        return
                continue
            self._last_frame_ts = now
            self._arrivals.append(now)
            with self._cond:
                self.frames += 1
                last = self._slot[-1] if self._slot else None
                if last is None or last.capture_ts != frame.capture_ts or last.view == frame.view:
                    self.dropped += len(self._slot)  # latest exposure wins: the consumer was busy
                    self._slot.clear()
                self._slot.append(frame)
                self._cond.notify()

    def _recover(self, reason: str) -> bool:
        """Close and reopen the source with back-off until it opens or stop() is called."""
        if not self.reopen:
            log.error("%s: %s; reopen is off, capture stops", self.source.name, reason)
            self._finish(error=CaptureError(f"{self.source.name}: {reason}"))
            return False
        log.warning("%s: %s; reopening", self.source.name, reason)
        self.state = "reopening"
        delay = self.backoff_first_s
        while not self._stop.is_set():
            self._close_source()
            try:
                self.source.open()
            except CaptureError as exc:
                log.warning("%s: reopen failed (%s); next try in %.2f s", self.source.name, exc, delay)
                self._stop.wait(delay)  # back-off: a missing camera is retried, never busy-looped
                delay = min(delay * 2, self.backoff_max_s)
                continue
            self.reopens += 1
            self.state = "running"
            self._last_frame_ts = time.monotonic()
            log.info("%s: reopened", self.source.name)
            return True
        return False

    def _finish(self, *, ended: bool = False, error: CaptureError | None = None) -> None:
        with self._cond:
            self.ended = ended
            self.error = error
            self.state = "ended" if ended else "failed"
            self._cond.notify_all()

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception as exc:  # closing a vanished device may raise; it is gone either way
            log.debug("%s: close raised %s", self.source.name, exc)
