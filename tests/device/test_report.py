"""The twin's report keeps the sorting core's errors (wrong_bin) apart from the model's (misgraded_bin)."""

from __future__ import annotations

from types import SimpleNamespace

from device.config import DeviceConfig
from device.grades import DEFAULT_BIN
from device.sorting.report import build_report, decided_bin


def _item(item_id: int, grade: str, predicted: str | None, bin_: str) -> SimpleNamespace:
    return SimpleNamespace(id=item_id, grade=grade, predicted=predicted, bin=bin_, gates_fired=[])


def _outcome(grade: str) -> SimpleNamespace:
    top = None if grade == "uncertain" else grade
    decision = SimpleNamespace(grade=grade, top_grade=top, confidence=0.9, frames=4)
    return SimpleNamespace(decision=decision, outcome="queued", capture_ts=0.995, decided_ts=0.998, acked_ts=1.0,
                           latency_ms=5.0)


def test_a_faithful_ejection_of_a_misgraded_item_is_the_models_error_and_a_stray_one_is_the_sorters():
    cfg = DeviceConfig()
    gate = cfg.sorting.grade_to_gate
    g_m, g_l = str(gate["M"]), str(gate["L"])
    items = [
        _item(1, "M", "M", g_m),  # right
        _item(2, "M", "L", g_l),  # the model said L, the line did what it was told: misgraded
        _item(3, "M", "M", g_l),  # decided M, reached L's bin: the sorting core's error
        _item(4, "M", "uncertain", DEFAULT_BIN),  # doubt goes to the default bin: neither
        _item(5, "S", None, g_l),  # never decided, yet diverted: the sorting core's error
    ]
    decisions = {it.id: [_outcome(it.predicted)] for it in items if it.predicted}
    rec = SimpleNamespace(decisions=decisions, outcomes={k: v[0] for k, v in decisions.items()}, unmatched=0)
    twin = SimpleNamespace(finished=items, strokes_seen=list)
    report = build_report(cfg, twin, rec, {}, {}, [], 1.0)  # type: ignore[arg-type]
    assert (report["wrong_bin"], report["misgraded_bin"], report["default_bin"]) == (2, 1, 1)
    assert report["items_correct"] == 1
    assert [r["decided_bin"] for r in report["per_item"]] == [g_m, g_l, g_m, DEFAULT_BIN, DEFAULT_BIN]
    assert decided_bin(items[3], cfg) == DEFAULT_BIN  # type: ignore[arg-type]
    # the gap split: 2 of 5 decisions named the item's own bin (1, 3), 1 of 5 reached it (1); 3 reached the
    # bin their decision named (1, 2, 4)
    assert (report["decided_bin_accuracy"], report["sort_accuracy"], report["items_in_decided_bin"]) == (0.4, 0.2, 3)
    parts = report["decision_latency_parts_ms"]
    assert parts["capture_to_decision"]["p50"] == 3.0 and parts["decision_to_ack"]["p50"] == 2.0
    first = report["per_item"][0]
    assert (first["top"], first["confidence"], first["frames"], first["outcome"]) == ("M", 0.9, 4, "queued")
    assert "top" not in report["per_item"][4]  # never decided: no decision detail


def test_an_item_in_its_own_bin_without_a_paired_decision_is_not_a_wrong_bin():
    cfg = DeviceConfig()
    gate = cfg.sorting.grade_to_gate
    g_bs, g_l = str(gate["BS"]), str(gate["L"])
    # a starved host decided item 2 on its predicted position, too far off for the report to pair it (unmatched);
    # the ejection reached it, in its own grade's bin. Item 3, never decided, went to another grade's bin.
    items = [_item(1, "BS", "BS", g_bs), _item(2, "BS", None, g_bs), _item(3, "BS", None, g_l)]
    decisions = {1: [_outcome("BS")]}
    rec = SimpleNamespace(decisions=decisions, outcomes={1: decisions[1][0]}, unmatched=1)
    report = build_report(cfg, SimpleNamespace(finished=items, strokes_seen=list), rec, {}, {}, [], 1.0)  # type: ignore[arg-type]
    assert (report["wrong_bin"], report["own_bin_unpaired"], report["items_correct"]) == (1, 1, 2)


def test_an_item_decided_twice_is_counted_and_is_wrong_only_outside_both_named_bins():
    cfg = DeviceConfig()
    gate = cfg.sorting.grade_to_gate
    g_m, g_l, g_s = str(gate["M"]), str(gate["L"]), str(gate["S"])
    items = [_item(1, "M", "uncertain", g_m), _item(2, "M", "M", g_s)]
    # item 1: its track split; one half was uncertain, the other decided M and was ejected into M's bin
    # item 2: both halves decided (M, then L), yet it reached S's bin
    decisions = {1: [_outcome("uncertain"), _outcome("M")], 2: [_outcome("M"), _outcome("L")]}
    rec = SimpleNamespace(decisions=decisions, outcomes={k: v[0] for k, v in decisions.items()}, unmatched=1)
    report = build_report(cfg, SimpleNamespace(finished=items, strokes_seen=list), rec, {}, {}, [], 1.0)  # type: ignore[arg-type]
    assert report["items_decided_twice"] == 2 and report["decisions_unmatched"] == 1
    assert report["wrong_bin"] == 1 and [r["decisions"] for r in report["per_item"]] == [2, 2]
    assert g_l not in (g_m, g_s)


def test_a_decision_is_paired_with_its_item_even_when_the_item_has_left_the_frame():
    import numpy as np

    from device.frames import Frame
    from device.grades import sample_shape
    from device.sim.render import Placement
    from device.sim.twin import Item, Twin, TwinParams
    from device.sorting.decision import Decision
    from device.sorting.report import TruthRecorder
    from device.sorting.sorter import ItemOutcome

    twin = Twin(TwinParams(), {0: 600.0})
    rng = np.random.default_rng(0)

    def item(item_id: int, x_mm: float) -> Item:
        return Item(item_id, "M", sample_shape("M", rng), Placement(x_mm, 160.0, 0.0, 1, 0, ()), spawn_count=0)

    # at count 0: item 1 at 700 mm (far outside a 480 px frame), item 2 at 760 mm but already in a bin by then
    gone = item(2, 760.0)
    gone.finished_count, gone.bin = -10, "3"
    twin.items.append(item(1, 700.0))
    twin.finished.append(gone)
    rec = TruthRecorder(twin)
    frame = Frame(np.zeros((4, 4, 3), np.uint8), 0.0, 1, meta={"count": 0, "truth": []})  # nothing in view

    def outcome(x_mm: float) -> ItemOutcome:
        return ItemOutcome(9, Decision(9, "M", 0.9, 2, 3, ()), "queued", 0.0, 0.0, 0.0, x_mm, 1)

    rec(outcome(710.0), frame)  # 10 mm from item 1
    rec(outcome(758.0), frame)  # near only where item 2 was before it left the belt: no item
    assert list(rec.outcomes) == [1] and rec.unmatched == 1
    assert twin.items[0].predicted == "M"


def test_a_decision_made_on_a_misplaced_frame_is_paired_again_when_the_sorter_corrects_it():
    import numpy as np

    from device.frames import Frame
    from device.grades import sample_shape
    from device.sim.render import Placement
    from device.sim.twin import Item, Twin, TwinParams
    from device.sorting.decision import Decision
    from device.sorting.report import TruthRecorder
    from device.sorting.sorter import ItemOutcome

    twin = Twin(TwinParams(), {0: 600.0})
    rng = np.random.default_rng(0)
    for item_id, x in ((1, 100.0), (2, 200.0), (3, 400.0)):
        twin.items.append(Item(item_id, "M", sample_shape("M", rng), Placement(x, 160.0, 0.0, 1, 0, ()),
                               spawn_count=0))
    rec = TruthRecorder(twin)
    frame = Frame(np.zeros((4, 4, 3), np.uint8), 0.0, 1, meta={"count": 0, "truth": []})

    def outcome(track_id: int, grade: str, x_mm: float) -> ItemOutcome:
        return ItemOutcome(track_id, Decision(track_id, grade, 0.9, 2, 3, ()), "queued", 0.0, 0.0, 0.0, x_mm, 1)

    # a clock jump placed the frame 100 mm off: track 7 (item 1) seemed to be at 200 mm, where item 2 was, and
    # track 8 (item 3) at 300 mm, where nothing was
    rec(outcome(7, "L", 200.0), frame)
    rec(outcome(8, "S", 300.0), frame)
    assert list(rec.outcomes) == [2] and rec.unmatched == 1 and twin.items[1].predicted == "L"
    rec.correct(7, 101.0)  # the sorter re-placed the tracks: where each item really was on that frame
    rec.correct(8, 398.0)
    assert sorted(rec.outcomes) == [1, 3] and rec.unmatched == 0
    assert [it.predicted for it in twin.items] == ["L", None, "S"]
    assert rec.outcomes[1].x_mm == 101.0
    rec.correct(99, 0.0)  # a track that decided nothing the report saw: ignored
