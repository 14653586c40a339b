"""The sorting line on the twin while its MCU pauses (its clock jumps against the host's): every jump is seen,
and no item reaches a bin its decision did not name."""

from __future__ import annotations

import argparse

from device.sorting import bench
from device.sorting.session import run_twin_session


def test_mcu_pauses_are_seen_and_send_nothing_to_a_wrong_bin(tmp_path):
    args = argparse.Namespace(seed=3, bundle=None, state_dir=tmp_path, confidence_floor=None)
    cfg = bench._config(args, 1.5, 8.0, bench.FAULT_RUNS["mcu_pause"], "pause")
    report = run_twin_session(cfg, 15.0)
    assert report["items_total"] >= 40  # 120 at 8/s; a starved VM renders and sorts fewer
    assert report["link"]["clock_jumps"] >= 4  # the four pauses, 30-100 ms each (a starved VM may add more)
    assert report["wrong_bin"] == 0
    ej = report["ejections"]
    assert ej["requeued"] <= ej["withdrawn"]
    # a withdrawn ejection never fires: each queued one is fired, missed, withdrawn, or still pending at the end
    assert ej["fired"] + ej["missed"] + ej["withdrawn"] <= ej["queued"]
