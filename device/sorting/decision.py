"""One decision per item: aggregate a track's class probabilities, apply the confidence floor, pick a gate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device.config import SortingConfig
from device.sorting.tracking import Track

UNCERTAIN = "uncertain"
AMBIGUOUS = "ambiguous"  # touching items the locator could not separate


@dataclass(frozen=True, slots=True)
class Decision:
    track_id: int
    grade: str  # a label of the model, or "uncertain"
    confidence: float
    gate: int | None  # None = default bin
    frames: int  # how many crops (frames x views) were averaged
    probs: tuple[float, ...]
    # the classifier's own answer (the top class of `probs`), kept when the floor made the decision "uncertain":
    # the report's classification accuracy is the model's; the floor is the sorting policy. None: never graded.
    top_grade: str | None = None


def decide(track: Track, labels: tuple[str, ...], cfg: SortingConfig) -> Decision:
    """Mean of the per-crop probabilities; below the floor, or never graded, the item is 'uncertain'.

    Any doubt sends the item to the default bin (no ejection): a missed grade costs a re-sort, a wrong
    bin costs a customer.
    """
    if track.ambiguous:
        return Decision(track.id, AMBIGUOUS, 0.0, None, track.prob_frames, ())
    mean = track.mean_probs()
    if mean is None:
        return Decision(track.id, UNCERTAIN, 0.0, None, 0, ())
    probs = tuple(round(float(p), 4) for p in mean)
    if len(track.view_sums) > 1:
        # a defect may show in one view only: such grades win when any single view is confident of them
        per_view = track.view_means()
        for grade in cfg.any_view_grades:
            if grade in labels:
                i = labels.index(grade)
                best = max(float(m[i]) for m in per_view.values())
                if best >= cfg.confidence_floor:
                    gate = cfg.grade_to_gate.get(grade)
                    return Decision(track.id, grade, best, gate, track.prob_frames, probs, grade)
    top = int(np.argmax(mean))
    conf = float(mean[top])
    if conf < cfg.confidence_floor:
        return Decision(track.id, UNCERTAIN, conf, None, track.prob_frames, probs, labels[top])
    grade = labels[top]
    return Decision(track.id, grade, conf, cfg.grade_to_gate.get(grade), track.prob_frames, probs, grade)
