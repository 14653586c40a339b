"""Following items along the belt across frames.

Positions are kept in belt coordinates: u = x - count / ticks_per_mm, where x is the item's position in mm
from the camera axis and count the encoder count at the frame's capture time. An item that rides the belt
keeps a constant u whatever the belt speed (stops included), so matching is a nearest-neighbour search on u.
An item that slips drifts in u; each track keeps a drift rate per mm of belt travel to predict it.

A position can be known to be uncertain: a frame captured while the MCU's clock jumped against the host's was
placed on the belt with the wrong encoder count (see device/sorting/clock_guard.py). Such a detection, and a
track whose latest position came from one, carry `uncertainty_mm`; the next trustworthy detection clears it.
Matching does not widen for it: with errors of 50-150 mm (a 100 ms jump at 0.5-1.5 m/s) a wider window takes
a neighbour's detection, while a track that splits instead only costs the item its earlier frames.

Before the link has seen a jump, nothing flags its frames, but the items show it: a wrong encoder count moves
every item of a frame by the same distance, and an item that slips moves only itself. `frame_shift` finds that
common move (two whole views or more off their tracks by the same amount, over 12 mm), and the sorter places
the frame by it (device/sorting/sorter.py). Without it, a jump of more than half the items' pitch matched
each detection to its neighbour's track: every track of the frame took the next item, and an item's decision
was made on its neighbour's frames, aimed at its neighbour's place (runs with scripted bursts of 30-80 ms
pauses at 0.5 m/s and 8 items/s, a pitch of 62 mm: strokes one pitch late, docs/BENCHMARKS.md, session 10).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

import numpy as np

MATCH_MM = 25.0  # largest distance between a prediction and a detection that can be the same item
DRIFT_BASELINE_MM = 100.0  # belt travel between two complete views before a slip rate is believed
DRIFT_DEADBAND = 0.03  # slower than the belt by less than this is measurement noise, not slip
DEPARTED_KEPT = 64  # dropped tracks remembered (8 s of items at 8 per second: past the last gate)
DRIFT_LOG = 64  # slip rates kept per track (with their frame's time), to go back to one a clock jump did not touch
MAX_SLIP = 0.35  # an item slower than the belt by more than this share is not ejected (its arrival is a guess)
# Two trusted tracks whose centres are closer than this (along and across the belt) follow one item: no two items
# can be, as the thinnest is 20 mm across. A track splits when a detection is placed wrong (a clock jump) and
# starts its own track; once the link puts the mapping right, the two stand on the same spot.
MERGE_MM = 12.0
# A frame whose whole views stand off their tracks by one common distance was placed with a wrong encoder count
# (a clock jump the link has not yet seen). "On" a track: within SHIFT_TOL_MM (the locator's centres scatter by a
# few mm). It takes SHIFT_SUPPORT more detections on their tracks with the shift than without it, so a frame that
# matches normally is never moved (a one-pitch shift of evenly spaced items matches no more of them than none).
SHIFT_TOL_MM = 6.0
SHIFT_SUPPORT = 2
SHIFT_MAX_MM = 250.0  # a 160 ms jump at 1.5 m/s
# Smaller common moves are left to the tracks: matching survives them (MATCH_MM), and each detection then
# replaces its track's position, so a track placed a little wrong is put right by the next frames. A frame
# shift keeps tracks where they were: taken for a move of a few mm (the clock mapping's wobble as round trips
# come and go: 8 mm for nine frames at 1.5 m/s in a run with no jump), it would keep a wrong track wrong.
SHIFT_MIN_MM = 12.0


@dataclass(slots=True)
class Detection:
    u_mm: float
    y_mm: float
    probs: np.ndarray | None  # class probabilities, None when the item was only partly in view
    view: int = 0
    ambiguous: bool = False  # the locator could not separate it from a touching item
    uncertainty_mm: float = 0.0  # how far u may be off (its frame was placed through a broken clock mapping)


@dataclass
class Track:
    id: int
    u_mm: float
    y_mm: float
    belt_mm: float  # belt travel (count / ticks_per_mm) when last seen
    first_capture_ts: float
    hits: int = 1
    misses: int = 0
    drift: float = 0.0  # du per mm of belt travel (negative for an item that slips)
    prob_sum: np.ndarray | None = None
    prob_frames: int = 0
    decided: bool = False
    last_capture_ts: float = 0.0
    views_seen: set[int] = field(default_factory=set)
    first_complete: tuple[float, float, float] | None = None  # (u, belt_mm, capture ts) of the first whole view
    drift_log: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=DRIFT_LOG))  # (ts, drift)
    view_sums: dict[int, tuple[np.ndarray, int]] = field(default_factory=dict)
    ambiguous: bool = False
    uncertainty_mm: float = 0.0  # how far u may be off: that of the detection it came from (0: trusted)
    decided_from_ts: float = 0.0  # capture time of the position the decision used
    requeue_gate: int | None = None  # its ejection was withdrawn (a clock jump); queue again once u is trusted
    decided_at_ts: float = 0.0  # capture time of the frame on which it was decided
    # the gate its decision named but did not eject for, because of where it or its neighbours seemed to be
    # (a neighbour in the pusher's sweep, a slip): looked at again if a clock jump shows those places were wrong
    held_gate: int | None = None
    requeue_held: bool = False  # requeue_gate came from a held-back decision, not a withdrawn ejection
    eject_gate: int | None = None  # the gate its ejection was queued for (its item leaves the belt there)
    aimed_from_ts: float = 0.0  # capture time of the position that ejection was aimed from

    def drift_before(self, ts: float) -> float:
        """The slip rate believed from views captured before `ts` (0 when none had a long enough baseline)."""
        return next((drift for at, drift in reversed(self.drift_log) if at < ts), 0.0)

    def predict(self, belt_mm: float) -> float:
        return self.u_mm + self.drift * (belt_mm - self.belt_mm)

    def add_probs(self, probs: np.ndarray, view: int) -> None:
        self.prob_sum = probs.astype(np.float64) if self.prob_sum is None else self.prob_sum + probs
        self.prob_frames += 1
        self.views_seen.add(view)
        vs, vn = self.view_sums.get(view, (np.zeros_like(self.prob_sum), 0))
        self.view_sums[view] = (vs + probs, vn + 1)

    def absorb(self, other: Track) -> None:
        """Take in the frames of another track that followed the same item (its position, if seen later)."""
        if other.prob_sum is not None:
            self.prob_sum = other.prob_sum.copy() if self.prob_sum is None else self.prob_sum + other.prob_sum
            self.prob_frames += other.prob_frames
            for view, (vs, vn) in other.view_sums.items():
                mine, n = self.view_sums.get(view, (np.zeros_like(vs), 0))
                self.view_sums[view] = (mine + vs, n + vn)
        self.views_seen |= other.views_seen
        self.hits += other.hits
        self.first_capture_ts = min(self.first_capture_ts, other.first_capture_ts)
        self.ambiguous = self.ambiguous or other.ambiguous
        if other.first_complete is not None and (self.first_complete is None
                                                 or other.first_complete[1] < self.first_complete[1]):
            self.first_complete = other.first_complete
        if self.requeue_gate is None:
            self.requeue_gate, self.requeue_held = other.requeue_gate, other.requeue_held
        if other.last_capture_ts > self.last_capture_ts:
            self.u_mm, self.y_mm, self.belt_mm = other.u_mm, other.y_mm, other.belt_mm
            self.last_capture_ts, self.misses = other.last_capture_ts, other.misses
            self.uncertainty_mm = other.uncertainty_mm

    def view_means(self) -> dict[int, np.ndarray]:
        return {v: s / n for v, (s, n) in self.view_sums.items()}

    def mean_probs(self) -> np.ndarray | None:
        return None if self.prob_sum is None else self.prob_sum / self.prob_frames


class Tracker:
    """Greedy nearest-neighbour association on belt coordinates; confirm after N hits, drop after M misses."""

    def __init__(self, confirm_frames: int = 2, drop_frames: int = 4, match_mm: float = MATCH_MM) -> None:
        self.confirm_frames = confirm_frames
        self.drop_frames = drop_frames
        self.match_mm = match_mm
        self.tracks: dict[int, Track] = {}
        self._ids = itertools.count(1)
        self.dropped_undecided = 0
        self.merged = 0  # tracks merged into another that followed the same item
        # Tracks dropped from view, latest last: their items ride on towards the gates, and an ejection queued
        # late (after a clock jump) must still keep its pusher's sweep clear of them.
        self.departed: deque[Track] = deque(maxlen=DEPARTED_KEPT)

    def frame_shift(self, detections: list[Detection], belt_mm: float) -> float:
        """How far (mm) this frame's belt travel is off, as its items show it: the common distance, over
        SHIFT_MIN_MM, that puts SHIFT_SUPPORT more of its whole views on their tracks than no shift or any
        smaller one does (0.0 when none does). Add it to the detections' u and take it off the belt travel."""
        whole = np.array([d.u_mm for d in detections if d.probs is not None and not d.ambiguous])
        if whole.size < SHIFT_SUPPORT or len(self.tracks) < SHIFT_SUPPORT:
            return 0.0
        pred = np.array([t.predict(belt_mm) for t in self.tracks.values()])
        resid = pred[None, :] - whole[:, None]  # the shift that would put detection i on track j
        base = int((np.abs(resid) <= SHIFT_TOL_MM).any(axis=1).sum())  # detections on a track as placed
        if base > whole.size - SHIFT_SUPPORT:
            return 0.0  # too many on their tracks already for a shift to do better (the usual frame: one test)
        shifts = resid[np.abs(resid) <= SHIFT_MAX_MM]
        # each candidate's support, all at once: detections that some track takes after that shift
        support = (np.abs(resid[None, :, :] - shifts[:, None, None]) <= SHIFT_TOL_MM).any(axis=2).sum(axis=1)
        large = np.abs(shifts) > SHIFT_MIN_MM
        if not large.any():
            return 0.0
        top = support[large].max()
        # to move the frame, a large shift must beat no shift and every small one (a frame a few mm off, evenly
        # spaced items: a whole pitch plus those few mm fits all but one, and must not win)
        if top < max(base, int(support[~large].max(initial=0))) + SHIFT_SUPPORT:
            return 0.0
        tied = shifts[large & (support == top)]
        best = tied[np.argmin(np.abs(tied))]  # of equals, the smallest
        return float(np.median(resid[np.abs(resid - best) <= SHIFT_TOL_MM]))

    def update(self, detections: list[Detection], belt_mm: float, capture_ts: float, views: int = 1) -> list[Track]:
        """Associate one frame's detections; returns the tracks that were dropped in this update."""
        pairs = sorted(
            (abs(t.predict(belt_mm) - d.u_mm), ti, di)
            for ti, t in self.tracks.items()
            for di, d in enumerate(detections)
        )
        used_t: set[int] = set()
        used_d: set[int] = set()
        for dist, ti, di in pairs:
            if dist > self.match_mm or ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            self._hit(self.tracks[ti], detections[di], belt_mm, capture_ts)
        for di, d in enumerate(detections):
            if di not in used_d:
                t = Track(next(self._ids), d.u_mm, d.y_mm, belt_mm, capture_ts, last_capture_ts=capture_ts,
                          ambiguous=d.ambiguous, uncertainty_mm=d.uncertainty_mm)
                if d.probs is not None:
                    if d.uncertainty_mm == 0.0:
                        t.first_complete = (d.u_mm, belt_mm, capture_ts)
                    if not d.ambiguous:
                        t.add_probs(d.probs, d.view)
                self.tracks[t.id] = t
                used_t.add(t.id)
        dropped = []
        # With several views the frames interleave: a track is missed only by frames of the views that saw it.
        for t in list(self.tracks.values()):
            if t.id not in used_t:
                t.misses += 1
                if t.misses >= self.drop_frames * max(1, views):
                    del self.tracks[t.id]
                    dropped.append(t)
                    self.departed.append(t)
                    if not t.decided:
                        self.dropped_undecided += 1
        return dropped

    def _hit(self, t: Track, d: Detection, belt_mm: float, capture_ts: float) -> None:
        # a whole view's centre is unbiased (an edge sliver's is not); an uncertain one would fake a slip
        if d.probs is not None and d.uncertainty_mm == 0.0:
            if t.first_complete is None:
                t.first_complete = (d.u_mm, belt_mm, capture_ts)
            else:
                u0, b0, _ts = t.first_complete
                if belt_mm - b0 >= DRIFT_BASELINE_MM:
                    rate = (d.u_mm - u0) / (belt_mm - b0)  # a long baseline keeps pixel noise out of the rate
                    t.drift = float(np.clip(rate, -0.9, 0.0)) if rate < -DRIFT_DEADBAND else 0.0
                    t.drift_log.append((capture_ts, t.drift))
        t.u_mm, t.y_mm, t.belt_mm = d.u_mm, d.y_mm, belt_mm
        t.uncertainty_mm = d.uncertainty_mm
        t.hits += 1
        t.misses = 0
        t.last_capture_ts = capture_ts
        t.ambiguous = t.ambiguous or d.ambiguous
        if d.probs is not None and not d.ambiguous:
            t.add_probs(d.probs, d.view)

    def merge_coincident(self, belt_mm: float) -> int:
        """Merge trusted tracks that stand on one item's spot (see MERGE_MM) into the older one, or into the one
        already decided; two decided tracks are left alone (each has its own ejection). Returns how many went."""
        merged = 0
        # a position that may be off by a clock jump's travel proves nothing; the rest, along the belt (every
        # frame: neighbours in u only, so it stays cheap)
        along = sorted(((t.predict(belt_mm), t) for t in self.tracks.values() if not t.uncertainty_mm),
                       key=lambda pt: pt[0])
        for i, (ua, a) in enumerate(along):
            for ub, b in along[i + 1:]:
                if ub - ua >= MERGE_MM:
                    break
                if a.id not in self.tracks or b.id not in self.tracks or (a.decided and b.decided):
                    continue
                if abs(a.y_mm - b.y_mm) < MERGE_MM:
                    older, newer = (a, b) if a.id < b.id else (b, a)
                    keep, gone = (newer, older) if newer.decided else (older, newer)
                    keep.absorb(gone)
                    del self.tracks[gone.id]
                    merged += 1
        self.merged += merged
        return merged

    def forget_departed_twins(self, belt_mm: float) -> None:
        """A departed track on another track's spot followed the same item (split by a clock jump before it left
        the view): forget it, or it would stand in its own item's pusher sweep."""
        trusted = [t for t in (*self.tracks.values(), *self.departed) if not t.uncertainty_mm]
        for d in list(self.departed):
            if not d.uncertainty_mm and any(
                    o.id != d.id and abs(d.predict(belt_mm) - o.predict(belt_mm)) < MERGE_MM
                    and abs(d.y_mm - o.y_mm) < MERGE_MM and (o.decided or not d.decided) for o in trusted):
                self.departed.remove(d)
                trusted.remove(d)

    def confirmed(self, t: Track) -> bool:
        return t.hits >= self.confirm_frames
