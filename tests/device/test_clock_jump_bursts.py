"""The sorting line through bursts of MCU pauses at a pitch where each pause moves the frames placed before the
link sees it by more than half the gap between items: the line sorts on through them (bursts of located jumps
no longer stand it down), every item goes to the bin its decision named or to the default bin, and no stroke
takes a neighbour.

What this run cannot show by itself: the neighbour's track taking an item's frames, which the tracker's frame
shift prevents, came about once in a hundred pauses (2 of 8 runs of 27 pauses, firmware in simavr); 12
pauses rarely meet it. `test_tracking.py` holds that mechanism, frame by frame."""

from __future__ import annotations

import argparse

from twin_report import items_lost

from device.sorting import bench
from device.sorting.session import run_twin_session

# 0.5 m/s at 8 items/s: a pitch of 62 mm. A 70 ms pause moves the frames of up to 100-200 ms after it by 35 mm
# until a heartbeat shows it: nearer the neighbour's track than the item's own.
BURSTS = "faults=" + ",".join(f"pause@{1.5 + 3 * k + 0.33 * j:.2f}:{(0.05, 0.07, 0.08)[j]}"
                              for k in range(4) for j in range(3))


def test_bursts_of_pauses_send_nothing_to_a_wrong_bin_and_no_stroke_takes_a_neighbour(tmp_path):
    args = argparse.Namespace(seed=5, bundle=None, state_dir=tmp_path, confidence_floor=None)
    report = run_twin_session(bench._config(args, 0.5, 8.0, BURSTS, "bursts"), 12.0)
    assert report["items_total"] >= 40
    assert report["link"]["clock_jumps"] >= 12
    assert report["wrong_bin"] == 0, report["aim"]["strays"]
    # the mechanism: a frame placed wrong matched each detection to its neighbour's track, whose decision
    # then aimed a pitch late (docs/BENCHMARKS.md, session 10); the tracker places such a frame by its items
    assert report["aim"]["strokes_took_other"] == 0, report["aim"]["strays"]
    assert report["aim"]["error_mm"]["p99_abs"] <= 12.0, report["aim"]
    # and the line sorts through them: bursts of located jumps no longer stand it down. Left out, as in
    # test_clock_jump_sort: late ejections of a starved host, and a stand-down for a jump it could not locate
    lost, allowed = items_lost(report)
    assert len(lost) <= allowed, [(it["id"], it.get("outcome"), it.get("aim_error_mm")) for it in lost]
