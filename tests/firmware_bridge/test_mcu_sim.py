"""The Python MCU simulator when its thread is held up (a loaded or frozen host): it must replay what a real
MCU did meanwhile, event by event in time order, not collapse it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from bridge_support import Gates, wait_for
from conftest import RETRIES, SPEED

from firmware_bridge.link import BridgeLink, QueueResult
from firmware_bridge.mcu_sim import McuSimulator

PULSE_MS = 30
PULSE_TICKS = SPEED * PULSE_MS / 1000


@contextmanager
def linked_sim(on_gate: Gates | None = None) -> Iterator[tuple[McuSimulator, BridgeLink]]:
    """A Python MCU on a moving belt and a link to it that has heartbeated a few times."""
    sim = McuSimulator(on_gate=on_gate)
    sim.start()
    sim.set_speed(SPEED)
    try:
        with BridgeLink(sim.port, retries=RETRIES) as link:
            wait_for(lambda: link.counters["heartbeats"] > 2)
            yield sim, link
    finally:
        sim.stop()


def test_pulses_stay_apart_when_the_simulator_thread_was_held_up() -> None:
    gates = Gates()
    with linked_sim(gates) as (sim, link):
        base = int(link.encoder_count_at(time.monotonic()))
        # two ejections on one gate, 0.1 s and 0.3 s ahead: the pulse of the first ends long before the second
        first, second = base + int(0.1 * SPEED), base + int(0.3 * SPEED)
        assert link.queue_eject(1, 2, first, PULSE_MS) == QueueResult.QUEUED
        assert link.queue_eject(2, 2, second, PULSE_MS) == QueueResult.QUEUED
        with sim._lock:  # the simulator's thread cannot run: both fires and both pulse ends fall due
            time.sleep(0.45)  # (under the 0.5 s fail-safe, counted from the last command)
        wait_for(lambda: sim.mcu_counters["fired"] == 2 and not gates.energised())
    ev = [(on, c) for g, on, c in gates.events if g == 2]
    # the MCU's counts are physical ones until a reset, so the targets compare directly
    assert [on for on, _ in ev] == [True, False, True, False], ev
    (_, rise1), (_, fall1), (_, rise2), (_, fall2) = ev
    assert (rise1, rise2) == (first, second)
    assert abs(fall1 - (first + PULSE_TICKS)) <= 1 and abs(fall2 - (second + PULSE_TICKS)) <= 1


def test_a_held_up_simulator_does_not_take_the_hosts_waiting_frames_for_silence() -> None:
    with linked_sim() as (sim, link):
        with sim._lock:  # the simulator's thread stalls 0.8 s; the host's heartbeats queue up in the pty
            time.sleep(0.8)
        wait_for(lambda: link.counters["heartbeats"] > 12)
        assert sim.mcu_counters["failsafes"] == 0 and link.counters["failsafes"] == 0
        assert link.status()["state"] == "LINKED"


def test_a_silent_host_still_trips_the_fail_safe() -> None:
    with linked_sim() as (sim, link):
        with link._write_lock:  # nothing reaches the MCU for 0.8 s
            time.sleep(0.8)
        wait_for(lambda: link.counters["failsafes"] == 1)
        assert sim.mcu_counters["failsafes"] == 1
