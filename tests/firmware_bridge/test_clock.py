"""The host <-> MCU clock mapping keeps a good old round trip over fresh bad ones, and restarts on a jump."""

from __future__ import annotations

import pytest

from firmware_bridge.clock import MAX_SKEW, ClockMapping, ClockPause

TRUE_OFFSET = 100.0  # host - MCU seconds


def round_trip(clock: ClockMapping, t_send: float, rtt: float, read_at: float, offset: float = TRUE_OFFSET) -> float:
    """A heartbeat sent at t_send, answered after rtt; the MCU read its clock `read_at` of the way through."""
    return clock.add(t_send, t_send + rtt, t_send + rtt * read_at - offset, 10, 10)


def test_a_starved_host_does_not_move_the_offset_by_its_long_round_trips() -> None:
    clock = ClockMapping()
    assert round_trip(clock, 0.0, 0.001, 0.5) == pytest.approx(TRUE_OFFSET, abs=1e-6)
    # three seconds of a starved host: every round trip 150 ms, the MCU answering at the end of each, so each
    # sample alone would put the offset 74 ms early
    t = 0.5
    while t < 3.5:
        off = round_trip(clock, t, 0.150, 0.99)
        t += 0.1
    assert clock.jumps == 0
    assert abs(off - TRUE_OFFSET) <= 0.0005 + 3.5 * MAX_SKEW  # the good sample's bound, not 74 ms
    # the host recovers: a fresh short round trip is believed at once
    assert round_trip(clock, 3.6, 0.001, 0.5, TRUE_OFFSET + 0.002) == pytest.approx(TRUE_OFFSET + 0.002, abs=1e-6)


def test_a_clock_jump_restarts_the_mapping() -> None:
    clock = ClockMapping()
    for i in range(5):
        round_trip(clock, i * 0.1, 0.001, 0.5)
    # the MCU's clock jumped back by a second (a reboot the host has not seen yet): no old sample can agree
    assert round_trip(clock, 0.6, 0.002, 0.5, TRUE_OFFSET + 1.0) == pytest.approx(TRUE_OFFSET + 1.0, abs=1e-6)
    assert clock.jumps == 1 and len(clock.samples) == 1
    # the jump happened after the MCU answered the last agreeing round trip (sent at 0.4): host times mapped
    # from then until this answer may be off by the shift
    assert clock.last_jump is not None
    assert clock.last_jump.since == pytest.approx(0.4)
    assert clock.last_jump.detected == pytest.approx(0.602)
    assert clock.last_jump.shift_s == pytest.approx(1.0, abs=1e-6)


def test_a_jumps_window_starts_at_the_last_round_trip_that_only_the_old_offset_explains() -> None:
    clock = ClockMapping()
    for i in range(5):
        round_trip(clock, i * 0.1, 0.001, 0.5)  # the last good one sent at 0.4
    # the MCU pauses for 80 ms at 0.45 (its clock then lags by 0.08): a heartbeat sent at 0.5 waits out the
    # pause, on a starved host, and comes back after 120 ms; its long round trip fits both offsets, so it is
    # kept and reveals nothing
    round_trip(clock, 0.5, 0.120, 0.5, TRUE_OFFSET + 0.08)
    assert clock.jumps == 0
    # the next, short one cannot agree with the old offset: the jump is found, and it may have happened any time
    # after the round trip sent at 0.4, not only after the long one sent at 0.5
    round_trip(clock, 0.7, 0.001, 0.5, TRUE_OFFSET + 0.08)
    assert clock.jumps == 1 and clock.last_jump is not None
    assert clock.last_jump.since == pytest.approx(0.4)
    assert clock.last_jump.shift_s == pytest.approx(0.08, abs=1e-6)


def test_a_located_pause_maps_host_times_before_during_and_after_it() -> None:
    """The MCU's clock stood still at MCU time 10 s for 0.1 s of host time: host times before keep the old
    offset, times in the pause read the frozen clock, later ones the new offset; to_host inverts it."""
    clock = ClockMapping()
    round_trip(clock, 0.0, 0.001, 0.5, TRUE_OFFSET)
    round_trip(clock, 0.5, 0.001, 0.5, TRUE_OFFSET + 0.1)  # the jump: 0.1 s behind
    clock.pauses.append(ClockPause(10.0, TRUE_OFFSET, TRUE_OFFSET + 0.1))
    start = 10.0 + TRUE_OFFSET  # host time the MCU stopped
    assert clock.to_mcu(start - 0.05) == pytest.approx(9.95)
    assert clock.to_mcu(start + 0.05) == pytest.approx(10.0)
    assert clock.to_mcu(start + 0.15) == pytest.approx(10.05)
    assert clock.to_host(9.95) == pytest.approx(start - 0.05)
    assert clock.to_host(10.05) == pytest.approx(start + 0.15)
