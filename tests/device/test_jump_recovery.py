"""Clock-jump recovery withdraws an ejection by where it was aimed from, not where its item was decided."""

from __future__ import annotations

from types import SimpleNamespace

from device.sorting.clock_guard import JumpWindow
from device.sorting.jump_recovery import JumpRecovery
from device.sorting.scheduling import Pending
from device.sorting.tracking import Track


class _Scheduler:
    def __init__(self) -> None:
        self.pending: dict[int, Pending] = {}

    def withdraw(self, item_id: int) -> Pending | None:
        return self.pending.pop(item_id, None)


def _decided_track(decided_from: float, aimed_from: float, gate: int = 2) -> Track:
    return Track(id=7, u_mm=-100.0, y_mm=0.0, belt_mm=0.0, first_capture_ts=0.0, decided=True,
                 last_capture_ts=aimed_from, decided_from_ts=decided_from, aimed_from_ts=aimed_from, eject_gate=gate)


def test_an_ejection_queued_again_is_withdrawn_when_the_next_jump_covers_its_aim():
    # decided at t=1.0 from a frame inside jump A's window; queued again from a frame at t=2.05 that the next
    # jump's window (2.0-2.1) covers: that second aim is as wrong as the first was
    scheduler = _Scheduler()
    recovery = JumpRecovery(SimpleNamespace(scheduler=scheduler))  # type: ignore[arg-type]
    track = _decided_track(decided_from=1.0, aimed_from=2.05)
    scheduler.pending[7] = Pending(7, 2, 5000, 2.06, "requeued")
    assert recovery._withdraw(track, JumpWindow(2.0, 2.1, 0.05)) == 2
    assert track.eject_gate is None and not scheduler.pending


def test_a_jump_that_covers_only_the_old_decision_leaves_a_trusted_aim_alone():
    scheduler = _Scheduler()
    recovery = JumpRecovery(SimpleNamespace(scheduler=scheduler))  # type: ignore[arg-type]
    track = _decided_track(decided_from=1.0, aimed_from=2.5)  # queued again from a trusted frame
    scheduler.pending[7] = Pending(7, 2, 5000, 2.6, "requeued")
    assert recovery._withdraw(track, JumpWindow(0.95, 1.05, 0.05)) is None
    assert track.eject_gate == 2 and 7 in scheduler.pending
