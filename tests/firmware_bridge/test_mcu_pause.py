"""A paused MCU (what a simulator does when its machine does not run it): the belt stands still, the MCU's clock
falls behind the host's, and the link reports the jump with the window in which host times were mapped wrong."""

from __future__ import annotations

import time
from typing import Any

import pytest
from bridge_support import wait_for

from firmware_bridge.link import BridgeLink
from firmware_bridge.mcu_sim import McuSimulator

PAUSE_S = 0.08


def test_a_paused_mcu_is_reported_as_a_clock_jump_with_its_window(sim: Any, link: BridgeLink) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    link.add_event_listener(lambda kind, detail: events.append((kind, detail)))
    wait_for(lambda: link.counters["heartbeats"] >= 3)
    jumps_before = link.counters["clock_jumps"]  # a starved simulator may pause by itself too
    events.clear()
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


def test_pause_is_refused_outside_its_range() -> None:
    with pytest.raises(ValueError, match="seconds"):
        McuSimulator().pause(0)
