"""The twin's camera: a capture source (device.capture's CaptureSource protocol) that renders in real time."""

from __future__ import annotations

import time

from device.frames import Frame
from device.sim.twin import Twin


class SimCamera:
    """Renders the twin at `fps`; each frame carries its capture time and, in `meta`, the twin's truth.

    The sorter must not read `meta["truth"]` to decide anything: it is there for the demo's report.
    """

    def __init__(self, twin: Twin, view: int = 0, name: str = "sim") -> None:
        self.twin = twin
        self.view = view
        self.name = name
        self._period = 1.0 / twin.p.fps
        self._next = 0.0
        self._seq = 0

    def open(self) -> None:
        self._next = time.monotonic()

    def read(self, timeout: float) -> Frame | None:
        wait = self._next - time.monotonic()
        if wait > timeout:
            time.sleep(timeout)
            return None
        if wait > 0:
            time.sleep(wait)
        # a slow consumer must not make frames bunch up afterwards: the schedule never runs behind "now"
        self._next = max(self._next + self._period, time.monotonic() - self._period)
        capture_ts, count = self.twin.exposure()
        image, count, truth = self.twin.render(self.view, count)
        self._seq += 1
        return Frame(image, capture_ts, self._seq, self.name, self.view, {"count": count, "truth": truth})

    def close(self) -> None:
        pass


class MultiViewCamera:
    """Several synchronised cameras on the same stretch of belt (CUCUMBER-9 prototype 2 used three views).

    All views are exposed at the same instant and delivered one after the other, so one pipeline sees them
    interleaved and the tracker merges the views of each item.
    """

    def __init__(self, twin: Twin, views: int, name: str = "sim") -> None:
        self.twin = twin
        self.views = views
        self.name = name
        self._lead = SimCamera(twin, 0, name)
        self._pending: list[Frame] = []

    def open(self) -> None:
        self._lead.open()

    def read(self, timeout: float) -> Frame | None:
        if self._pending:
            return self._pending.pop(0)
        first = self._lead.read(timeout)
        if first is None:
            return None
        count = int(first.meta["count"])  # type: ignore[call-overload]
        for v in range(1, self.views):
            image, _c, truth = self.twin.render(v, count)
            self._pending.append(
                Frame(image, first.capture_ts, first.seq, self.name, v, {"count": count, "truth": truth})
            )
        return first

    def close(self) -> None:
        self._lead.close()
