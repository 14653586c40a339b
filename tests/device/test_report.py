"""The twin's report keeps the sorting core's errors (wrong_bin) apart from the model's (misgraded_bin)."""

from __future__ import annotations

from types import SimpleNamespace

from device.config import DeviceConfig
from device.grades import DEFAULT_BIN
from device.sorting.report import build_report, decided_bin


def _item(item_id: int, grade: str, predicted: str | None, bin_: str) -> SimpleNamespace:
    return SimpleNamespace(id=item_id, grade=grade, predicted=predicted, bin=bin_, gates_fired=[])


def _outcome(grade: str) -> SimpleNamespace:
    return SimpleNamespace(decision=SimpleNamespace(grade=grade), outcome="queued", acked_ts=1.0, latency_ms=5.0)


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
    rec = SimpleNamespace(outcomes={it.id: _outcome(it.predicted) for it in items if it.predicted})
    twin = SimpleNamespace(finished=items)
    report = build_report(cfg, twin, rec, {}, {}, [], 1.0)  # type: ignore[arg-type]
    assert (report["wrong_bin"], report["misgraded_bin"], report["default_bin"]) == (2, 1, 1)
    assert report["items_correct"] == 1
    assert [r["decided_bin"] for r in report["per_item"]] == [g_m, g_l, g_m, DEFAULT_BIN, DEFAULT_BIN]
    assert decided_bin(items[3], cfg) == DEFAULT_BIN  # type: ignore[arg-type]
