"""The twin's verdict on a run: every item's true grade, predicted grade, gate fired and bin reached."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np

from device.config import DeviceConfig
from device.frames import Frame
from device.grades import DEFAULT_BIN
from device.sim.twin import Item, Twin
from device.sorting.aim import aim_report
from device.sorting.scheduling import Fired
from device.sorting.sorter import ItemOutcome

MATCH_MM = 30.0


class TruthRecorder:
    """Sorter listener that pairs each decision with the twin item it was about (for the report only).

    The pairing is by position: the decided item's centre at the frame's capture against where every twin item
    was at that frame's encoder count, within MATCH_MM. Every item on the belt then counts, not only the ones in
    the frame: after a host stall a track is decided on its predicted position, when its item has left the
    camera's view. An item may collect more than one decision (its track split in two): all are kept, the first
    is the item's decision, and the report counts such items.

    A decision made on a frame placed through a wrong clock mapping carries a wrong position; when the sorter
    re-places the track it reports where the item really was on that frame (`correct`), and the decision is
    paired again.
    """

    def __init__(self, twin: Twin) -> None:
        self.twin = twin
        self.decisions: dict[int, list[ItemOutcome]] = {}  # twin item id -> its decisions, in order
        self.unmatched = 0
        self._lock = threading.Lock()
        # track id -> (its decision, the decision frame's encoder count, the item it was paired with)
        self._by_track: dict[int, tuple[ItemOutcome, int, Item | None]] = {}

    @property
    def outcomes(self) -> dict[int, ItemOutcome]:
        """The decision of each decided item (its first)."""
        with self._lock:
            return {k: v[0] for k, v in self.decisions.items()}

    def __call__(self, o: ItemOutcome, frame: Frame) -> None:
        count = frame.meta.get("count")
        if not isinstance(count, int):
            with self._lock:
                self.unmatched += 1
            return
        item = self.twin.item_near(o.x_mm, count, MATCH_MM)
        with self._lock:
            self._pair(o, item)
            self._by_track[o.track_id] = (o, count, item)

    def correct(self, track_id: int, x_mm: float) -> None:
        """The sorter found that track's decision frame placed wrong: the item was at x_mm on it."""
        with self._lock:
            entry = self._by_track.get(track_id)
        if entry is None:
            return
        o, count, paired = entry
        item = self.twin.item_near(x_mm, count, MATCH_MM)
        if item is paired:
            return
        moved = replace(o, x_mm=x_mm)
        with self._lock:
            if paired is None:
                self.unmatched -= 1
            else:
                left = self.decisions[paired.id]
                left.remove(o)
                if not left:
                    del self.decisions[paired.id]
                paired.predicted = left[0].decision.grade if left else None
            self._pair(moved, item)
            self._by_track[track_id] = (moved, count, item)

    def item_of_track(self, track_id: int) -> Item | None:
        """The twin item a track's decision was paired with (None: not decided, or not placed on an item)."""
        with self._lock:
            entry = self._by_track.get(track_id)
        return entry[2] if entry else None

    def _pair(self, o: ItemOutcome, item: Item | None) -> None:
        if item is None:
            self.unmatched += 1
            return
        self.decisions.setdefault(item.id, []).append(o)
        if item.predicted is None:
            item.predicted = o.decision.grade


def expected_bin(grade: str, cfg: DeviceConfig) -> str:
    gate = cfg.sorting.grade_to_gate.get(grade)
    return str(gate) if gate is not None else DEFAULT_BIN


def decided_bin(item: Item, cfg: DeviceConfig) -> str:
    """The bin the item's decision named (the default bin when it had none or was uncertain)."""
    return expected_bin(item.predicted, cfg) if item.predicted else DEFAULT_BIN


def _decision_detail(o: ItemOutcome | None) -> dict[str, Any]:
    """The model's side of an item's decision (its top class, confidence and how many crops it averaged) and
    its latency: frame capture to the MCU's acknowledgement (`acked`) or, for the default bin, to the decision."""
    if o is None:
        return {}
    d = o.decision
    return {"top": d.top_grade, "confidence": round(d.confidence, 4), "frames": d.frames, "outcome": o.outcome,
            "latency_ms": round(o.latency_ms, 2), "acked": o.acked_ts is not None}


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if values else 0.0


def build_report(cfg: DeviceConfig, twin: Twin, rec: TruthRecorder, sorter_snapshot: dict[str, Any],
                 pipeline_stats: dict[str, Any], fired: list[Fired], elapsed_s: float) -> dict[str, Any]:
    items: list[Item] = list(twin.finished)
    fire_errors = [f.actual - f.fire_at for f in fired]  # as EjectionStats.fire_errors, over this copy
    aim, aims = aim_report(twin.strokes_seen(), fired, rec, {g.id: g.distance_mm for g in cfg.line.gates},
                                 cfg.line.ticks_per_mm)
    correct = [it for it in items if it.bin == expected_bin(it.grade, cfg)]
    # Two ways to end in a gate bin that is not the item's own, kept apart because they have different owners:
    # wrong_bin is the sorting core's error (the item reached a gate bin its decision did not name: a wrong
    # track, a mistimed or misdirected ejection); misgraded_bin is the model's (the decision named the gate of
    # another grade and the line carried it out faithfully). Undecided and uncertain items are decided "default".
    named = {it.id: decided_bin(it, cfg) for it in items}
    # an item that was decided twice (a split track) is a sorting error only if it reached neither named bin
    allowed = {it.id: {DEFAULT_BIN} | {expected_bin(o.decision.grade, cfg) for o in rec.decisions.get(it.id, [])}
               for it in items}
    # An item in its own grade's bin is never in a wrong one. It can be there with no decision paired: on a
    # starved host a track is decided on its predicted position, and a decision the report cannot place within
    # MATCH_MM of any item stays unmatched while its ejection reaches its item (CI saw one at 55% steal, a BS
    # in bin 7 between two BS decided for bin 7). Those are counted apart, beside decisions_unmatched.
    wrong = [it for it in items if it.bin not in allowed[it.id] and it.bin != expected_bin(it.grade, cfg)]
    own_bin_unpaired = [it for it in items if it.bin not in allowed[it.id] and it.bin == expected_bin(it.grade, cfg)]
    misgraded = [it for it in items
                 if it.bin in allowed[it.id] and it.bin not in (DEFAULT_BIN, expected_bin(it.grade, cfg))]
    default = [it for it in items if it.bin == DEFAULT_BIN]
    outcomes = rec.outcomes
    decided = [it for it in items if it.id in outcomes]
    # classification: the model's top class (an "uncertain" decision included; an item never graded, such as
    # touching ones the locator could not separate, was not classified); decision: the grade the line acted on
    classified = [it for it in decided if outcomes[it.id].decision.top_grade is not None]
    cls_ok = [it for it in classified if outcomes[it.id].decision.top_grade == it.grade]
    decision_ok = [it for it in decided if outcomes[it.id].decision.grade == it.grade]
    # the bin the decision named is the item's own: what a line that executes every decision would score. The
    # rest of the gap between classification and sorting is split in two: the policy's share (the confidence
    # floor or an unseparated touching pair sent an item to the default bin) and the line's (tracking, timing,
    # ejection: the item missed the bin its decision named)
    named_ok = [it for it in items if named[it.id] == expected_bin(it.grade, cfg)]
    executed = [it for it in items if it.bin == named[it.id]]
    ejected = [o for o in outcomes.values() if o.acked_ts is not None]
    should_fire = [it for it in decided if outcomes[it.id].outcome == "queued"]
    missed = [it for it in should_fire if not it.gates_fired]
    lat_eject = [o.latency_ms for o in ejected]
    # where an ejection's latency goes: capture to the decision (pipeline and sorter), decision to the MCU's ack
    lat_to_decision = [(o.decided_ts - o.capture_ts) * 1e3 for o in ejected]
    lat_to_ack = [(o.acked_ts - o.decided_ts) * 1e3 for o in ejected if o.acked_ts is not None]
    lat_all = [o.latency_ms for o in outcomes.values()]
    ej = sorter_snapshot.get("ejections", {})
    total = len(items)
    return {
        "items_total": total,
        "items_correct": len(correct),
        "sort_accuracy": round(len(correct) / total, 4) if total else 0.0,
        "classification_accuracy": round(len(cls_ok) / len(classified), 4) if classified else 0.0,
        "decision_accuracy": round(len(decision_ok) / len(decided), 4) if decided else 0.0,
        "decided_bin_accuracy": round(len(named_ok) / total, 4) if total else 0.0,
        "items_in_decided_bin": len(executed),
        "items_classified": len(classified),
        "items_decided": len(decided),
        "items_undecided": total - len(decided),
        "items_decided_twice": sum(len(v) > 1 for v in rec.decisions.values()),
        "decisions_unmatched": rec.unmatched,
        "missed_ejections": len(missed) + int(ej.get("late", 0)) + int(ej.get("full", 0)) + int(ej.get("failed", 0)),
        "wrong_bin": len(wrong),
        "own_bin_unpaired": len(own_bin_unpaired),
        "misgraded_bin": len(misgraded),
        "default_bin": len(default),
        "decision_latency_ms": {"p50": _pct(lat_eject, 50), "p99": _pct(lat_eject, 99)},
        "decision_latency_all_ms": {"p50": _pct(lat_all, 50), "p99": _pct(lat_all, 99)},
        "decision_latency_parts_ms": {
            "capture_to_decision": {"p50": _pct(lat_to_decision, 50), "p99": _pct(lat_to_decision, 99)},
            "decision_to_ack": {"p50": _pct(lat_to_ack, 50), "p99": _pct(lat_to_ack, 99)},
        },
        "fire_position_error_counts": {
            "n": len(fire_errors),
            "p50": _pct([float(e) for e in fire_errors], 50),
            "max_abs": int(max((abs(e) for e in fire_errors), default=0)),
        },
        "aim": aim,
        "fps": round(float(pipeline_stats.get("fps_out", 0.0)), 2),
        "pipeline": pipeline_stats,
        "ejections": ej,
        "bins": dict(Counter(it.bin or "" for it in items)),
        "grades_true": dict(Counter(it.grade for it in items)),
        "elapsed_s": round(elapsed_s, 1),
        "per_item": [
            {"id": it.id, "true": it.grade, "predicted": it.predicted, "gates_fired": it.gates_fired,
             "bin": it.bin, "decided_bin": named[it.id], "expected_bin": expected_bin(it.grade, cfg),
             "decisions": len(rec.decisions.get(it.id, [])), **_decision_detail(outcomes.get(it.id)),
             **aims.get(it.id, {})}
            for it in items
        ],
    }
