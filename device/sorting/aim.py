"""How well each ejection was aimed, from the twin's truth: the report's view of the pushers.

`wrong_bin` counts the items that ended where no decision sent them; it says nothing of the strokes that came
close. Here every stroke of a pusher the twin saw is paired with the ejection the MCU reported firing for it
(same gate, the stroke starting at the count the MCU fired at) and with the item that ejection's decision was
about (the report's pairing of decisions with items). The aim error is where that item's centre was, along the
belt, at the middle of the stroke, minus the gate's position: 0 is a pusher centred on its item, and a stroke
takes a neighbour once the error nears the item pitch. Strokes that took any item but their own (a neighbour
of the same grade included, which no bin count shows) are listed with how their ejection came to be queued
(decided, requeued after a clock jump, released after being held back), so that a stray can be read.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np

from device.sim.twin import Item, Stroke
from device.sorting.scheduling import Fired

MATCH_COUNTS = 4  # a stroke and a FIRED report this close (encoder counts) on one gate are the same ejection
STRAYS_LISTED = 20


class _Pairing(Protocol):
    def item_of_track(self, track_id: int) -> Item | None: ...


def _match(strokes: Iterable[Stroke], fired: Iterable[Fired]) -> list[tuple[Stroke, Fired | None]]:
    """Each stroke with the FIRED report of its gate nearest its start (within MATCH_COUNTS), each report used
    once."""
    by_gate: dict[int, list[Fired]] = {}
    for f in fired:
        by_gate.setdefault(f.gate, []).append(f)
    out: list[tuple[Stroke, Fired | None]] = []
    for s in strokes:
        near = [f for f in by_gate.get(s.gate, []) if abs(f.actual - s.start) <= MATCH_COUNTS]
        best = min(near, key=lambda f: abs(f.actual - s.start), default=None)
        if best is not None:
            by_gate[s.gate].remove(best)
        out.append((s, best))
    return out


def aim_report(strokes: Iterable[Stroke], fired: Iterable[Fired], pairing: _Pairing, gates_mm: dict[int, float],
               ticks_per_mm: float) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """(the report's `aim` section, by twin item id the aim of the ejection its decision queued: the error in
    mm and how it was queued)."""
    errors: list[float] = []  # one per stroke paired with an item (an item decided twice may have two)
    aims: dict[int, dict[str, Any]] = {}
    strays: list[dict[str, Any]] = []
    unexplained = unpaired = took_other = 0
    matched = _match(strokes, fired)
    for stroke, f in matched:
        if f is None:
            unexplained += 1  # the pusher moved with no ejection reported fired: the MCU's doing, or a lost report
            continue
        item = pairing.item_of_track(f.item_id)
        error = None
        if item is None:
            unpaired += 1  # its decision was never placed on an item (decisions_unmatched)
        else:
            error = item.x_at((stroke.start + stroke.end) / 2, ticks_per_mm) - gates_mm[stroke.gate]
            errors.append(error)
            aims[item.id] = {"aim_error_mm": round(error, 1), "queued_as": f.how}
        others = [i for i in stroke.took if item is None or i != item.id]
        if others:
            took_other += 1
            if len(strays) < STRAYS_LISTED:
                strays.append({"gate": stroke.gate, "start": stroke.start, "end": stroke.end, "track": f.item_id,
                               "how": f.how, "fire_at": f.fire_at, "item": item.id if item else None,
                               "aim_error_mm": None if error is None else round(error, 1),
                               "took": list(stroke.took)})
    signed = np.array(errors, dtype=float)
    absolute = np.abs(signed)
    section = {
        "strokes": len(matched),
        "error_mm": {
            "n": int(absolute.size),
            "p50": round(float(np.percentile(signed, 50)), 1) if signed.size else 0.0,  # > 0: fired late
            "p50_abs": round(float(np.percentile(absolute, 50)), 1) if absolute.size else 0.0,
            "p99_abs": round(float(np.percentile(absolute, 99)), 1) if absolute.size else 0.0,
            "max_abs": round(float(absolute.max()), 1) if absolute.size else 0.0,
        },
        "strokes_unexplained": unexplained,
        "strokes_unpaired": unpaired,
        "strokes_took_other": took_other,
        "strays": strays,
    }
    return section, aims
