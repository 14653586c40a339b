"""What the sorter does when the MCU's clock jumps against the host's (a simulator or MCU that stalled).

Positions come from the encoder count at each frame's capture time, through the link's mapping of the MCU's
clock to the host's. When the MCU's clock jumps (it paused; the host ran on), the frames captured between the
jump and its detection were placed through the old mapping: their items stand up to `JumpWindow.error_mm` off.
`firmware_bridge.clock` finds the jump; `clock_guard` keeps its window; this module puts the tracks right:

- a located jump (the link knows when it happened): tracks seen in the window are re-placed where those frames
  really saw them, split tracks merged, ejections aimed from the wrong positions withdrawn and queued again,
  decisions held back on those positions (a "neighbour" in the sweep, a "slip") looked at again, and the
  report told where decided items really were;
- a jump not located: the tracks it touched become uncertain and their ejections are withdrawn, to be queued
  again once a trusted frame places them;
- a burst of jumps: the line stands down (ejections aimed since it began withdrawn, new ones sent to the
  default bin) until the clock settles.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from device.sorting.clock_guard import JumpWindow
from device.sorting.tracking import MAX_SLIP, Track

if TYPE_CHECKING:
    from device.sorting.sorter import Sorter

log = logging.getLogger(__name__)


class JumpRecovery:
    """The sorter's clock-jump recovery (module docstring); it works on the sorter's tracks and scheduler."""

    def __init__(self, sorter: Sorter) -> None:
        self.sorter = sorter

    def after_clock_jumps(self) -> None:
        """Re-place the tracks a located clock jump had placed wrong, and queue their ejections again; for one
        not located, withdraw what was decided from positions in its window and mark the tracks uncertain.
        Tracks that have left the camera's view since count too: on a starved host a jump is found late, when
        an item decided in its window may already be past the camera, its ejection still aimed wrong."""
        sorter, guard, tracker = self.sorter, self.sorter.clock_guard, self.sorter.tracker
        if not guard.pending():
            return
        mm_per_s = sorter.ticks_per_s() / sorter.tpm
        bursts = guard.bursts
        windows = guard.take(mm_per_s)
        if guard.bursts != bursts or guard.unstable(time.monotonic()):
            self._stand_down(guard.burst_since)
        for w in windows:
            every = [*tracker.tracks.values(), *tracker.departed]
            hit = [t for t in every if w.covers(t.last_capture_ts)]
            log.warning("MCU clock jumped %+.1f ms: %d tracks placed up to %.0f mm off, %s", w.shift_s * 1e3,
                        len(hit), w.error_mm, "re-placed" if w.located else "now uncertain")
            # decisions held back on positions seen in the window (a neighbour in the sweep may have been this
            # item's own track, split by the jump) are looked at again, as the withdrawn ones are
            held = [t for t in every if t.held_gate is not None and w.covers(t.decided_at_ts)]
            if w.located:
                again = [(t, gate, False) for t in hit if (gate := self._replace(t, w)) is not None]
                again += [(t, self._release(t), True) for t in held]
                # a track split by the jump now stands on its item's other track: one item, one track, before
                # the pusher's sweep is checked for neighbours
                belt_now = sorter.belt_mm_at(time.monotonic())
                tracker.merge_coincident(belt_now)
                tracker.forget_departed_twins(belt_now)
                for t, gate, was_held in again:
                    self.requeue(t, gate, was_held)
                self._correct_decisions(w, every)
                continue
            for t in hit:
                t.uncertainty_mm = max(t.uncertainty_mm, w.error_mm)
                gate = self._withdraw(t, w)
                if gate is not None:
                    t.requeue_gate = gate  # queued again once a trusted frame places it (never, once departed)
            for t in held:
                t.requeue_gate, t.requeue_held = self._release(t), True

    def _stand_down(self, since: float) -> None:
        """A burst of clock jumps: withdraw every ejection aimed from a position seen since it began (none is
        queued again while it lasts: their items go to the default bin)."""
        tracker, scheduler = self.sorter.tracker, self.sorter.scheduler
        for t in [*tracker.tracks.values(), *tracker.departed]:
            if t.eject_gate is not None and t.aimed_from_ts >= since and scheduler.withdraw(t.id) is not None:
                t.eject_gate = None
                scheduler.stats.stood_down += 1  # also counted in withdrawn
            if t.decided_at_ts >= since:
                t.held_gate = t.requeue_gate = None
        log.warning("the MCU's clock is jumping again and again: ejections aimed since then withdrawn, items "
                    "to the default bin until it settles")

    def _correct_decisions(self, w: JumpWindow, tracks: list[Track]) -> None:
        """Tell the correction listeners where each track decided on a frame in the window really was then."""
        for t in tracks:
            if t.decided and w.covers(t.decided_at_ts):
                belt = self.sorter.belt_mm_at(t.decided_at_ts)
                for listener in self.sorter.corrections:
                    try:
                        listener(t.id, t.predict(belt) + belt)
                    except Exception:  # reporting must never stop the sort
                        log.exception("correction listener failed for track %s", t.id)

    @staticmethod
    def _release(t: Track) -> int:
        """Take a held-back decision's gate off its track, to be queued after all."""
        gate, t.held_gate = t.held_gate, None
        assert gate is not None
        return gate

    def _withdraw(self, t: Track, w: JumpWindow) -> int | None:
        """Cancel the ejection of a track aimed from a position in the jump's window; its gate, if cancelled.
        The aim, not the decision: an ejection queued again after one jump may be aimed from inside the next."""
        if not (t.decided and w.covers(t.aimed_from_ts)):
            return None
        withdrawn = self.sorter.scheduler.withdraw(t.id)
        if withdrawn is None:
            return None
        t.eject_gate = None
        return withdrawn.gate

    def _replace(self, t: Track, w: JumpWindow) -> int | None:
        """The link now maps the track's last capture time right: move it to where that frame really saw it
        (u = x - belt, so u shifts by the change in belt travel) and cancel its ejection if it was decided from
        the wrong position; returns the cancelled ejection's gate, to be queued again from the new position."""
        belt = self.sorter.belt_mm_at(t.last_capture_ts)
        t.u_mm += t.belt_mm - belt
        t.belt_mm = belt
        if t.first_complete is not None and w.covers(t.first_complete[2]):  # the slip baseline, likewise
            u0, b0, ts0 = t.first_complete
            b0_right = self.sorter.belt_mm_at(ts0)
            t.first_complete = (u0 + b0 - b0_right, b0_right, ts0)
        # a slip rate measured on a view placed wrong is the jump's travel, not slip: back to the one before
        t.drift = t.drift_before(w.since)
        return self._withdraw(t, w)

    def requeue(self, track: Track, gate: int, held: bool = False) -> None:
        """Queue a withdrawn or (`held`) held-back ejection again at the item's trusted position, aimed from the
        frame that last placed the track (or leave it to the default bin)."""
        track.requeue_gate, track.requeue_held = None, False
        sorter = self.sorter
        if sorter.clock_guard.unstable(time.monotonic()):
            log.warning("item %s: not queued again, the MCU's clock is jumping", track.id)
            return
        speed = sorter.ticks_per_s()
        if track.drift < -MAX_SLIP:
            log.warning("item %s: not queued again, it slips", track.id)
            return
        if sorter.neighbour_in_sweep(track, gate, speed):
            log.warning("item %s: not queued again, a neighbour is in the pusher's sweep", track.id)
            return
        target = sorter.gate_distance(gate) - sorter.belt_at_gate(track, gate)
        how = "released" if held else "requeued"
        if sorter.scheduler.schedule(track.id, target, gate, speed, epoch=sorter.mcu_epoch, how=how) == "queued":
            track.eject_gate, track.aimed_from_ts = gate, track.last_capture_ts
            if held:
                sorter.scheduler.stats.released += 1
            else:
                sorter.scheduler.stats.requeued += 1
