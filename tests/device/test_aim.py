"""The report's view of the pushers: each stroke paired with its FIRED report and its decision's item."""

from __future__ import annotations

from types import SimpleNamespace

from device.sim.twin import Stroke
from device.sorting.aim import aim_report
from device.sorting.scheduling import Fired

TPM = 2.0  # ticks per mm
GATES = {3: 500.0}


def _item(item_id: int, x_at_zero_mm: float) -> SimpleNamespace:
    """An item riding the belt: its centre at x_at_zero_mm when the count was 0."""
    return SimpleNamespace(id=item_id, x_at=lambda count, tpm: x_at_zero_mm + count / tpm)


def test_strokes_are_paired_measured_and_strays_listed():
    a, b = _item(1, 0.0), _item(2, -100.0)  # b rides 100 mm behind a
    pairing = SimpleNamespace(item_of_track=lambda track: {10: a, 11: b, 12: None}.get(track))
    strokes = [
        Stroke(3, 996, 1010, (1,)),  # a's, centred: a at 501.5 mm mid-stroke
        Stroke(3, 1300, 1314, (2,)),  # b's ejection aimed 50 mm late, still took b
        Stroke(3, 1600, 1614, (2, 3)),  # fired for a decision that was never placed on an item
        Stroke(3, 2000, 2014, ()),  # the pusher moved with nothing reported fired
    ]
    fired = [
        Fired(10, 3, 995, 997, "decided"),  # 2 counts late: still this stroke
        Fired(11, 3, 1300, 1300, "requeued"),
        Fired(12, 3, 1600, 1601, "decided"),  # its decision was never placed on an item
    ]
    section, aims = aim_report(strokes, fired, pairing, GATES, TPM)
    assert section["strokes"] == 4 and section["strokes_unexplained"] == 1 and section["strokes_unpaired"] == 1
    assert aims == {1: {"aim_error_mm": 1.5, "queued_as": "decided"},
                    2: {"aim_error_mm": 53.5, "queued_as": "requeued"}}
    assert section["error_mm"]["n"] == 2 and section["error_mm"]["max_abs"] == 53.5
    # the third stroke took items while its ejection's item is unknown: a stray, listed with how it was queued
    assert section["strokes_took_other"] == 1
    (stray,) = section["strays"]
    assert (stray["track"], stray["how"], stray["item"], stray["took"]) == (12, "decided", None, [2, 3])


def test_a_stroke_that_takes_a_neighbour_with_its_item_is_a_stray():
    a = _item(1, 0.0)  # item 2, 30 mm behind it, was caught by the same stroke
    pairing = SimpleNamespace(item_of_track=lambda track: a)
    section, aims = aim_report([Stroke(3, 1000, 1014, (1, 2))], [Fired(5, 3, 1000, 1000, "released")], pairing,
                                 GATES, TPM)
    assert section["strokes_took_other"] == 1 and section["strays"][0]["aim_error_mm"] == 3.5
    assert section["strays"][0]["how"] == "released" and aims == {1: {"aim_error_mm": 3.5, "queued_as": "released"}}
    # a report far from any stroke on the gate pairs with none
    section, _ = aim_report([Stroke(3, 1000, 1014, (1,))], [Fired(5, 3, 900, 900, "decided")], pairing, GATES, TPM)
    assert section["strokes_unexplained"] == 1 and section["error_mm"]["n"] == 0
