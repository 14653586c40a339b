"""The nine CUCUMBER-9 grades and the rules that define them in the digital twin.

Makoto Koike's sorter grades cucumbers into 2L, L, M, S, 2S (straight, by size), BL, BM, BS (bent, by size)
and C (crooked or defective). Real grading also weighs colour, thickness and texture; the twin's rules are
geometric so that every item has one true grade that can be checked:

| measure                           | straight (bend <= 10 mm)  | bent (10 < bend <= 30 mm) |
|-----------------------------------|---------------------------|---------------------------|
| length >= 230 mm                  | 2L                        | BL (length >= 210 mm)     |
| 210 <= length < 230               | L                         | BL                        |
| 190 <= length < 210               | M                         | BM (180 <= length < 210)  |
| 170 <= length < 190               | S                         | BM / BS (below 180 mm)    |
| 150 <= length < 170               | 2S                        | BS                        |

C: bend > 30 mm, or a surface defect (rot or scar), or misshapen (tip thinner than 0.6 of the base).
`bend` is the sagitta: the largest distance of the centre line from the chord joining its ends.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRADES: tuple[str, ...] = ("2L", "L", "M", "S", "2S", "BL", "BM", "BS", "C")
DEFAULT_BIN = "default"

LENGTH_MM = (150.0, 250.0)
STRAIGHT_MAX_BEND = 10.0
BENT_MAX_BEND = 30.0
MISSHAPEN_TAPER = 0.6
_STRAIGHT_BINS = {
    "2L": (230.0, 250.0), "L": (210.0, 230.0), "M": (190.0, 210.0), "S": (170.0, 190.0), "2S": (150.0, 170.0),
}
_BENT_BINS = {"BL": (210.0, 250.0), "BM": (180.0, 210.0), "BS": (150.0, 180.0)}


@dataclass(frozen=True, slots=True)
class CucumberShape:
    length_mm: float
    thickness_mm: float  # diameter at the base
    bend_mm: float  # sagitta of the centre line
    taper: float  # tip diameter / base diameter
    defects: int  # number of rot spots or scars


def grade_of(s: CucumberShape) -> str:
    """The true grade of a shape, by the rules in the module docstring."""
    if s.defects > 0 or s.bend_mm > BENT_MAX_BEND or s.taper < MISSHAPEN_TAPER:
        return "C"
    bins = _STRAIGHT_BINS if s.bend_mm <= STRAIGHT_MAX_BEND else _BENT_BINS
    for grade, (lo, hi) in bins.items():
        if lo <= s.length_mm < hi or (hi == LENGTH_MM[1] and s.length_mm == hi):
            return grade
    raise ValueError(f"length {s.length_mm} mm is outside the graded range {LENGTH_MM}")


def sample_shape(grade: str, rng: np.random.Generator, margin_mm: float = 3.0) -> CucumberShape:
    """A random shape of the given grade, kept `margin_mm` away from the rule boundaries.

    The margin keeps the twin's labels unambiguous at the camera's resolution; a real line has borderline
    items, which is why the sorter has a confidence floor.
    """
    if grade not in GRADES:
        raise ValueError(f"unknown grade {grade!r}; grades are {', '.join(GRADES)}")
    m = margin_mm
    taper = float(rng.uniform(0.72, 0.95))
    defects = 0
    if grade == "C":
        kind = rng.integers(3)
        length = float(rng.uniform(LENGTH_MM[0] + m, LENGTH_MM[1] - m))
        bend = float(rng.uniform(0.0, 25.0))
        if kind == 0:
            bend = float(rng.uniform(BENT_MAX_BEND + m + 2, 60.0))
        elif kind == 1:
            defects = int(rng.integers(1, 4))
        else:
            taper = float(rng.uniform(0.35, MISSHAPEN_TAPER - 0.08))
    else:
        straight = grade in _STRAIGHT_BINS
        lo, hi = (_STRAIGHT_BINS if straight else _BENT_BINS)[grade]
        length = float(rng.uniform(lo + m, hi - m))
        bend = (
            float(rng.uniform(0.0, STRAIGHT_MAX_BEND - m))
            if straight
            else float(rng.uniform(STRAIGHT_MAX_BEND + m, BENT_MAX_BEND - m))
        )
    thickness = float(np.clip(length * 0.14 + rng.normal(0, 2.0), 22.0, 40.0))
    shape = CucumberShape(length, thickness, bend, taper, defects)
    if grade_of(shape) != grade:  # the sampler and the rules must agree; a mismatch is a bug here
        raise AssertionError(f"sampled {shape} for {grade} but the rules say {grade_of(shape)}")
    return shape


def grade_index(grade: str) -> int:
    return GRADES.index(grade)
