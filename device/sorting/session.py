"""One run of the sorting line on the digital twin, measured by the twin's truth (the demo and `bench sort`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from device.config import DeviceConfig
from device.sorting.line import SortingLine
from device.sorting.report import TruthRecorder, build_report

DRAIN_TIMEOUT_S = 30.0  # after spawning stops, how long to wait for the belt to empty
TICK_S = 0.5


def run_twin_session(cfg: DeviceConfig, seconds: float, *, firmware: bool = False,
                     on_tick: Callable[[SortingLine, float], None] | None = None) -> dict[str, Any]:
    """Feed items for `seconds`, let the belt empty, and return the report (see device.sorting.report)."""
    line = SortingLine(cfg, firmware=firmware)
    try:
        line.open()
        assert line.twin is not None and line.sorter is not None and line.pipeline is not None
        recorder = TruthRecorder(line.twin)
        line.sorter.listeners.append(recorder)
        line.sorter.corrections.append(recorder.correct)
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < seconds:
            time.sleep(TICK_S)
            if on_tick:
                on_tick(line, elapsed)
        line.twin.stop_spawning()
        drain_end = time.monotonic() + DRAIN_TIMEOUT_S
        while line.twin.on_belt() and time.monotonic() < drain_end:
            time.sleep(0.2)
        if on_tick:
            on_tick(line, time.monotonic() - t0)
        snapshot = line.sorter.snapshot()
        report = build_report(cfg, line.twin, recorder, snapshot, line.pipeline.stats(),
                              line.sorter.scheduler.fired_log(), time.monotonic() - t0)
        report.update({
            "firmware": firmware,
            "baud": cfg.bridge.baud if firmware else None,  # the Python MCU has no wire time
            "model": line.bundle.manifest.model_id() if line.bundle else "",
            "twin": cfg.cameras[0].uri,
            "outbox": str(cfg.paths.outbox),
            "item_events": line.item_events,
            "link": dict(line.link.counters),
            # how the tracker fared with the clock: frames placed by their items (a jump not yet seen), frames
            # from an unlocated jump's window, tracks a jump split and merged again, bursts the line stood down in
            "tracking": {k: snapshot[k] for k in ("frames_shifted", "frames_uncertain", "tracks_merged",
                                                  "clock_jump_bursts")},
            "items_per_s": round(len(line.twin.finished) / max(seconds, 1e-9), 2),
        })
        return report
    finally:
        line.close()
