"""The host <-> MCU clock mapping keeps a good old round trip over fresh bad ones, and restarts on a jump."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge.clock import MAX_SKEW, ClockMapping, ClockPause, locate_pauses

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


def encoder_stream(
    stops: list[tuple[float, float]], until_mcu: float, delay=lambda k: 0.0005
) -> tuple[list[float], list[float]]:
    """ENCODER samples every 10 ms of MCU time from MCU time 0; the MCU's clock stands still for each
    (mcu_s, seconds) in `stops`. Returns MCU times and host receive times (offset TRUE_OFFSET, plus delay(k))."""
    mcu, rx = [], []
    m, k = 0.0, 0
    while m < until_mcu:
        paused = sum(s for at, s in stops if at <= m)
        mcu.append(m)
        rx.append(m + TRUE_OFFSET + paused + delay(k))
        m, k = round(m + 0.01, 6), k + 1
    return mcu, rx


def test_one_pause_is_located_between_the_samples_around_it() -> None:
    mcu, rx = encoder_stream([(1.005, 0.06)], 1.3)
    [pause] = locate_pauses(mcu, rx, TRUE_OFFSET, TRUE_OFFSET + 0.06, 0.002)
    assert pause.mcu_s == pytest.approx(1.005, abs=0.005)
    assert (pause.offset_before, pause.offset_after) == (TRUE_OFFSET, TRUE_OFFSET + 0.06)


def test_two_pauses_before_one_heartbeat_are_each_located() -> None:
    """A starved simulator paused twice (40 ms, then 30 ms) before a heartbeat showed the 70 ms: the frames
    between the two stops lag by the first pause only. One pause at the second stop (what the link located
    before) mapped those frames 40 ms off: 20 mm at 0.5 m/s."""
    mcu, rx = encoder_stream([(1.005, 0.04), (1.065, 0.03)], 1.3)
    first, second = locate_pauses(mcu, rx, TRUE_OFFSET, TRUE_OFFSET + 0.07, 0.002)
    assert first.mcu_s == pytest.approx(1.005, abs=0.005) and second.mcu_s == pytest.approx(1.065, abs=0.005)
    assert first.offset_after == pytest.approx(TRUE_OFFSET + 0.04, abs=0.001)
    assert (second.offset_before, second.offset_after) == (first.offset_after, TRUE_OFFSET + 0.07)
    clock = ClockMapping()
    round_trip(clock, 0.0, 0.001, 0.5, TRUE_OFFSET)
    round_trip(clock, 1.3, 0.001, 0.5, TRUE_OFFSET + 0.07)
    clock.pauses.extend([first, second])
    between = 1.04  # MCU time between the stops, seen at host time 1.04 + 100.04
    assert clock.to_mcu(between + TRUE_OFFSET + 0.04) == pytest.approx(between, abs=0.002)


def test_samples_the_host_read_late_are_not_a_pause() -> None:
    """The reader held up for 30 ms, twice, before the pause: the samples it then read in a bunch lag more,
    but prompt ones follow each time, so the pause stays one, where the MCU stopped."""
    late = {k: 0.03 - (k % 3) * 0.01 for k in (50, 51, 52, 80, 81, 82)}
    mcu, rx = encoder_stream([(1.005, 0.05)], 1.3, delay=lambda k: 0.0005 + late.get(k, 0.0))
    [pause] = locate_pauses(mcu, rx, TRUE_OFFSET, TRUE_OFFSET + 0.05, 0.002)
    assert pause.mcu_s == pytest.approx(1.005, abs=0.005)


def test_with_random_delays_every_host_time_maps_within_the_delays() -> None:
    """Two pauses in one jump, every sample delayed at random (2 ms on average, some 10 ms): each host time
    outside the pauses maps to the MCU time it had within 5 ms. (A sample delayed more than the margin just
    before a stop can add a small step of its own delay: the mapping error stays that delay.) The old
    one-pause locate mapped the 100 ms between the stops 30 ms off."""
    rng = np.random.default_rng(0)
    delays = rng.exponential(0.002, 200)
    stops = [(0.805, 0.03), (0.905, 0.05)]
    mcu, rx = encoder_stream(stops, 1.2, delay=lambda k: float(delays[k]))
    clock = ClockMapping()
    round_trip(clock, 0.0, 0.001, 0.5, TRUE_OFFSET)
    round_trip(clock, 1.3, 0.001, 0.5, TRUE_OFFSET + 0.08)
    clock.pauses.extend(locate_pauses(mcu, rx, TRUE_OFFSET, TRUE_OFFSET + 0.08, 0.004))
    for m in np.arange(0.5, 1.2, 0.0025):
        if any(at < m < at + 0.001 for at, _ in stops):
            continue
        host = m + TRUE_OFFSET + sum(s for at, s in stops if at <= m)
        assert clock.to_mcu(host) == pytest.approx(m, abs=0.005), m


def test_a_stream_that_has_not_caught_up_puts_the_rest_of_the_jump_after_its_newest_sample() -> None:
    """The heartbeat shows 80 ms; the newest ENCODER sample lags by 30: the other 50 came after it."""
    mcu, rx = encoder_stream([(1.005, 0.03)], 1.3)
    first, rest = locate_pauses(mcu, rx, TRUE_OFFSET, TRUE_OFFSET + 0.08, 0.002)
    assert first.mcu_s == pytest.approx(1.005, abs=0.005) and first.offset_after == pytest.approx(TRUE_OFFSET + 0.03)
    assert rest.mcu_s == mcu[-1] and rest.offset_after == TRUE_OFFSET + 0.08


def test_no_sample_from_before_the_pause_locates_nothing() -> None:
    mcu, rx = encoder_stream([], 0.3)
    assert locate_pauses(mcu, [r + 0.05 for r in rx], TRUE_OFFSET, TRUE_OFFSET + 0.05, 0.002) == []
