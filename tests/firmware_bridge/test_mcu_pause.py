"""A paused MCU (what a simulator does when its machine does not run it): the belt stands still, the MCU's clock
falls behind the host's, and the link reports the jump with the window in which host times were mapped wrong,
locates the pause, and from then on maps host times before it with the offset that held then."""

from __future__ import annotations

import time
from typing import Any

import pytest
from bridge_support import wait_for
from conftest import SPEED

from firmware_bridge.link import BridgeLink
from firmware_bridge.mcu_sim import McuSimulator

PAUSE_S = 0.08


def test_a_paused_mcu_is_reported_as_a_clock_jump_with_its_window(sim: Any, link: BridgeLink) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    link.add_event_listener(lambda kind, detail: events.append((kind, detail)))
    wait_for(lambda: link.counters["heartbeats"] >= 3)
    jumps_before = link.counters["clock_jumps"]  # a starved simulator may pause by itself too
    events.clear()
    t_before = time.monotonic()
    count_before = sim.count()  # the belt's count at host time t_before (read from the simulator itself)
    t_pause = time.monotonic()
    sim.pause(PAUSE_S)
    if isinstance(sim, McuSimulator):  # the simavr harness takes the command asynchronously
        c0 = sim.count()
        time.sleep(PAUSE_S / 2)
        assert sim.count() == c0  # the belt stands still with the MCU
    wait_for(lambda: link.counters["clock_jumps"] > jumps_before and any(k == "clock_jump" for k, _ in events))
    jumps = [d for kind, d in events if kind == "clock_jump" and d["since"] <= t_pause <= d["detected"]]
    assert jumps, f"no clock jump reported around the pause: {events}"
    # the late ENCODER samples after the pause asked for a heartbeat at once, not at the next period
    assert link.counters["clock_probes"] >= 1
    # the MCU clock fell behind by the pause (host - MCU offset grew), within the round trips' uncertainty
    assert PAUSE_S - 0.03 <= jumps[0]["shift_s"] <= 1.0
    # the link found when the MCU stopped (to within half the 10 ms stream period), so a time just before the
    # pause still maps to about the count it had then (loosely: 40 ticks = 8 ms at this speed; not timing)
    assert jumps[0]["located"]
    assert abs(link.encoder_count_at(t_before) - count_before) < 0.008 * SPEED


def test_pause_is_refused_outside_its_range() -> None:
    with pytest.raises(ValueError, match="seconds"):
        McuSimulator().pause(0)
