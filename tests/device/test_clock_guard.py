"""The sorter's clock guard: jump windows, and bursts of jumps in which no position is trusted."""

from __future__ import annotations

from device.sorting.clock_guard import BURST_GAP_S, HOLD_S, ClockGuard


def test_isolated_jumps_are_no_burst_and_two_close_ones_are() -> None:
    g = ClockGuard()
    g.report(10.0, 10.15, 0.08, located=True)
    (w,) = g.take(500.0)
    assert w.error_mm == 40.0 and w.located and not g.unstable(10.2)
    g.report(11.5, 11.6, 0.05, located=True)  # 1.45 s later: isolated too
    g.take(500.0)
    assert g.bursts == 0 and not g.unstable(11.7)
    # a third within BURST_GAP_S of the second, not located: a burst that began with the second's window
    g.report(11.9, 12.0, 0.06)
    g.take(500.0)
    assert g.bursts == 1 and g.burst_since == 11.5
    assert g.unstable(12.0 + HOLD_S - 0.01) and not g.unstable(12.0 + HOLD_S + 0.01)
    # another close one extends the same burst
    g.report(12.5, 12.0 + BURST_GAP_S - 0.1, 0.04)
    g.take(500.0)
    assert g.bursts == 1 and g.unstable(12.9 + HOLD_S - 0.01)


def test_located_jumps_close_together_are_no_burst() -> None:
    """The link located each (each pause of each: firmware_bridge.clock.locate_pauses): every host time maps
    right again, so the line sorts on; what the frames before each locate placed wrong, the tracker and the
    re-placement put right."""
    g = ClockGuard()
    for k in range(4):
        g.report(10.0 + 0.3 * k, 10.1 + 0.3 * k, 0.05, located=True)
        g.take(500.0)
    assert g.bursts == 0 and not g.unstable(11.0)
    assert g.uncertainty_mm(10.05) == 0.0  # and no position in their windows is held uncertain


def test_a_jump_that_moved_nothing_is_ignored() -> None:
    g = ClockGuard()
    g.report(1.0, 1.1, 0.05)
    assert g.take(0.0) == [] and g.uncertainty_mm(1.05) == 0.0
