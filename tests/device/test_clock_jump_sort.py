"""The sorting line on the twin while its MCU pauses (its clock jumps against the host's): every jump is seen,
and no item reaches a bin its decision did not name."""

from __future__ import annotations

import argparse

from twin_report import items_lost

from device.sorting import bench
from device.sorting.session import run_twin_session

# ten pauses of 50-100 ms in 15 s: each one places the frames of up to 200 ms wrong until the link sees it
PAUSES = "faults=" + ",".join(f"pause@{t}:{d}" for t, d in zip(
    (1.5, 2.8, 4.1, 5.4, 6.7, 8.0, 9.3, 10.6, 11.9, 13.2), (0.05, 0.08, 0.1, 0.06, 0.09, 0.05, 0.1, 0.07, 0.08, 0.06),
    strict=True))


def test_mcu_pauses_are_seen_and_send_nothing_to_a_wrong_bin(tmp_path):
    args = argparse.Namespace(seed=3, bundle=None, state_dir=tmp_path, confidence_floor=None)
    cfg = bench._config(args, 1.5, 8.0, PAUSES, "pause")
    report = run_twin_session(cfg, 15.0)
    assert report["items_total"] >= 40  # 120 at 8/s; a starved VM renders and sorts fewer
    assert report["link"]["clock_jumps"] >= 10  # the pauses (a starved VM may add more)
    # on failure, the evidence: each item off its own and its decision's bin, with its neighbours
    strays = [it for it in report["per_item"] if it["bin"] not in (it["decided_bin"], it["expected_bin"], "default")]
    assert report["wrong_bin"] == 0, (strays, report["decisions_unmatched"],
                                     report["ejections"], report["aim"]["strays"])
    # nor does a stroke take a neighbour (of the same grade too, which no bin count shows)
    assert report["aim"]["strokes_took_other"] == 0, report["aim"]["strays"]
    # strokes centred on their items: |p99| within 12 mm (the pusher's half-width is 20 mm). The pulse is
    # centred by half its length of belt travel at the belt's speed; measured through host times across a
    # pause, that speed came out low, and here strokes fired up to 24 mm late, |p99| 21 mm. With the MCU's own
    # speed: |p99| 7.0 and 7.5 mm. Not the max: a pause located a few ms off still leaves one stroke now and
    # then 10-16 mm off (16 in a CI run), and strokes_took_other above is what keeps neighbours safe.
    assert report["aim"]["error_mm"]["p99_abs"] <= 12.0, report["aim"]
    # and almost nothing lost to the default bin: the tracks a pause split are one again once re-placed, the
    # ejections decided or held back on wrong positions are queued again, and the slip measured across a jump
    # is forgotten (before these, 3.5-7% of the items missed the bin their decision named in such a run). Left
    # out: an ejection the MCU called late (a host too starved to decide in time loses those regardless), and
    # items sent to the default bin while the line stood down: a starved VM adds jumps of its own to the ten,
    # and jumps less than a second apart, one of them not located, are a burst, in which nothing is ejected by
    # design (CI at 45% steal, when every burst stood down: 13 of 85 items, 11 of them the stand-down's).
    lost, allowed = items_lost(report)
    assert len(lost) <= allowed, [(it["id"], it.get("outcome"), it["decisions"]) for it in lost]
    ej = report["ejections"]
    assert ej["requeued"] <= ej["withdrawn"]
    # a withdrawn ejection never fires: each queued one is fired, missed, withdrawn, or still pending at the end
    assert ej["fired"] + ej["missed"] + ej["withdrawn"] <= ej["queued"]
